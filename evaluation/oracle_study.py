"""Oracle study: how much of the trajectory error is flow accuracy, error correlation, or the depth prior.

    python evaluation/oracle_study.py [--datasets hololens room] [--max-frames 60] [--iters 12] [--seed 0]
                                      [--corr-sigma 2.0] [--set key=value ...] [--out docs/oracle_study.md] [--tiny]

For each sequence the keyframes and edges are fixed up front from the ground truth, so every row solves the
same problem and only the correspondences or the prior change:

- keyframes: a greedy motion filter on the ground-truth motion (a frame becomes a keyframe when the mean flow
  its true motion induces from the last keyframe reaches ``tracking.filter_thresh`` grid pixels, as the
  system's filter does with measured flow);
- edges: temporal edges from every keyframe to its ``frontend.radius`` predecessors, both directions;
- start: ground-truth poses moved by a fixed random perturbation (1 cm, 0.3 degrees; keyframe 0 is the gauge
  and stays exact), inverse depths from the row's prior; then ``--iters`` Gauss-Newton steps of
  ``metricslam.slam.ba.dense_ba`` over all keyframes with the configuration's BA options (prior weight
  ``prior.weight`` or the prior's own, back-end damping).

Rows (each reports keyframe ATE after SE(3) alignment and the scale error 1 - s of the Sim(3) alignment):

- ground-truth correspondences (the reprojection of every grid pixel with the ground-truth depth and poses),
  with no noise, independent Gaussian noise, or spatially correlated noise (white noise blurred by a Gaussian of
  ``--corr-sigma`` grid cells, by default fitted to the real flow error's correlation 4 cells apart,
  renormalised) of 0.1 / 0.3 / 0.65 px per coordinate (processing-resolution px) and of the level whose error
  norm has the real flow's confidence-weighted median ("measured"), all with the simulated metric prior; weight
  1 where the ground-truth depth of the grid cell is valid;
- the real correspondences (``ClassicalCorrespondence`` through ``EdgeCache``, flow started from the
  reprojection of the start state, exactly as a run computes them) with the ground-truth prior (at the network
  prior's weight, and at the sensor's weight), and with the simulated prior.

It also measures the real correspondences against the ground-truth motion on the grid cells with valid depth
whose point is visible in the target frame: median and 90th percentile of the error (px), over all such cells
and weighted by the correspondence confidence, and the correlation of the error between neighbouring cells (1
and 4 cells apart), which the correlated-noise rows imitate. ``--set flow.<key>=...`` changes the correspondence
back-end (e.g. a refinement) for the real-flow rows. ``--tiny`` runs a small synthetic problem (the test suite).
The markdown goes to ``--out``; a '## Conclusions' section already in that file is kept.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from metricslam.config import load_config
from metricslam.depth.priors import SensorPrior, SimulatedPrior
from metricslam.geometry import se3
from metricslam.geometry.projective import grid_transfer, relative_poses, reproject
from metricslam.io.frame import Frame
from metricslam.io.trajectory import Trajectory
from metricslam.metrics.trajectory import ate, scale_error
from metricslam.slam.ba import dense_ba
from metricslam.slam.config import SlamConfig
from metricslam.slam.correspondence.classical import ClassicalCorrespondence, grey
from metricslam.slam.graph import EdgeCache, induced_distance
from metricslam.slam.preprocess import prepare_frame, prior_to_grid, processing_camera
from metricslam.slam.presets import preset_config
from metricslam.slam.video import KeyframeStore

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NOISE_PX = (0.1, 0.3, 0.65)
DEFAULT_FRAMES = {"hololens": 60, "room": 90}
SENSOR_WEIGHT = 1.0
# The start state's pose perturbation: translation (m) and rotation (rad) standard deviations.
START_T, START_R = 0.01, np.radians(0.3)
# A grid cell's point counts as visible in the target frame when its inverse depth there agrees with the target
# frame's ground truth at the nearest grid cell within this relative difference (otherwise it is occluded).
VISIBLE_REL = 0.1
CONCLUSIONS = "## Conclusions"


@dataclass
class Problem:
    """Keyframes of one sequence with ground truth, priors and the fixed edge set."""

    name: str
    config: SlamConfig
    intrinsics: torch.Tensor  # grid [fx, fy, cx, cy], float64
    poses_cw: torch.Tensor  # (K, 4, 4) ground truth world-to-camera, float64
    invdepth: torch.Tensor  # (K, h, w) ground-truth grid inverse depth (0 = unknown)
    valid: torch.Tensor  # (K, h, w) ground-truth inverse depth usable (enough valid pixels, no depth edge)
    priors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (prior inverse depth, confidence) (K, h, w)
    grey: list[np.ndarray]
    rgb: list[np.ndarray]
    frame_index: list[int]
    timestamps: np.ndarray
    ii: torch.Tensor
    jj: torch.Tensor

    @property
    def stride(self) -> int:
        return self.config.stride


def _grid_prior(frame: Frame, prior, stride: int, edge: float) -> tuple[torch.Tensor, torch.Tensor]:
    depth, conf = prior(frame)
    inv, c = prior_to_grid(depth, conf, stride, edge)
    return torch.from_numpy(inv), torch.from_numpy(c)


def build_problem(name: str, frames, config: SlamConfig, max_frames: int) -> Problem:
    """Select keyframes from ``frames`` (an indexable sequence with depth and poses) and prepare their data."""
    cfg = config
    first = frames[0]
    size, camera = processing_camera(first.intrinsics, cfg.image_area, cfg.stride, cfg.upscale)
    intr = torch.tensor(camera.scaled(1.0 / cfg.stride).params, dtype=torch.float64)
    sim, sensor = SimulatedPrior(cfg.prior.simulated), SensorPrior()
    kept: list[tuple[Frame, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # frame, T_cw, GT grid inverse depth, its confidence
    for i in range(min(max_frames, len(frames))):
        f = prepare_frame(frames[i], size, camera)
        gt_inv, gt_conf = _grid_prior(f, sensor, cfg.stride, cfg.prior_grid_edge)
        pose_cw = torch.from_numpy(np.linalg.inv(f.pose_wc))
        if kept and _gt_motion(kept[-1][1:3], (pose_cw, gt_inv), intr) < cfg.tracking.filter_thresh:
            continue
        kept.append((f, pose_cw, gt_inv, gt_conf))
    K = len(kept)
    r = cfg.frontend.radius
    pairs = [(i, k) for k in range(K) for i in range(max(0, k - r), k)]
    ii = torch.tensor([i for i, k in pairs] + [k for i, k in pairs], dtype=torch.long)
    jj = torch.tensor([k for i, k in pairs] + [i for i, k in pairs], dtype=torch.long)
    fr = [k[0] for k in kept]
    priors = {
        "simulated": tuple(torch.stack(t) for t in zip(*[_grid_prior(f, sim, cfg.stride, cfg.prior_grid_edge)
                                                          for f in fr])),
        "ground truth": (torch.stack([k[2] for k in kept]), torch.stack([k[3] for k in kept])),
    }
    return Problem(
        name=name, config=cfg, intrinsics=intr, poses_cw=torch.stack([k[1] for k in kept]),
        invdepth=torch.stack([k[2] for k in kept]), valid=torch.stack([k[3] for k in kept]) > 0.5,
        priors=priors, grey=[grey(f.rgb) for f in fr], rgb=[f.rgb for f in fr], frame_index=[f.index for f in fr],
        timestamps=np.array([f.timestamp for f in fr]), ii=ii, jj=jj,
    )


def _filled(invdepth: torch.Tensor) -> torch.Tensor:
    """Inverse depth with unknown cells set to the frame's median of the known ones."""
    known = invdepth[invdepth > 0]
    fill = known.median() if known.numel() else torch.tensor(1.0)
    return torch.where(invdepth > 0, invdepth, fill)


