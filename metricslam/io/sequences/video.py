"""Video files read with OpenCV. A video carries no calibration: it must be passed explicitly."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from metricslam.errors import InputError
from metricslam.io.sequences.recorded import SequenceData, image_size

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
FALLBACK_FPS = 30.0
# Decoding forward is cheaper than a seek (which decodes from the previous key frame) for short jumps.
MAX_FORWARD_SKIP = 32


class VideoFrames:
    """Frames of a video by index; sequential access decodes each frame once, random access seeks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cap: cv2.VideoCapture | None = None
        self._next = 0
        cap = self._open()
        self.fps = float(cap.get(cv2.CAP_PROP_FPS))
        self._count = self._frame_count(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        if self._count == 0:
            raise InputError(f"{path}: the video has no frames OpenCV can decode; re-encode it (e.g. H.264 .mp4)")

    def __len__(self) -> int:
        return self._count

    def _open(self) -> cv2.VideoCapture:
        if self._cap is None:
            cap = cv2.VideoCapture(str(self.path))
            if not cap.isOpened():
                raise InputError(
                    f"{self.path}: OpenCV cannot open this video; check the file or re-encode it (e.g. H.264 .mp4)"
                )
            self._cap, self._next = cap, 0
        return self._cap

    def _frame_count(self, header: int) -> int:
        """The header's frame count when its last frame decodes, else the count found by reading through."""
        if header > 0:
            self._seek(header - 1)
            if self._open().grab():
                self._seek(0)
                return header
        self._seek(0)
        count = 0
        while self._open().grab():
            count += 1
        self._seek(0)
        return count

    def _seek(self, i: int) -> None:
        self._open().set(cv2.CAP_PROP_POS_FRAMES, i)
        self._next = i

    def read(self, i: int) -> np.ndarray:
        cap = self._open()
        if not 0 <= i - self._next <= MAX_FORWARD_SKIP:
            self._seek(i)
        while self._next < i and cap.grab():
            self._next += 1
        ok, bgr = cap.read()
        if not ok or self._next != i:
            self._cap = None  # the decoder state is unknown now: reopen on the next read
            raise InputError(f"{self.path}: cannot decode frame {i} of {self._count}; the file may be truncated")
        self._next = i + 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def label(self, i: int) -> str:
        return f"{self.path} frame {i}"

    def stem(self, i: int) -> str:
        return f"{i:06d}"

    def __getstate__(self) -> dict:
        # An open capture cannot be pickled (e.g. into DataLoader workers); it is reopened on first use.
        return {**self.__dict__, "_cap": None, "_next": 0}


def read_video(path: Path) -> SequenceData:
    source = VideoFrames(path)
    fps = source.fps
    if not 0 < fps <= 1000:
        warnings.warn(f"{path}: the video reports {fps} frames/s; timestamps assume {FALLBACK_FPS}", stacklevel=2)
        fps = FALLBACK_FPS
    return SequenceData(
        name=path.stem, root=path, source=source, size=image_size(source),
        timestamps=np.arange(len(source)) / fps,
    )
