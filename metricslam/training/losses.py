"""Depth training losses of Metric3D (spec/FACTS.md 1.4), each returning one value per sample (B,).

Per-sample values averaged over the batch make the loss of a global batch equal to the mean of its shards' losses,
so any number of DDP processes trains the same model. Random choices (RPNL crops, VNL triplets) come with the
batch (see transforms.ToItem): the losses themselves are deterministic.

- rpnl_loss: random proposal normalisation. In each crop, prediction and ground truth are normalised by their
  median and mean absolute deviation from the median (valid pixels), then compared with L1 (averaged over the
  valid pixels of all crops).
- silog_loss: mean(e^2) - lambda * mean(e)^2 with e = ln(pred) - ln(gt) (upstream's form, no square root).
  lambda = 1 is invariant to a global scale; the default 0.5 also penalises half of the scale error.
- vnl_loss: virtual normals of random point triplets (from the unprojected depths) compared with L1; triplets
  that are nearly collinear in the ground truth are skipped, and the easiest quarter is dropped.
- sequence_l1_loss: L1 on each refinement iteration, weighted gamma^(n - 1 - i) (last iteration weight 1).
- confidence_loss: L1 between the predicted confidence and 1 - |pred - gt| / gt (where that is positive).
- normal_loss: against ground-truth normals where they exist; with a predicted concentration kappa the angular
  von Mises-Fisher negative log-likelihood, else 1 - cos. Models without a normal head use depth-derived normals.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass

import torch
from torch import nn

from metricslam.training.normals import depth_to_normals

EPS = 1e-6
MIN_DEPTH = 1e-3  # predictions are clamped to this before logarithms


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``x`` over ``mask`` (both (B, ...)); 0 for a sample without any masked element."""
    m = mask.to(x.dtype)
    dims = tuple(range(1, x.ndim))
    return (torch.where(mask, x, torch.zeros_like(x)) * m).sum(dims) / m.sum(dims).clamp_min(1)


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, variance_focus: float = 0.5) -> torch.Tensor:
    """(B,) SILog of (B,1,H,W) depths over ``valid``."""
    e = torch.log(pred.clamp_min(MIN_DEPTH)) - torch.log(gt.clamp_min(MIN_DEPTH))
    return _masked_mean(e * e, valid) - variance_focus * _masked_mean(e, valid) ** 2


