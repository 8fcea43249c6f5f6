"""Map accuracy against ground truth: accuracy, completeness (metres), precision, recall and F-score at 5 cm.

    python evaluation/eval_mesh.py SEQUENCE --run RUN_DIR            # a saved run's mesh.ply / cloud.ply
    python evaluation/eval_mesh.py SEQUENCE --oracle sensor simulated # mapping alone: ground-truth poses

SEQUENCE is a dataset folder with ground-truth depth and poses (anything ``open_sequence`` reads, e.g.
../shared/data/hololens_000) or ``synthetic:room`` / ``synthetic:street``. The reference is the same TSDF fusion
applied to the ground-truth depth with ground-truth poses at the evaluated keyframes, so both sides see the same
parts of the scene at the same resolution. A run's map lives in its own world frame: it is aligned to the ground
truth by Umeyama on the keyframe positions (SE3 when metric, Sim3 otherwise) before measuring.
``--oracle PRIOR`` builds reconstructions from ground-truth poses with keyframe depth from that prior (sensor =
the sequence's depth, simulated = it corrupted like a zero-shot network) and measures each depth source.
Select frames with --start/--end/--stride as for the run.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import open3d as o3d

from metricslam.depth.priors import SensorPrior, SimulatedPrior
from metricslam.depth.simulated import SimulatedPriorConfig
from metricslam.errors import InputError, MetricSlamError
from metricslam.io.atomic import write_text_atomic
from metricslam.io.run_dir import CLOUD_FILE, MESH_FILE
from metricslam.io.sequences import open_sequence
from metricslam.io.synthetic import WORLDS, SyntheticSequence
from metricslam.io.trajectory import Trajectory
from metricslam.mapping.cloud import CloudConfig, consistent_cloud
from metricslam.mapping.depthmaps import KeyframeDepthConfig
from metricslam.mapping.measure import geometry_points, map_scores
from metricslam.mapping.tsdf import TSDFConfig, fuse_reconstruction
from metricslam.metrics.trajectory import align
from metricslam.slam.reconstruction import Reconstruction
from metricslam.testing.oracle import oracle_reconstruction

ORACLE_PRIORS = ("sensor", "simulated")
SOURCES = ("ba", "prior", "both")


def open_frames(args: argparse.Namespace):
    if args.sequence.startswith("synthetic:"):
        scene = args.sequence.split(":", 1)[1]
        if scene not in WORLDS:
            raise InputError(f"unknown synthetic scene '{scene}'; use synthetic:{' or synthetic:'.join(WORLDS)}")
        width, height = args.size
        seq = SyntheticSequence(scene, frames=args.end or 60, width=width, height=height, seed=args.seed)
        return [seq[i] for i in range(args.start, len(seq), args.stride)]
    seq = open_sequence(args.sequence, start=args.start, end=args.end, stride=args.stride)
    if not (seq.has_depth and seq.has_gt):
        raise InputError(f"{args.sequence}: needs ground-truth depth and poses to build the reference map")
    return seq


def reference_points(frames, kf_indices: list[int], image_area: int, tsdf: TSDFConfig, spacing: float
                     ) -> tuple[np.ndarray, Reconstruction]:
    """Points sampled on the mesh fused from ground-truth depth and poses of the given frames."""
    gt_rec = oracle_reconstruction([frames[i] for i in kf_indices], SensorPrior(), image_area=image_area)
    mesh = fuse_reconstruction(gt_rec, replace(tsdf, depth=KeyframeDepthConfig(source="prior"))).mesh
    return geometry_points(mesh, spacing), gt_rec


def _row(name: str, source: str, geometry, reference: np.ndarray, spacing: float, threshold: float) -> dict:
    size = len(geometry.triangles) if isinstance(geometry, o3d.geometry.TriangleMesh) else len(geometry.points)
    scores = map_scores(geometry_points(geometry, spacing), reference, threshold)
    return {"input": name, "source": source, "elements": size, **scores.as_dict()}


def _cloud(points: np.ndarray) -> o3d.geometry.PointCloud:
    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))


def evaluate_oracle(frames, args: argparse.Namespace, tsdf: TSDFConfig) -> list[dict]:
    kf = list(range(0, len(frames), args.keyframe_every))
    reference, _ = reference_points(frames, kf, args.image_area, tsdf, args.spacing)
    chosen = [frames[i] for i in kf]
    rows = []
    for name in args.oracle:
        prior = SensorPrior() if name == "sensor" else SimulatedPrior(SimulatedPriorConfig(seed=args.seed))
        rec = oracle_reconstruction(chosen, prior, image_area=args.image_area)
        for source in args.sources:
            depth = KeyframeDepthConfig(source=source)
            mesh = fuse_reconstruction(rec, replace(tsdf, depth=depth)).mesh
            rows.append(_row(f"gt poses + {name} prior: mesh", source, mesh, reference, args.spacing, args.threshold))
            points, _ = consistent_cloud(rec, CloudConfig(depth=depth))
            rows.append(_row(f"gt poses + {name} prior: cloud", source, _cloud(points), reference, args.spacing,
                             args.threshold))
    return rows


def evaluate_run(frames, args: argparse.Namespace, tsdf: TSDFConfig) -> list[dict]:
    run = Path(args.run)
    rec = Reconstruction.load(run)
    kf = [int(i) for i in rec.kf_frame_indices]
    if max(kf) >= len(frames):
        raise InputError(f"{run}: keyframe frame {max(kf)} is beyond the {len(frames)} selected frames; "
                         "pass the --start/--end/--stride the run used")
    reference, gt_rec = reference_points(frames, kf, rec.intrinsics.width * rec.intrinsics.height, tsdf, args.spacing)
    mode = "se3" if rec.metric else "sim3"
    _, R, t, s = align(Trajectory(gt_rec.kf_poses_wc), Trajectory(rec.kf_poses_wc), mode)
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = s * R, t
    rows = []
    mesh_path = Path(args.mesh) if args.mesh else run / MESH_FILE
    mesh = o3d.io.read_triangle_mesh(str(mesh_path)) if mesh_path.is_file() else fuse_reconstruction(rec, tsdf).mesh
    rows.append(_row(f"run mesh ({mode}-aligned)", "-", mesh.transform(transform), reference, args.spacing,
                     args.threshold))
    if (run / CLOUD_FILE).is_file():
        cloud = o3d.io.read_point_cloud(str(run / CLOUD_FILE))
        rows.append(_row(f"run cloud ({mode}-aligned)", "-", cloud.transform(transform), reference, args.spacing,
                         args.threshold))
    return rows


def format_table(rows: list[dict], threshold: float) -> str:
    cm = f"{threshold * 100:g}cm"
    head = f"{'input':<36} {'source':<6} {'acc [m]':>8} {'comp [m]':>8} {'P@' + cm:>7} {'R@' + cm:>7} {'F@' + cm:>7} {'size':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['input']:<36} {r['source']:<6} {r['accuracy']:8.4f} {r['completeness']:8.4f} "
                     f"{r['precision']:7.3f} {r['recall']:7.3f} {r['fscore']:7.3f} {r['elements']:9d}")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size; write WIDTHxHEIGHT, e.g. 320x240") from None
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sequence", help="dataset folder with depth and poses, or synthetic:room / synthetic:street")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", metavar="RUN_DIR", help="evaluate the map of this saved run")
    what.add_argument("--oracle", nargs="+", choices=ORACLE_PRIORS, help="ground-truth poses with these priors")
    p.add_argument("--mesh", metavar="FILE", help="mesh to evaluate with --run (default RUN_DIR/mesh.ply)")
    p.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES), help="depth sources (--oracle)")
    p.add_argument("--keyframe-every", type=int, default=2, help="keyframe spacing in frames (--oracle)")
    p.add_argument("--image-area", type=int, default=384 * 512, help="processing resolution in pixels (--oracle)")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--end", type=int, default=None, help="(synthetic: number of frames, default 60)")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--size", type=_size, default=(320, 240), help="synthetic image size WIDTHxHEIGHT")
    p.add_argument("--seed", type=int, default=0, help="synthetic scene and simulated prior seed")
    p.add_argument("--voxel", type=float, help="TSDF voxel size in metres (default: preset)")
    p.add_argument("--threshold", type=float, default=0.05, help="F-score distance in metres (default 0.05)")
    p.add_argument("--spacing", type=float, default=0.01, help="surface sampling distance in metres")
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.keyframe_every < 1 or args.stride < 1:
            raise InputError("--keyframe-every and --stride must be >= 1")
        tsdf = TSDFConfig(voxel_size=args.voxel)
        frames = open_frames(args)
        rows = evaluate_run(frames, args, tsdf) if args.run else evaluate_oracle(frames, args, tsdf)
    except MetricSlamError as exc:
        print(f"eval_mesh: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows, args.threshold))
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