def _gt_motion(last: tuple[torch.Tensor, torch.Tensor], new: tuple[torch.Tensor, torch.Tensor],
               intr: torch.Tensor) -> float:
    """Mean grid flow the true motion induces from keyframe ``last`` to frame ``new`` (each (T_cw, invdepth))."""
    poses = torch.stack([last[0], new[0]])
    inv = torch.stack([_filled(last[1]), _filled(new[1])]).double()
    one, zero = torch.tensor([0]), torch.tensor([1])
    return float(induced_distance(poses, inv, intr, one, zero, step=1)[0])


def gt_correspondences(p: Problem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ground-truth targets (E, h, w, 2), the cells where they are defined (valid source depth, in front of the
    target camera, inside its image) and where the point is also visible in the target frame (not occluded)."""
    coords, front = reproject(p.poses_cw, _filled(p.invdepth).double(), p.intrinsics, p.ii, p.jj)
    h, w = p.invdepth.shape[1:]
    inside = (coords[..., 0] >= 0) & (coords[..., 0] <= w - 1) & (coords[..., 1] >= 0) & (coords[..., 1] <= h - 1)
    defined = p.valid[p.ii] & front & inside
    # Inverse depth of the point in the target frame: d_i / X'2.
    Xj = grid_transfer(relative_poses(p.poses_cw, p.ii, p.jj), _filled(p.invdepth).double()[p.ii], p.intrinsics)
    inv_j = (_filled(p.invdepth).double()[p.ii].reshape(len(p.ii), -1) / Xj[:, 2].clamp_min(1e-9)).reshape(-1, h, w)
    u = coords[..., 0].round().clamp(0, w - 1).long()
    v = coords[..., 1].round().clamp(0, h - 1).long()
    there = p.invdepth.double()[p.jj[:, None, None], v, u]
    there_ok = p.valid[p.jj[:, None, None], v, u]
    visible = defined & there_ok & ((inv_j - there).abs() < VISIBLE_REL * there)
    return coords.float(), defined, visible


def noise_field(shape: tuple[int, ...], sigma_grid: float, corr_cells: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise (E, h, w, 2) of per-coordinate std ``sigma_grid``: independent per cell when
    ``corr_cells`` is 0, else white noise blurred by a Gaussian of ``corr_cells`` cells and renormalised per edge
    and coordinate (the same size, spatially correlated)."""
    white = torch.randn(shape, generator=gen, dtype=torch.float64)
    if corr_cells <= 0:
        return (white * sigma_grid).float()
    fields = white.permute(0, 3, 1, 2).numpy()
    out = np.empty_like(fields)
    for e in range(fields.shape[0]):  # one blur per edge and coordinate: a few hundred small images
        for c in range(2):
            smooth = cv2.GaussianBlur(fields[e, c], (0, 0), corr_cells, borderType=cv2.BORDER_REFLECT)
            out[e, c] = smooth / max(float(smooth.std()), 1e-12)
    return (torch.from_numpy(out).permute(0, 2, 3, 1) * sigma_grid).float()


def _start(p: Problem, prior: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Perturbed ground-truth poses (keyframe 0 exact) and inverse depths from the prior."""
    gen = torch.Generator().manual_seed(seed)
    xi = torch.randn(len(p.poses_cw), 6, generator=gen, dtype=torch.float64)
    xi[:, :3] *= START_T
    xi[:, 3:] *= START_R
    xi[0] = 0
    poses = se3.se3_exp(xi) @ p.poses_cw
    inv, conf = p.priors[prior]
    return poses, torch.stack([_filled(torch.where(c > 0, d, torch.zeros_like(d))) for d, c in zip(inv, conf)])


def solve(p: Problem, targets: torch.Tensor, weights: torch.Tensor, prior: str, weight: float, iters: int,
          seed: int) -> dict[str, float]:
    """Keyframe ATE (SE3, m) and scale error of the BA from the start state with these correspondences."""
    poses, invdepth = _start(p, prior, seed)
    inv, conf = p.priors[prior]
    poses, _ = dense_ba(poses, invdepth, p.intrinsics, p.ii, p.jj, targets, weights, prior_invdepth=inv,
                        prior_conf=conf, fixed=[0], iters=iters, options=p.config.ba_options("global", weight))
    gt = Trajectory(se3.inverse(p.poses_cw).numpy(), p.timestamps)
    est = Trajectory(se3.inverse(poses).numpy(), p.timestamps)
    if not np.isfinite(est.poses).all():
        return {"ate": float("nan"), "scale": float("nan")}
    return {"ate": ate(gt, est, "se3", max_diff=None)["rmse"], "scale": scale_error(gt, est, max_diff=None)}


def real_correspondences(p: Problem, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and weights of the fixed edges as a run computes them (EdgeCache: flow both ways, started from
    the reprojection of the start state with the simulated prior's depths)."""
    poses, invdepth = _start(p, "simulated", seed)
    store = KeyframeStore(tuple(p.invdepth.shape[1:]), torch.device("cpu"), capacity=len(p.poses_cw))
    for k in range(len(p.poses_cw)):
        inv, conf = p.priors["simulated"]
        store.append(p.frame_index[k], float(p.timestamps[k]), poses[k], invdepth[k], inv[k], conf[k], p.grey[k],
                     p.rgb[k])
    edges = EdgeCache(ClassicalCorrespondence(p.config.flow, p.stride), p.intrinsics, p.stride)
    r = p.config.frontend.radius
    edges.add(store, [(i, k) for k in range(len(store)) for i in range(max(0, k - r), k)])
    ii, jj, targets, weights = edges.gather(store, list(range(len(store))))
    # gather's edge order follows the cache; bring it to the problem's (ii, jj) order.
    order = {(int(a), int(b)): e for e, (a, b) in enumerate(zip(ii, jj))}
    pick = torch.tensor([order[(int(a), int(b))] for a, b in zip(p.ii, p.jj)])
    return targets[pick], weights[pick]


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, q * cw[-1])])


