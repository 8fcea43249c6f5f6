"""Training losses: invariances (RPNL per crop, SILog global scale), a loop reference for RPNL, VNL geometry."""
import numpy as np
import torch

from metricslam.training.losses import (
    DepthLoss,
    LossConfig,
    confidence_loss,
    normal_loss,
    rpnl_loss,
    sequence_l1_loss,
    silog_loss,
    vnl_loss,
)
from metricslam.training.normals import depth_to_normals


def _depths(b=2, h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = 1.0 + 9.0 * torch.rand(b, 1, h, w, generator=g)
    pred = gt * (1.0 + 0.3 * torch.randn(b, 1, h, w, generator=g)).clamp_min(0.2)
    valid = torch.rand(b, 1, h, w, generator=g) > 0.2
    return pred, gt, valid


def _reference_rpnl(pred, gt, valid, boxes, min_pixels):
    """Straightforward per-sample, per-crop loop of the RPNL definition (spec/FACTS.md 1.4), pixel-averaged."""
    out = []
    for b in range(pred.shape[0]):
        total, pixels = 0.0, 0
        for top, left, h, w in boxes[b].tolist():
            sl = (b, 0, slice(top, top + h), slice(left, left + w))
            m = valid[sl]
            if m.sum() < min_pixels:
                continue
            p, g = pred[sl][m], gt[sl][m]
            pn = (p - p.median()) / ((p - p.median()).abs().mean() + 1e-6)
            gn = (g - g.median()) / ((g - g.median()).abs().mean() + 1e-6)
            total, pixels = total + (pn - gn).abs().sum(), pixels + int(m.sum())
        out.append(total / max(pixels, 1) if pixels else torch.tensor(0.0))
    return torch.stack(out)


def _boxes(b, h, w, seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(b):
        crops = []
        for _ in range(6):
            ch, cw = rng.integers(h // 8, h // 2 + 1), rng.integers(w // 8, w // 2 + 1)
            crops.append([rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1), ch, cw])
        crops.append([0, 0, h, w])
        rows.append(crops)
    return torch.tensor(rows, dtype=torch.int64)


def test_rpnl_matches_loop_reference():
    pred, gt, valid = _depths()
    boxes = _boxes(2, 24, 32)
    ours = rpnl_loss(pred, gt, valid, boxes, min_pixels=4)
    ref = _reference_rpnl(pred, gt, valid, boxes, 4)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert (ours > 0.05).all()


def test_rpnl_invariant_to_scale_and_shift_inside_each_crop():
    pred, gt, valid = _depths(b=1)
    box = torch.tensor([[[3, 5, 10, 12]]])
    base = rpnl_loss(pred, gt, valid, box, min_pixels=4)
    changed = pred * 7.0  # arbitrary change outside the crop
    changed[..., 3:13, 5:17] = 0.37 * pred[..., 3:13, 5:17] + 4.2  # positive scale and shift inside it
    torch.testing.assert_close(rpnl_loss(changed, gt, valid, box, min_pixels=4), base, rtol=1e-5, atol=1e-6)
    # Two crops, each with its own scale and shift: every crop's term is unchanged, so the mean is too.
    boxes = torch.tensor([[[0, 0, 8, 10], [12, 16, 10, 14]]])
    base = rpnl_loss(pred, gt, valid, boxes, min_pixels=4)
    per_crop = pred.clone()
    per_crop[..., 0:8, 0:10] = 3.0 * pred[..., 0:8, 0:10] - 1.0
    per_crop[..., 12:22, 16:30] = 0.1 * pred[..., 12:22, 16:30] + 20.0
    torch.testing.assert_close(rpnl_loss(per_crop, gt, valid, boxes, min_pixels=4), base, rtol=1e-5, atol=1e-6)
    # ... but not to a change of shape inside a crop.
    warped = pred.clone()
    warped[..., 0:8, 0:10] = pred[..., 0:8, 0:10] ** 2
    assert abs(float(rpnl_loss(warped, gt, valid, boxes, min_pixels=4) - base)) > 1e-3


def test_rpnl_zero_for_affine_prediction_and_gradient_flows():
    _, gt, valid = _depths(b=2)
    boxes = _boxes(2, 24, 32)
    pred = (2.5 * gt + 1.0).requires_grad_(True)
    assert float(rpnl_loss(pred, gt, valid, boxes, 4).detach().max()) < 1e-5
    noisy = (gt + torch.randn_like(gt)).requires_grad_(True)
    rpnl_loss(noisy, gt, valid, boxes, 4).sum().backward()
    assert torch.isfinite(noisy.grad).all() and noisy.grad.abs().sum() > 0
    assert float(noisy.grad[~valid].abs().max()) == 0.0  # invalid pixels get no gradient


def test_silog_invariant_to_global_scale_only_with_full_variance_focus():
    pred, gt, valid = _depths()
    full = silog_loss(pred, gt, valid, variance_focus=1.0)
    torch.testing.assert_close(silog_loss(3.7 * pred, gt, valid, variance_focus=1.0), full, rtol=1e-4, atol=1e-6)
    # The metric default (0.5, upstream) penalises half the squared log scale error: a scale is not free.
    half = silog_loss(pred, gt, valid)
    scaled = silog_loss(3.7 * pred, gt, valid)
    e = torch.log(pred) - torch.log(gt)
    mean_e = torch.stack([e[i][valid[i]].mean() for i in range(2)])
    expected = half + 0.5 * (torch.log(torch.tensor(3.7)) ** 2 + 2 * torch.log(torch.tensor(3.7)) * mean_e)
    torch.testing.assert_close(scaled, expected, rtol=1e-4, atol=1e-5)
    assert float(silog_loss(gt, gt, valid).abs().max()) < 1e-10


def _plane_depth(h=32, w=40, K=(50.0, 50.0, 19.5, 15.5)):
    """Depth of the plane 0.3 x + 0.2 y + z = 4 seen by camera K: exact virtual normals."""
    fx, fy, cx, cy = K
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)])
    depth = 4.0 / (0.3 * rays[0] + 0.2 * rays[1] + rays[2])
    return torch.tensor(depth, dtype=torch.float32)[None, None], torch.tensor([K], dtype=torch.float32)


