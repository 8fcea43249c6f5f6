"""RunDir: the files of a `metricslam run` folder, written and read back through one object."""
import json

import numpy as np
import pytest

from metricslam.errors import InputError
from metricslam.io.run_dir import CONFIG_FILE, GT_FILE, METRICS_FILE, RUN_OUTPUTS, RunDir
from metricslam.io.trajectory import Trajectory
from metricslam.mapping.export import MappingConfig, write_map
from metricslam.slam.config import SlamConfig


def test_existing_refuses_a_missing_folder(tmp_path):
    with pytest.raises(InputError, match="no such run folder; pass the --out folder of 'metricslam run'"):
        RunDir.existing(tmp_path / "missing")
    assert RunDir.existing(tmp_path).path == tmp_path


def test_writes_config_metrics_and_ground_truth_and_lists_them(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare()
    run.record(["trajectory_tum.txt"])
    run.write_config(SlamConfig())
    run.write_metrics({"ate_se3_rmse_m": 0.0123})
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 0, 3] = [0.0, 0.5, 1.0]
    assert run.write_ground_truth(Trajectory(poses)) is None  # no timestamps: a TUM file cannot hold it
    run.write_ground_truth(Trajectory(poses, np.array([0.0, 0.1, 0.2])))
    assert run.written == ["trajectory_tum.txt", CONFIG_FILE, METRICS_FILE, GT_FILE]
    assert json.loads((run.path / METRICS_FILE).read_text()) == {"ate_se3_rmse_m": 0.0123}
    gt = RunDir.existing(run.path).read_ground_truth()
    assert gt is not None and np.allclose(gt.poses, poses) and np.allclose(gt.timestamps, [0.0, 0.1, 0.2])
    assert all(name in RUN_OUTPUTS.files for name in run.written)
    with pytest.raises(InputError, match="earlier 'metricslam run'"):
        RunDir(run.path).check()


def test_reads_back_the_map_it_holds(tmp_path, oracle_room):
    run = RunDir(tmp_path)
    assert run.read_ground_truth() is None and run.read_mesh() is None and run.read_cloud() is None
    _, rec = oracle_room(128, 96, 9, keyframe_every=2, seed=3)
    outputs = write_map(rec, tmp_path, MappingConfig())
    mesh = run.read_mesh()
    assert mesh is not None and len(mesh.triangles) == len(outputs.fusion.mesh.triangles)
    cloud = run.read_cloud()
    assert cloud is not None and outputs.cloud_data is not None
    assert np.allclose(cloud[0], outputs.cloud_data[0]) and np.array_equal(cloud[1], outputs.cloud_data[1])
    (tmp_path / "mesh.ply").write_text("ply\nformat ascii 1.0\nend_header\n")
    with pytest.raises(InputError, match="not a triangle mesh"):
        run.read_mesh()