def _lag_correlation(err: torch.Tensor, mask: torch.Tensor, lag: int) -> float:
    """Correlation of the error vectors (E, h, w, 2) of cells ``lag`` apart along rows and columns."""
    pairs = []
    for a, b, m in ((err[:, :, :-lag], err[:, :, lag:], mask[:, :, :-lag] & mask[:, :, lag:]),
                    (err[:, :-lag], err[:, lag:], mask[:, :-lag] & mask[:, lag:])):
        pairs.append((a[m], b[m]))
    a = torch.cat([x for x, _ in pairs]).double()
    b = torch.cat([y for _, y in pairs]).double()
    a, b = a - a.mean(0), b - b.mean(0)
    return float((a * b).sum() / ((a * a).sum() * (b * b).sum()).sqrt().clamp_min(1e-12))


def correspondence_error(targets: torch.Tensor, weights: torch.Tensor, gt: torch.Tensor, visible: torch.Tensor,
                         stride: int) -> dict[str, float]:
    """Error of targets against the ground-truth motion (processing-resolution px) on the visible cells."""
    diff = (targets - gt) * stride
    err = diff.norm(dim=-1)[visible].numpy()
    wv = weights.mean(-1)[visible].numpy().astype(np.float64)
    out = {"median": float(np.median(err)), "p90": float(np.quantile(err, 0.9)), "cells": int(err.size)}
    out["w_median"] = _weighted_quantile(err, wv, 0.5) if wv.sum() > 0 else out["median"]
    out["w_p90"] = _weighted_quantile(err, wv, 0.9) if wv.sum() > 0 else out["p90"]
    out["corr1"] = _lag_correlation(diff, visible, 1)
    out["corr4"] = _lag_correlation(diff, visible, 4)
    return out