def test_vnl_zero_for_scaled_geometry_and_positive_for_wrong_shape():
    depth, K = _plane_depth()
    rng = np.random.default_rng(0)
    triplets = torch.from_numpy(rng.integers(0, depth.numel(), (1, 500, 3)))
    assert float(vnl_loss(depth, depth, K, triplets)) < 1e-4
    assert float(vnl_loss(2.5 * depth, depth, K, triplets)) < 1e-4  # normals do not see a global scale
    flat = torch.full_like(depth, float(depth.mean()))  # a fronto-parallel plane: wrong normals
    assert float(vnl_loss(flat, depth, K, triplets)) > 0.2


def test_depth_normals_of_a_plane_and_normal_loss():
    depth, K = _plane_depth()
    n, ok = depth_to_normals(depth, K)
    expected = -torch.tensor([0.3, 0.2, 1.0]) / torch.tensor([0.3, 0.2, 1.0]).norm()  # facing the camera
    assert ok[0, 0, 1:-1, 1:-1].all() and not ok[0, 0, 0].any()
    torch.testing.assert_close(n[0, :, 5, 7], expected, atol=1e-4, rtol=0)
    assert float(normal_loss(n, n, ok)) < 1e-5
    assert float(normal_loss(-n, n, ok)) > 1.9
    kappa = torch.full_like(depth, 5.0)
    assert float(normal_loss(n, n, ok, kappa)) < float(normal_loss(-n, n, ok, kappa))


def test_sequence_l1_weights_and_confidence_target():
    _, gt, valid = _depths()
    preds = [gt + 1.0, gt + 0.5, gt + 0.25]
    torch.testing.assert_close(sequence_l1_loss(preds, gt, valid, gamma=0.5), torch.full((2,), 0.25 + 0.25 + 0.25))
    pred = gt * 1.1  # 10 % relative error everywhere -> target confidence 0.9
    assert float(confidence_loss(torch.full_like(gt, 0.9), pred, gt, valid).abs().max()) < 1e-5
    assert float(confidence_loss(torch.full_like(gt, 0.5), pred, gt, valid).min()) > 0.39


def test_depth_loss_total_is_weighted_sum_of_terms():
    depth, K = _plane_depth()
    pred = depth * 1.2 + 0.1 * torch.rand_like(depth)
    batch = {"depth": depth, "valid": torch.ones_like(depth, dtype=torch.bool), "intrinsics": K,
             "rpnl_boxes": _boxes(1, 32, 40), "vnl_triplets": torch.randint(0, depth.numel(), (1, 300, 3)),
             "normal": depth_to_normals(depth, K)[0], "normal_valid": depth_to_normals(depth, K)[1]}
    cfg = LossConfig(rpnl=1.0, silog=0.5, vnl=2.0, l1=0.3, confidence=0.1, normal=0.7)
    out = DepthLoss(cfg)({"prediction": pred, "confidence": torch.zeros_like(depth)}, batch)
    assert set(out) == {"rpnl", "silog", "vnl", "l1", "confidence", "normal", "total"}
    expected = sum(getattr(cfg, k) * out[k] for k in ("rpnl", "silog", "vnl", "l1", "confidence", "normal"))
    torch.testing.assert_close(out["total"], expected)
    assert all(float(v) > 0 for v in out.values())
