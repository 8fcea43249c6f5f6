"""Sequence readers: KITTI odometry, TUM RGB-D, EuRoC ASL, a generic image folder and video files.

``open_sequence(path, ...)`` is the entry point; every reader yields ``Frame`` objects through ``Sequence``.
"""
from metricslam.io.sequences.base import Sequence
from metricslam.io.sequences.layout import detect_layout, open_sequence
from metricslam.io.sequences.recorded import RecordedSequence, SequenceData

__all__ = ["RecordedSequence", "Sequence", "SequenceData", "detect_layout", "open_sequence"]
