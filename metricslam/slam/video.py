"""Growable keyframe store: poses, grid inverse depths, priors and images of every keyframe.

Numeric state lives in tensors with doubling capacity (amortised O(1) append, no fixed buffer to overflow).
Images stay as numpy arrays because optical flow runs in OpenCV. Keyframes carry a stable ``uid`` so cached
correspondences survive the removal of other keyframes.
"""
from __future__ import annotations

import numpy as np
import torch


class KeyframeStore:
    """Keyframe state on ``device``; poses are world-to-camera (T_cw) float64, inverse depths float32 (1/m)."""

    # Full-capacity buffers, set by _alloc; the properties below give their live part.
    _uid: torch.Tensor
    _frame_index: torch.Tensor
    _timestamp: torch.Tensor
    _poses: torch.Tensor
    _invdepth: torch.Tensor
    _prior_invdepth: torch.Tensor
    _prior_conf: torch.Tensor
    _conf: torch.Tensor

    def __init__(self, grid_hw: tuple[int, int], device: torch.device, capacity: int = 64):
        self.h, self.w = grid_hw
        self.device = device
        self.count = 0
        self._next_uid = 0
        self._alloc(capacity)
        self.grey: list[np.ndarray] = []
        self.rgb: list[np.ndarray] = []
        self.prior_depth_full: list[np.ndarray | None] = []

    def _alloc(self, capacity: int) -> None:
        d, (h, w) = self.device, (self.h, self.w)
        fields = {
            "uid": torch.zeros(capacity, dtype=torch.long, device=d),
            "frame_index": torch.zeros(capacity, dtype=torch.long, device=d),
            "timestamp": torch.zeros(capacity, dtype=torch.float64, device=d),
            "poses": torch.eye(4, dtype=torch.float64, device=d).repeat(capacity, 1, 1),
            "invdepth": torch.ones(capacity, h, w, dtype=torch.float32, device=d),
            "prior_invdepth": torch.zeros(capacity, h, w, dtype=torch.float32, device=d),
            "prior_conf": torch.zeros(capacity, h, w, dtype=torch.float32, device=d),
            "conf": torch.zeros(capacity, h, w, dtype=torch.float32, device=d),
        }
        for name, buf in fields.items():
            old = getattr(self, f"_{name}", None)
            if old is not None:
                buf[: self.count] = old[: self.count]
            setattr(self, f"_{name}", buf)

    def __len__(self) -> int:
        return self.count

    # Views of the live part of each buffer; writing into them updates the store.
    @property
    def uid(self) -> torch.Tensor:
        return self._uid[: self.count]

    @property
    def frame_index(self) -> torch.Tensor:
        return self._frame_index[: self.count]

    @property
    def timestamp(self) -> torch.Tensor:
        return self._timestamp[: self.count]

    @property
    def poses(self) -> torch.Tensor:
        return self._poses[: self.count]

    @property
    def invdepth(self) -> torch.Tensor:
        return self._invdepth[: self.count]

    @property
    def prior_invdepth(self) -> torch.Tensor:
        return self._prior_invdepth[: self.count]

    @property
    def prior_conf(self) -> torch.Tensor:
        return self._prior_conf[: self.count]

    @property
    def conf(self) -> torch.Tensor:
        """Per-pixel confidence of the BA depth (sum of correspondence weights that observe it)."""
        return self._conf[: self.count]

    def append(
        self,
        frame_index: int,
        timestamp: float,
        pose_cw: torch.Tensor,
        invdepth: torch.Tensor,
        prior_invdepth: torch.Tensor | None,
        prior_conf: torch.Tensor | None,
        grey: np.ndarray,
        rgb: np.ndarray,
        prior_depth_full: np.ndarray | None = None,
    ) -> int:
        """Add a keyframe at the end; returns its index."""
        if self.count == self._uid.shape[0]:
            self._alloc(2 * self.count)
        k = self.count
        self.count += 1
        self._uid[k] = self._next_uid
        self._next_uid += 1
        self._frame_index[k] = frame_index
        self._timestamp[k] = timestamp
        self._poses[k] = pose_cw
        self._invdepth[k] = invdepth
        self._prior_invdepth[k] = 0 if prior_invdepth is None else prior_invdepth
        self._prior_conf[k] = 0 if prior_conf is None else prior_conf
        self._conf[k] = 0
        self.grey.append(grey)
        self.rgb.append(rgb)
        self.prior_depth_full.append(prior_depth_full)
        return k

    def remove(self, k: int) -> None:
        """Delete keyframe ``k``; later keyframes shift down by one."""
        n = self.count
        for name in ("uid", "frame_index", "timestamp", "poses", "invdepth", "prior_invdepth", "prior_conf", "conf"):
            buf = getattr(self, f"_{name}")
            buf[k : n - 1] = buf[k + 1 : n].clone()
        self.count -= 1
        del self.grey[k], self.rgb[k], self.prior_depth_full[k]

    def index_of(self, uid: int) -> int:
        hits = (self.uid == uid).nonzero()
        if len(hits) == 0:
            raise KeyError(f"no keyframe with uid {uid}")
        return int(hits[0, 0])

    def nbytes(self) -> int:
        """Approximate memory held per live keyframe data (for benchmarks)."""
        grid = self.count * self.h * self.w * 4 * 4
        imgs = sum(g.nbytes for g in self.grey) + sum(r.nbytes for r in self.rgb)
        priors = sum(p.nbytes for p in self.prior_depth_full if p is not None)
        return grid + imgs + priors
