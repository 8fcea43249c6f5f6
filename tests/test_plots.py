"""Pictures of a run: the software renderer against ray casting, the error curve, and the PNGs not being blank."""
from dataclasses import replace

import numpy as np
import open3d as o3d
import pytest

from metricslam.geometry.camera import Intrinsics
from metricslam.io.images import read_rgb
from metricslam.io.run_dir import GT_FILE, PLOT_FILES
from metricslam.io.trajectory import Trajectory
from metricslam.mapping.export import write_map
from metricslam.mapping.render import overview_camera, render_mesh, render_points
from metricslam.viz.figures import translation_errors
from metricslam.viz.run_plots import write_run_plots

W, H, FRAMES = 128, 96, 16
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def room(oracle_room):
    seq, rec = oracle_room(W, H, FRAMES, keyframe_every=3, seed=2)
    return rec, seq.gt_trajectory()


def _raycast_depth(mesh, cam: Intrinsics, pose_wc: np.ndarray) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    v, u = np.mgrid[0 : cam.height, 0 : cam.width]
    d = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones(u.shape)], -1) @ pose_wc[:3, :3].T
    rays = np.concatenate([np.broadcast_to(pose_wc[:3, 3], d.shape), d], -1).astype(np.float32)
    return scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()  # z-depth: the camera-frame direction has z = 1


def _not_blank(path, min_std=20.0):
    """Enough non-background pixels (line plots draw little ink, images a lot) and enough distinct colours."""
    min_busy = {PLOT_FILES["keyframes"]: 0.5, PLOT_FILES["map"]: 0.08}.get(path.name, 0.01)
    img = read_rgb(path)
    busy = np.mean(np.abs(img.astype(np.float32) - 255).max(-1) > 30)  # pixels clearly not white background
    packed = img.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    return img.std() > min_std and busy > min_busy and len(np.unique(packed)) > 50


def test_mesh_rasteriser_matches_ray_casting():
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=40)
    mesh.compute_vertex_normals()
    mesh.paint_uniform_color([0.2, 0.6, 0.9])
    cam = Intrinsics(100.0, 100.0, 79.5, 59.5, 160, 120)
    pose = np.eye(4)
    pose[:3, 3] = [0.3, -0.2, -4.0]  # looking along +z at the sphere
    ren = render_mesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles), np.asarray(mesh.vertex_colors), cam, pose)
    ref = _raycast_depth(mesh, cam, pose)
    hit = np.isfinite(ref)
    assert np.mean((ren.depth > 0) == hit) > 0.995
    both = hit & (ren.depth > 0)
    assert np.mean(np.abs(ren.depth[both] - ref[both]) < 2e-3) > 0.995
    # Headlight shading: the centre faces the camera and is brighter than the rim; the background stays white.
    assert ren.rgb[60, 80, 2] > ren.rgb[both].reshape(-1, 3)[:, 2].min() + 40
    assert (ren.rgb[~hit] == 255).all()


def test_points_land_where_they_project():
    cam = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)
    pts = np.array([[0.0, 0.0, 2.0], [0.5, 0.2, 1.0], [0.0, 0.0, 3.0]])  # the third is hidden by the first
    cols = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    ren = render_points(pts, cols, cam, np.eye(4), radius=0.01)
    assert ren.depth[round(23.5), round(31.5)] == pytest.approx(2.0)
    assert tuple(ren.rgb[round(23.5), round(31.5)]) == (255, 0, 0)
    u, v = 50 * 0.5 / 1.0 + 31.5, 50 * 0.2 / 1.0 + 23.5
    assert tuple(ren.rgb[round(v), round(u)]) == (0, 255, 0)
    assert (ren.rgb == [0, 0, 255]).all(-1).sum() == 0
    assert (ren.depth > 0).sum() <= 8


def test_overview_camera_sees_the_map(room):
    rec, _ = room
    pts = np.random.default_rng(0).uniform([0, 0, 0], [5, 4, 2.5], (2000, 3))
    cam, pose = overview_camera(pts, rec.kf_poses_wc, 320, 240)
    T = np.linalg.inv(pose)
    X = pts @ T[:3, :3].T + T[:3, 3]
    uv = X[:, :2] / X[:, 2:] * cam.fx + [cam.cx, cam.cy]
    inside = (X[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 320) & (uv[:, 1] >= 0) & (uv[:, 1] < 240)
    assert inside.mean() > 0.85
    # The world is z-up and the cameras are upright, so the overview camera looks down (its z has a -z part).
    assert pose[2, 2] < -0.3


def test_translation_errors_after_alignment(room):
    rec, gt = room
    moved = gt.poses.copy()
    moved[:, :3, 3] += [1.0, -2.0, 0.5]  # a rigid offset the SE3 alignment removes
    moved[7, :3, 3] += [0.3, 0.0, 0.0]  # and one bad pose
    times, errors, mode = translation_errors(Trajectory(moved, gt.timestamps), gt)
    assert mode == "se3" and len(errors) == FRAMES
    assert int(np.argmax(errors)) == 7 and errors[7] == pytest.approx(0.3, abs=0.03)
    assert np.delete(errors, 7).max() < 0.03


def test_run_plots_are_written_and_not_blank(room, tmp_path):
    rec, gt = room
    rng = np.random.default_rng(0)
    poses = rec.poses_wc.copy()
    poses[:, :3, 3] += rng.normal(0, 0.02, (len(poses), 3))  # some error to plot
    run = replace(rec, poses_wc=poses, tracked=np.arange(FRAMES) != 5)
    outputs = write_map(run, tmp_path)
    files = write_run_plots(run, tmp_path, gt, mesh=outputs.fusion.mesh, cloud=outputs.cloud_data)
    assert [f.name for f in files] == list(PLOT_FILES.values())
    for f in files:
        assert f.is_file() and _not_blank(f), f
    montage = read_rgb(tmp_path / PLOT_FILES["keyframes"])
    assert montage.shape[0] > 400 and montage.shape[1] > 800
    assert not (tmp_path / GT_FILE).exists()  # the plots only draw: saving the ground truth is the caller's part


def test_plots_without_ground_truth_or_map(room, tmp_path):
    rec, _ = room
    write_map(rec, tmp_path)  # a map in the folder is not read behind the caller's back: only given data is drawn
    files = write_run_plots(replace(rec, kf_prior_depths=None), tmp_path)
    assert [f.name for f in files] == [PLOT_FILES["trajectory"], PLOT_FILES["keyframes"]]
    assert all(_not_blank(f) for f in files)