def _crop_pixels(x: torch.Tensor, batch_index: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values of (B,H,W) ``x`` inside K boxes (K,4) [top, left, height, width] of samples ``batch_index`` (K,),
    as (K, P) rows padded to the largest box, and which entries lie inside their box (K, P)."""
    h, w = x.shape[-2:]
    bh, bw = int(boxes[:, 2].max()), int(boxes[:, 3].max())
    i = torch.arange(bh, device=x.device).view(1, bh, 1)
    j = torch.arange(bw, device=x.device).view(1, 1, bw)
    top, left, height, width = (boxes[:, k].view(-1, 1, 1) for k in range(4))
    inside = (i < height) & (j < width)
    index = ((top + i).clamp(max=h - 1) * w + (left + j).clamp(max=w - 1)).flatten(1)
    return x.flatten(1)[batch_index[:, None], index], inside.flatten(1).expand(index.shape)


def _normalise_rows(x: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(x - median) / mean|x - median| of each row over ``mask`` (garbage elsewhere).

    Upstream treats the prediction's median as a constant for the gradient; here it is not, which keeps the
    gradient itself blind to a shift of the crop (with a constant median it pulls the crop's mean around).
    """
    med = torch.where(mask, x, torch.full_like(x, float("nan"))).nanmedian(dim=1).values
    med = torch.where(torch.isnan(med), torch.zeros_like(med), med)  # empty rows (skipped by the caller)
    centred = x - med[:, None]
    mad = torch.where(mask, centred.abs(), torch.zeros_like(centred)).sum(1) / count
    return centred / (mad[:, None] + EPS)


def rpnl_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, boxes: torch.Tensor,
              min_pixels: int = 16) -> torch.Tensor:
    """(B,) random-proposal normalisation loss over the crops ``boxes`` (B, M, 4) [top, left, height, width]:
    the L1 of the normalised maps averaged over every valid pixel of every crop (a pixel in two crops counts
    twice), as upstream. Crops with fewer than ``min_pixels`` valid pixels are skipped. Each crop's term is
    invariant to any positive scale and shift of ``pred`` within that crop."""
    b, m = boxes.shape[:2]
    h, w = pred.shape[-2:]
    flat = boxes.reshape(-1, 4)
    batch_index = torch.arange(b, device=boxes.device).repeat_interleave(m)
    # Crops are gathered into rows padded to the largest box; small and large crops go separately so the
    # whole-image crop does not pad every small one to the full image.
    small = (flat[:, 2] <= h // 2) & (flat[:, 3] <= w // 2)
    loss_sum = pred.new_zeros(b)
    pixels = pred.new_zeros(b)
    for group in (small, ~small):
        if not bool(group.any()):
            continue
        bi, bx = batch_index[group], flat[group]
        p, inside = _crop_pixels(pred[:, 0], bi, bx)
        g, _ = _crop_pixels(gt[:, 0], bi, bx)
        v, _ = _crop_pixels(valid[:, 0], bi, bx)
        count = (inside & v).sum(1, keepdim=True)
        mask = inside & v & (count >= min_pixels)
        c = count.clamp_min(1).to(pred.dtype).squeeze(1)
        diff = (_normalise_rows(p, mask, c) - _normalise_rows(g, mask, c)).abs()
        loss_sum = loss_sum.index_add(0, bi, torch.where(mask, diff, torch.zeros_like(diff)).sum(1))
        pixels = pixels.index_add(0, bi, mask.sum(1).to(pred.dtype))
    return loss_sum / pixels.clamp_min(1)


def _gather_points(depth: torch.Tensor, intrinsics: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W), (B,4), (B,N,3) flat pixel indices -> (B,N,3 points,3 xyz) camera-frame points."""
    w = depth.shape[-1]
    z = depth.flatten(1).gather(1, index.flatten(1)).view(index.shape)
    u, v = (index % w).to(depth.dtype), (index // w).to(depth.dtype)
    fx, fy, cx, cy = (intrinsics[:, k].to(depth.dtype).view(-1, 1, 1) for k in range(4))
    return torch.stack(((u - cx) / fx * z, (v - cy) / fy * z, z), dim=-1)


def _triangle_normals(p: torch.Tensor) -> torch.Tensor:
    n = torch.cross(p[..., 1, :] - p[..., 0, :], p[..., 2, :] - p[..., 0, :], dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(EPS * EPS)


def vnl_loss(pred: torch.Tensor, gt: torch.Tensor, intrinsics: torch.Tensor, triplets: torch.Tensor,
             cos_limit: float = 0.867, drop_fraction: float = 0.25) -> torch.Tensor:
    """(B,) virtual-normal loss over the (B, N, 3) pixel triplets (indices of valid pixels)."""
    g = _gather_points(gt, intrinsics, triplets)
    p = _gather_points(pred.clamp_min(MIN_DEPTH), intrinsics, triplets)
    edges = torch.stack((g[..., 1, :] - g[..., 0, :], g[..., 2, :] - g[..., 0, :], g[..., 2, :] - g[..., 1, :]), -2)
    length = edges.norm(dim=-1)
    unit = edges / length[..., None].clamp_min(EPS)
    cos = torch.stack([(unit[..., i, :] * unit[..., j, :]).sum(-1).abs() for i, j in ((0, 1), (0, 2), (1, 2))], -1)
    ok = (g[..., 2] > MIN_DEPTH).all(-1) & (length > EPS).all(-1) & (cos < cos_limit).all(-1)
    loss = (_triangle_normals(p) - _triangle_normals(g)).abs().sum(-1)
    # Keep the hardest (1 - drop_fraction) of each sample's usable triplets: sort with unusable ones last.
    ranked = torch.where(ok, loss, torch.full_like(loss, float("inf"))).sort(dim=1).values
    k = ok.sum(1, keepdim=True)
    pos = torch.arange(loss.shape[1], device=loss.device).unsqueeze(0)
    keep = (pos >= torch.floor(k * drop_fraction)) & (pos < k)
    return _masked_mean(torch.where(keep, ranked, torch.zeros_like(ranked)), keep)


def sequence_l1_loss(preds: list[torch.Tensor], gt: torch.Tensor, valid: torch.Tensor,
                     gamma: float = 0.9) -> torch.Tensor:
    """(B,) sum over iterations i of gamma^(n - 1 - i) * mean |pred_i - gt|."""
    n = len(preds)
    return typing.cast(torch.Tensor, sum(gamma ** (n - 1 - i) * _masked_mean((p - gt).abs(), valid) for i, p in enumerate(preds)))


def confidence_loss(confidence: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
    """(B,) L1 between the confidence map and the accuracy 1 - |pred - gt| / gt of the (detached) prediction."""
    rel = (pred.detach() - gt).abs() / gt.clamp_min(MIN_DEPTH)
    mask = valid & (rel < 1)
    return _masked_mean((confidence - (1 - rel)).abs(), mask)


def normal_loss(normal: torch.Tensor, gt_normal: torch.Tensor, valid: torch.Tensor,
                kappa: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) angular loss of unit normals (B,3,H,W) against ground truth over ``valid`` (B,1,H,W)."""
    cos = (normal * gt_normal).sum(1, keepdim=True).clamp(-1 + EPS, 1 - EPS)
    if kappa is None:
        return _masked_mean(1 - cos, valid)
    nll = -torch.log(kappa**2 + 1) + kappa * torch.acos(cos) + torch.log1p(torch.exp(-kappa * math.pi))
    return _masked_mean(nll, valid)


@dataclass
class LossConfig:
    """Weights (0 disables a term) and parameters of the training losses."""

    rpnl: float = 1.0
    silog: float = 1.0
    vnl: float = 0.5
    l1: float = 0.0  # per-iteration L1 (ViT decoders iterate; other models give one prediction)
    confidence: float = 0.1
    normal: float = 0.0
    silog_variance_focus: float = 0.5
    l1_gamma: float = 0.9
    rpnl_crops: int = 20
    rpnl_side: tuple[float, float] = (0.125, 0.5)
    rpnl_min_pixels: int = 16
    vnl_triplets: int = 1000


class DepthLoss(nn.Module):
    """Weighted sum of the configured terms on a model's output dict and a training batch (see ToItem)."""

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = cfg or LossConfig()

    def forward(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """{'total': scalar, and each enabled term: its batch mean (unweighted)}."""
        c = self.cfg
        pred = outputs["prediction"].float()
        gt, valid = batch["depth"], batch["valid"]
        terms: dict[str, torch.Tensor] = {}
        if c.rpnl:
            terms["rpnl"] = rpnl_loss(pred, gt, valid, batch["rpnl_boxes"], c.rpnl_min_pixels)
        if c.silog:
            terms["silog"] = silog_loss(pred, gt, valid, c.silog_variance_focus)
        if c.vnl:
            terms["vnl"] = vnl_loss(pred, gt, batch["intrinsics"], batch["vnl_triplets"])
        if c.l1:
            preds = [p.float() for p in outputs.get("predictions_list", [pred])]
            terms["l1"] = sequence_l1_loss(preds, gt, valid, c.l1_gamma)
        if c.confidence and "confidence" in outputs:
            terms["confidence"] = confidence_loss(outputs["confidence"].float(), pred, gt, valid)
        if c.normal:
            terms["normal"] = self._normal_term(outputs, pred, batch)
        weights = {"rpnl": c.rpnl, "silog": c.silog, "vnl": c.vnl, "l1": c.l1, "confidence": c.confidence,
                   "normal": c.normal}
        out = {name: value.mean() for name, value in terms.items()}
        out["total"] = typing.cast(torch.Tensor, sum(weights[name] * value for name, value in out.items()))
        return out

    @staticmethod
    def _normal_term(outputs: dict, pred: torch.Tensor, batch: dict) -> torch.Tensor:
        gt_valid = batch["normal_valid"]
        if "prediction_normal" in outputs:
            out = outputs["prediction_normal"].float()
            return normal_loss(out[:, :3], batch["normal"], gt_valid, out[:, 3:4])
        normal, defined = depth_to_normals(pred, batch["intrinsics"], batch["valid"])
        return normal_loss(normal, batch["normal"], gt_valid & defined)
