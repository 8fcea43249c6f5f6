"""Metric depth of a network being trained, on held-out annotation data sets, for each CSTM mode.

Inference mirrors training: 'label' predicts canonical depth from the image as is and rescales it by f / f_c;
'image' first resizes the image to the canonical focal length (its prediction is then metric); 'none' takes the
prediction as metric. Images are padded to the network's size multiple with the mean colour and the prediction
is brought back to the original size before it is compared with the ground truth (per-image AbsRel, d1, ...).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metricslam.depth.cstm import MAX_DEPTH, FocalMode, focal_length, from_canonical, to_canonical_image
from metricslam.depth.predictor import PAD_COLOUR, RGB_MEAN, RGB_STD
from metricslam.geometry.camera import Intrinsics
from metricslam.metrics.depth import DepthMetricAccumulator
from metricslam.training.data import AnnotationDataset
from metricslam.training.transforms import CstmMode


@torch.inference_mode()
def predict_metric_depth(model: nn.Module, rgb: np.ndarray, intrinsics: Intrinsics, cstm: CstmMode,
                         device: torch.device, size_multiple: int = 32, focal_mode: FocalMode = "fx") -> np.ndarray:
    """Metric depth (HxW float32) of one RGB image by a network trained with CSTM mode ``cstm``."""
    h, w = rgb.shape[:2]
    image, ratio = rgb, 1.0
    if cstm == "image":
        image, _, canonical = to_canonical_image(rgb, intrinsics, focal_mode=focal_mode)
        ratio = canonical.width / w
    ih, iw = image.shape[:2]
    ph, pw = -ih % size_multiple, -iw % size_multiple
    top, left = ph // 2, pw // 2
    canvas = np.empty((ih + ph, iw + pw, 3), np.uint8)
    canvas[:] = PAD_COLOUR
    canvas[top:top + ih, left:left + iw] = image
    x = torch.from_numpy(canvas).to(device).permute(2, 0, 1)[None].float()
    x = (x - torch.tensor(RGB_MEAN, device=device).view(1, 3, 1, 1)) / torch.tensor(RGB_STD, device=device).view(1, 3, 1, 1)
    pred = model(x)["prediction"].float()[:, :, top:top + ih, left:left + iw]
    if (ih, iw) != (h, w):
        pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False)
    if cstm == "none":
        return pred[0, 0].clamp(0, MAX_DEPTH).cpu().numpy()
    return from_canonical(pred, focal_length(intrinsics, focal_mode), ratio)[0, 0].cpu().numpy()


def evaluate_datasets(model: nn.Module, datasets: Sequence[AnnotationDataset], cstm: CstmMode,
                      device: torch.device, size_multiple: int = 32, focal_mode: FocalMode = "fx",
                      max_depth: float | None = None) -> dict[str, dict]:
    """{data set name: per-image metrics summary, 'all': over every image} (see DepthMetricAccumulator)."""
    was_training = model.training
    model.eval()
    overall = DepthMetricAccumulator(max_depth=max_depth)
    results = {}
    for ds in datasets:
        acc = DepthMetricAccumulator(max_depth=max_depth)
        for i in range(len(ds)):
            s = ds.load(i)
            pred = predict_metric_depth(model, s.rgb, s.intrinsics, cstm, device, size_multiple, focal_mode)
            gt = np.where(s.valid, s.depth, 0)
            acc.add(pred, gt)
            overall.add(pred, gt)
        results[ds.name] = acc.summary()["per_image"]
    results["all"] = overall.summary()["per_image"]
    model.train(was_training)
    return results