@dataclass
class Row:
    correspondences: str
    noise: str
    prior: str
    ate: float
    scale: float


def fitted_corr_sigma(corr4: float) -> float:
    """Blur sigma (cells) whose noise field has the measured correlation at 4 cells: a Gaussian blur of sigma
    gives correlation exp(-lag^2 / (4 sigma^2)) at distance lag."""
    c = min(max(corr4, 0.05), 0.95)
    return float(np.clip(4.0 / np.sqrt(-4.0 * np.log(c)), 1.0, 8.0))


def run_study(p: Problem, iters: int, seed: int, corr_sigma: float | None, noise_px=NOISE_PX,
              sensor_row: bool = True, noise_prior: str = "simulated") -> tuple[list[Row], dict[str, float]]:
    """All rows of one problem and the real correspondences' error statistics (with the correlated noise's blur
    ``corr_sigma`` and the per-coordinate std of the 'measured' level added). The ground-truth correspondence
    rows use ``noise_prior``."""
    cfg = p.config
    network_w = cfg.prior.weight if cfg.prior.weight is not None else SimulatedPrior.ba_weight
    gt_t, defined, visible = gt_correspondences(p)
    gt_w = defined.float()[..., None].expand(*defined.shape, 2).contiguous()
    real_t, real_w = real_correspondences(p, seed)
    stats = correspondence_error(real_t, real_w, gt_t, visible, p.stride)
    stats["corr_sigma"] = fitted_corr_sigma(stats["corr4"]) if corr_sigma is None else corr_sigma
    # The noise level whose error norm has the real flow's confidence-weighted median: the norm of 2D Gaussian
    # noise of per-coordinate std s has median s sqrt(2 ln 2).
    stats["matched_px"] = stats["w_median"] / np.sqrt(2 * np.log(2))
    levels = [(f"{px:g} px", px) for px in noise_px] + [(f"{stats['matched_px']:.2f} px (measured)",
                                                          stats["matched_px"])]
    gen = torch.Generator().manual_seed(seed + 1)
    res = solve(p, gt_t, gt_w, noise_prior, network_w, iters, seed)
    rows = [Row("ground truth", "none", noise_prior, res["ate"], res["scale"])]
    for kind, cells in (("independent", 0.0), ("correlated", stats["corr_sigma"])):
        for label, px in levels:
            noisy = gt_t + noise_field(tuple(gt_t.shape), px / p.stride, cells, gen)
            res = solve(p, noisy, gt_w, noise_prior, network_w, iters, seed)
            rows.append(Row("ground truth", f"{kind} {label}", noise_prior, res["ate"], res["scale"]))
    priors = [("ground truth", network_w, "ground truth"), ("simulated", network_w, "simulated")]
    if sensor_row:
        priors.insert(1, ("ground truth", SENSOR_WEIGHT, "ground truth (sensor weight)"))
    for prior, w, label in priors:
        res = solve(p, real_t, real_w, prior, w, iters, seed)
        rows.append(Row("real flow", "measured", label, res["ate"], res["scale"]))
    return rows, stats


