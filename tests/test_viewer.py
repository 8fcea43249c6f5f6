"""Rerun live viewer: an .rrd recording holds the camera, trajectory, keyframe clouds and mesh."""
import sys

import numpy as np
import open3d as o3d
import pytest

from metricslam.errors import MetricSlamError
from metricslam.geometry.camera import Intrinsics
from metricslam.viz.rerun_viewer import CAMERA, MESH, TRAJECTORY, RerunLogger, depth_points, keyframe_entity

rerun = pytest.importorskip("rerun")
from rerun.chunk import RrdReader  # noqa: E402


def _columns_by_entity(path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for chunk in RrdReader(path).stream():
        found.setdefault(chunk.entity_path, set()).update(chunk.to_record_batch().schema.names)
    return found


def _points_logged(path, entity: str) -> list[int]:
    counts = []
    for chunk in RrdReader(path).stream():
        if chunk.entity_path == f"/{entity}":
            batch = chunk.to_record_batch()
            if "Points3D:positions" in batch.schema.names:
                counts += [len(row) for row in batch.column("Points3D:positions").to_pylist() if row is not None]
    return counts


def test_depth_points_reproject_to_their_pixels():
    cam = Intrinsics(40.0, 42.0, 15.5, 11.5, 32, 24)
    depth = np.random.default_rng(0).uniform(1, 3, (24, 32)).astype(np.float32)
    depth[:, :4] = 0
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 2.0, 3.0]
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    pts, cols = depth_points(depth, cam, pose, image)
    assert len(pts) == int((depth > 0).sum()) and cols.shape == (len(pts), 3) and cols.dtype == np.uint8
    local = pts - pose[:3, 3]
    u = cam.fx * local[:, 0] / local[:, 2] + cam.cx
    v = cam.fy * local[:, 1] / local[:, 2] + cam.cy
    np.testing.assert_allclose(local[:, 2], depth[np.round(v).astype(int), np.round(u).astype(int)], rtol=1e-5)
    assert np.allclose(u, np.round(u), atol=1e-3) and (u >= 4 - 1e-3).all()
    assert len(depth_points(depth, cam, pose, max_points=50)[0]) == 50


def test_recording_holds_the_expected_entities(tmp_path):
    path = tmp_path / "live.rrd"
    cam = Intrinsics(20.0, 20.0, 7.5, 5.5, 16, 12)
    depth = np.full((12, 16), 2.0, np.float32)
    conf = np.ones_like(depth)
    conf[:6] = 0.0  # the top half is not confident: not logged
    image = np.full((48, 64, 3), 200, np.uint8)
    poses = [np.eye(4) for _ in range(5)]
    for i, p in enumerate(poses):
        p[0, 3] = 0.1 * i
    with RerunLogger(path) as viewer:
        for i, p in enumerate(poses):
            viewer.log_frame_pose(i, i / 30, p, image, cam.resized(64, 48))
            if i % 2 == 0:
                assert viewer.log_keyframe(i, i, p, depth, cam, image, conf) == 16 * 6
        viewer.remove_keyframe(2)
        viewer.log_mesh(o3d.geometry.TriangleMesh.create_box())
    assert path.stat().st_size > 1000
    found = _columns_by_entity(path)
    assert "Transform3D:translation" in found[f"/{CAMERA}"]
    assert "Image:buffer" in found[f"/{CAMERA}/image"] and "Pinhole:image_from_camera" in found[f"/{CAMERA}/image"]
    assert "LineStrips3D:strips" in found[f"/{TRAJECTORY}"]
    assert "Mesh3D:vertex_positions" in found[f"/{MESH}"]
    for uid in (0, 2, 4):
        assert _points_logged(path, f"{keyframe_entity(uid)}/points") == [96]
    assert "Clear:is_recursive" in found[f"/{keyframe_entity(2)}"]


def test_missing_rerun_and_bad_target_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(MetricSlamError, match=".rrd"):
        RerunLogger(tmp_path / "live.txt")
    monkeypatch.setitem(sys.modules, "rerun", None)
    with pytest.raises(MetricSlamError, match=r"pip install 'metricslam\[viz\]'"):
        RerunLogger(tmp_path / "live.rrd")
