"""`metricslam mesh` and `metricslam plot` on a saved run; one-line errors for bad arguments."""
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from scipy.spatial import cKDTree

from metricslam.cli import main
from metricslam.io.run_dir import CLOUD_FILE, GT_FILE, MAPPING_CONFIG_FILE, MESH_FILE, PLOT_FILES
from metricslam.mapping.export import MappingConfig, write_map
from metricslam.mapping.tsdf import TSDFConfig

W, H, FRAMES = 128, 96, 16
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, oracle_room):
    """A saved run as `metricslam run` leaves it: keyframes.npz, trajectories, and the map written at its end."""
    out = tmp_path_factory.mktemp("run")
    seq, rec = oracle_room(W, H, FRAMES, keyframe_every=3, seed=3)
    to_first = np.linalg.inv(rec.kf_poses_wc[0])  # SLAM's world is its first keyframe's camera, not the GT's
    rec = replace(rec, poses_wc=to_first @ rec.poses_wc, kf_poses_wc=to_first @ rec.kf_poses_wc)
    rec.save(out)
    # The run used non-default settings; re-meshing must pick them up from mapping.yaml.
    write_map(rec, out, MappingConfig(tsdf=TSDFConfig(voxel_size=0.03)))
    (out / GT_FILE).write_text("".join(
        f"{t:.6f} " + " ".join(f"{v:.9f}" for v in pose[:3, 3]) + " 0 0 0 1\n"
        for t, pose in zip(seq.timestamps, seq.gt_trajectory().poses)))  # positions only: identity rotations
    return out


def _sorted_vertices(mesh: o3d.geometry.TriangleMesh) -> np.ndarray:
    v = np.asarray(mesh.vertices)
    return v[np.lexsort(v.T[::-1])]