def format_table(p: Problem, rows: list[Row], stats: dict[str, float], seconds: float) -> str:
    lines = [
        f"### {p.name}: {len(p.poses_cw)} keyframes (frames {p.frame_index[0]}..{p.frame_index[-1]}), "
        f"{len(p.ii)} edges, grid {p.invdepth.shape[2]}x{p.invdepth.shape[1]}, stride {p.stride} ({seconds:.0f} s)",
        "",
        f"Real correspondences vs ground-truth motion over {stats['cells']} visible edge cells (px at processing "
        f"resolution): median {stats['median']:.3f}, p90 {stats['p90']:.3f}; confidence-weighted median "
        f"{stats['w_median']:.3f}, p90 {stats['w_p90']:.3f}. Error correlation "
        f"between cells 1 / 4 apart: {stats['corr1']:.2f} / {stats['corr4']:.2f} (correlated noise: blur sigma "
        f"{stats['corr_sigma']:.1f} cells). Noise levels are per-coordinate standard deviations.",
        "",
        "| correspondences | noise | prior | ATE SE3 (cm) | scale error (%) |",
        "|---|---|---|---:|---:|",
    ]
    lines += [f"| {r.correspondences} | {r.noise} | {r.prior} | {100 * r.ate:.2f} | {100 * r.scale:+.2f} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def _hololens(max_frames: int, overrides: list[str]):
    from metricslam.io.sequences.layout import open_sequence

    root = DATA / "hololens_000"
    if not root.is_dir():
        return None
    cfg = preset_config("handheld", ["prior.kind=simulated", *overrides])
    return build_problem("hololens_000", open_sequence(root), cfg, max_frames)


def _room(max_frames: int, overrides: list[str], tiny: bool = False):
    from metricslam.io.synthetic import SyntheticSequence

    if tiny:
        seq = SyntheticSequence("room", frames=max_frames, width=256, height=192)
        cfg = load_config(SlamConfig, None, ["prior.kind=simulated", "image_area=49152", "tracking.filter_thresh=3",
                                                *overrides])
    else:
        seq = SyntheticSequence("room", frames=max_frames, width=512, height=384)
        cfg = load_config(SlamConfig, None, ["prior.kind=simulated", *overrides])
    return build_problem("synthetic room" + (" (tiny)" if tiny else ""), seq, cfg, max_frames)


def write_markdown(path: Path, body: str) -> None:
    """Write the tables, keeping a conclusions section the file already has."""
    kept = ""
    if path.is_file():
        old = path.read_text()
        if CONCLUSIONS in old:
            kept = "\n" + old[old.index(CONCLUSIONS):]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(body + kept)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> list[tuple[Problem, list[Row], dict[str, float]]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["hololens", "room"], choices=["hololens", "room"])
    ap.add_argument("--max-frames", type=int, default=None,
                    help="frames read from the start of each sequence (default: hololens 60, room 90, tiny 30)")
    ap.add_argument("--iters", type=int, default=40, help="Gauss-Newton steps of every BA")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corr-sigma", type=float, default=None,
                    help="correlated noise: blur sigma in grid cells (default: fitted to the real flow's error)")
    ap.add_argument("--noise-prior", choices=["simulated", "ground truth"], default=None,
                    help="prior of the ground-truth correspondence rows (default: simulated; tiny: ground truth)")
    ap.add_argument("--set", nargs="*", default=[], help="SLAM config overrides (key=value) for every problem")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "oracle_study.md")
    ap.add_argument("--tiny", action="store_true", help="a small synthetic room problem only (the test suite)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    results = []
    parts = [f"# Oracle study\n\n`python evaluation/oracle_study.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
             f"\n\nMethod: see the docstring of evaluation/oracle_study.py.\n"]
    noise = (0.65,) if args.tiny else NOISE_PX
    for name in (["room"] if args.tiny else args.datasets):
        t0 = time.perf_counter()
        frames = args.max_frames or (30 if args.tiny else DEFAULT_FRAMES[name])
        p = _room(frames, args.set, args.tiny) if name == "room" else _hololens(frames, args.set)
        if p is None:
            print(f"{name}: data not found under {DATA}; skipped", file=sys.stderr)
            continue
        rows, stats = run_study(p, args.iters, args.seed, args.corr_sigma, noise, sensor_row=not args.tiny,
                                noise_prior=args.noise_prior or ("ground truth" if args.tiny else "simulated"))
        table = format_table(p, rows, stats, time.perf_counter() - t0)
        print(table, flush=True)
        parts.append(table)
        results.append((p, rows, stats))
    write_markdown(args.out, "\n".join(parts))
    return results


if __name__ == "__main__":
    main()
