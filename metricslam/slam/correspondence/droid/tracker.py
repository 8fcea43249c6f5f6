"""``DroidTracker``: keyframe -> frame correspondences from the DROID network, for tracking and the motion filter.

As DROID-SLAM's motion filter: one update step on the single edge from the last keyframe to the new frame, the
hidden state starting from the keyframe's context. The lookup starts from the predicted flow when one is given
(DROID starts from zero motion); the mean of the resulting flow is the motion filter's measure.
"""
from __future__ import annotations

import numpy as np
import torch

from metricslam.errors import MetricSlamError
from metricslam.geometry.projective import pixel_grid
from metricslam.slam.correspondence.classical import block_mean
from metricslam.slam.correspondence.droid.corr import LocalCorr
from metricslam.slam.correspondence.droid.features import FrameFeatures, encode, image_batch, model_device
from metricslam.slam.correspondence.droid.net import DroidNet, motion_features
from metricslam.slam.correspondence.droid.upsample import FACTOR


class DroidTracker:
    """Same interface as ``ClassicalCorrespondence.track``; images may be grey (H, W) or RGB (H, W, 3) uint8."""

    def __init__(self, model: DroidNet, stride: int = FACTOR):
        if stride != FACTOR:
            raise MetricSlamError(f"correspondence=droid needs stride={FACTOR} (the network's grid is 1/{FACTOR} of "
                                  f"the image), got stride={stride}; set stride={FACTOR}")
        self.model = model
        self.stride = stride
        self._kf_image: np.ndarray | None = None
        self._kf: FrameFeatures | None = None

    def _keyframe(self, image: np.ndarray) -> FrameFeatures:
        # The same keyframe comes back for every frame until the next one: encode it once. Holding the array keeps
        # the identity test sound.
        if self._kf is None or image is not self._kf_image:
            self._kf, self._kf_image = encode(self.model, [image]), image
        return self._kf

    reads_colour = True  # the network reads colour like the keyframe features it was trained with

    def texture(self, kf_image: np.ndarray) -> None:
        """The network weighs its own matches: no texture weight on top."""
        return None

    def track(self, image_kf: np.ndarray, image_frame: np.ndarray, init: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, float]:
        """Targets (h, w, 2) in grid pixels of the frame, confidences (h, w, 2) and the mean flow (grid pixels)
        from the keyframe to the frame. ``init``: optional predicted flow (H, W, 2) at image resolution."""
        kf = self._keyframe(image_kf)
        device = model_device(self.model)
        with torch.no_grad():
            fmap = self.model.fnet(self.model.normalise(image_batch([image_frame], device)))
            h, w = fmap.shape[-2:]
            coords0 = pixel_grid(h, w, device)
            coords = coords0
            if init is not None:
                coords = coords0 + torch.from_numpy(block_mean(init, self.stride) / self.stride).to(coords0)
            coords = coords[None]
            edge = torch.zeros(1, dtype=torch.long, device=device)
            corr = LocalCorr.build(torch.cat([kf.fmap, fmap]), edge, edge + 1)(coords)
            out = self.model.update(kf.net, kf.inp, corr, motion_features(coords, coords), edge)
        targets = coords[0] + out.delta[0]
        mean_flow = float((targets - coords0).norm(dim=-1).mean())
        return targets.cpu().numpy(), out.weight[0].cpu().numpy(), mean_flow