def _one_line_error(capsys, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def test_mesh_reproduces_the_runs_mesh(run_dir, tmp_path, capsys):
    out = tmp_path / "again.ply"
    assert main(["mesh", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "voxel 0.03 m" in printed and str(out) in printed
    first = o3d.io.read_triangle_mesh(str(run_dir / MESH_FILE))
    again = o3d.io.read_triangle_mesh(str(out))
    # keyframes.npz stores prior depths as float16 (0.05 % rounding), so the run's own mesh, fused from float32
    # priors, is matched to millimetres (but for a few boundary triangles) rather than bit for bit.
    assert len(first.triangles) > 1000 and len(again.triangles) == pytest.approx(len(first.triangles), rel=0.01)
    a, b = np.asarray(first.vertices), np.asarray(again.vertices)
    assert np.mean(cKDTree(a).query(b)[0] < 0.005) > 0.99 and np.mean(cKDTree(b).query(a)[0] < 0.005) > 0.99
    assert again.has_vertex_colors()
    # From the same saved run, meshing is deterministic.
    third = tmp_path / "third.ply"
    assert main(["mesh", str(run_dir), "--out", str(third)]) == 0
    np.testing.assert_array_equal(_sorted_vertices(o3d.io.read_triangle_mesh(str(third))), _sorted_vertices(again))


def test_mesh_options_change_the_mesh(run_dir, tmp_path, capsys):
    coarse, cloud = tmp_path / "coarse.ply", tmp_path / "cloud.ply"
    argv = ["mesh", str(run_dir), "--voxel", "0.06", "--source", "ba", "--max-depth", "4", "--out", str(coarse),
            "--cloud", str(cloud)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "voxel 0.06 m" in printed and "ba depth" in printed and "max depth 4 m" in printed
    fine = o3d.io.read_triangle_mesh(str(run_dir / MESH_FILE))
    assert len(o3d.io.read_triangle_mesh(str(coarse)).triangles) < 0.6 * len(fine.triangles)
    pcd = o3d.io.read_point_cloud(str(cloud))
    assert len(pcd.points) > 1000 and pcd.has_colors()
    assert (run_dir / CLOUD_FILE).is_file() and (run_dir / MAPPING_CONFIG_FILE).is_file()


def test_mesh_replaces_files_only_with_overwrite_and_keeps_the_run_consistent(run_dir, tmp_path, capsys):
    import shutil

    from metricslam.mapping.export import load_mapping_config

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    _one_line_error(capsys, ["mesh", str(run)], "already exists; pass --overwrite")
    _one_line_error(capsys, ["mesh", str(run), "--out", str(tmp_path / "new.ply"), "--cloud", str(run / CLOUD_FILE)],
                    "already exists")
    assert not (tmp_path / "new.ply").exists()
    (run / PLOT_FILES["map"]).unlink(missing_ok=True)
    # --set before RUN_DIR works too.
    assert main(["mesh", "--set", "tsdf.min_weight=1", str(run), "--voxel", "0.05", "--overwrite"]) == 0
    # The run's own mesh changed: mapping.yaml records its settings and the map view is drawn from it.
    assert load_mapping_config(run).tsdf.voxel_size == 0.05
    assert (run / PLOT_FILES["map"]).is_file()
    assert load_mapping_config(run_dir).tsdf.voxel_size == 0.03


def test_plot_redraws_the_pictures(run_dir, capsys):
    for name in PLOT_FILES.values():
        (run_dir / name).unlink(missing_ok=True)
    assert main(["plot", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    for name in PLOT_FILES.values():
        assert (run_dir / name).stat().st_size > 10000, name
        assert name in printed


@pytest.mark.parametrize("argv, match", [
    (["mesh", "{missing}"], "no such run folder"),
    (["mesh", "{empty}"], "keyframes.npz: not found"),
    (["mesh", "{run}", "--voxel", "-0.1"], "voxel size must be positive"),
    (["mesh", "{run}", "--source", "lidar"], "unknown depth source 'lidar'"),
    (["mesh", "{run}", "--preset", "space"], "unknown map preset 'space'"),
    (["mesh", "{run}", "--out", "{tmp}/mesh.obj"], "ending in .ply"),
    (["mesh", "{run}", "--set", "tsdf.colour=1"], "unknown key 'colour'"),
    (["plot", "{missing}"], "no such run folder"),
    (["plot", "{run}", "--gt", "{missing}"], "trajectory file not found"),
])
def test_bad_arguments_give_one_line_errors(run_dir, tmp_path, capsys, argv, match):
    (tmp_path / "empty").mkdir()
    paths = {"missing": str(tmp_path / "nowhere"), "empty": str(tmp_path / "empty"), "run": str(run_dir),
             "tmp": str(tmp_path)}
    _one_line_error(capsys, [a.format(**paths) for a in argv], match)


def test_prior_source_needs_prior_depths(run_dir, tmp_path, capsys):
    import shutil

    from metricslam.slam.reconstruction import Reconstruction

    rec = Reconstruction.load(run_dir)
    rec.kf_prior_depths = None
    bare = tmp_path / "bare"
    rec.save(bare)
    _one_line_error(capsys, ["mesh", str(bare), "--source", "prior"], "use 'ba'")
    assert main(["mesh", str(bare)]) == 0  # auto falls back to the BA depth, and says so
    assert "ba depth" in capsys.readouterr().out
    shutil.rmtree(bare)
    assert Path(run_dir / MESH_FILE).is_file()


def test_eval_mesh_scores_a_saved_run(run_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("eval_mesh", Path(__file__).parents[1] / "evaluation" / "eval_mesh.py")
    eval_mesh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_mesh)
    out = tmp_path / "scores.json"
    argv = ["synthetic:room", "--run", str(run_dir), "--end", str(FRAMES), "--size", f"{W}x{H}", "--seed", "3",
            "--json", str(out)]
    assert eval_mesh.main(argv) == 0
    assert "F@5cm" in capsys.readouterr().out
    rows = {r["input"]: r for r in json.loads(out.read_text())}
    mesh = rows["run mesh (se3-aligned)"]
    assert mesh["fscore"] > 0.9 and mesh["accuracy"] < 0.02, mesh
    assert rows["run cloud (se3-aligned)"]["precision"] > 0.95
    assert eval_mesh.main(["synthetic:room", "--run", str(run_dir), "--end", "4", "--size", f"{W}x{H}"]) == 2
    assert "--start/--end/--stride" in capsys.readouterr().err
