"""Synthetic worlds: ground-truth consistency, usability for optical flow, trajectories, determinism, files."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import open3d as o3d
import pytest

from metricslam.cli import main
from metricslam.errors import InputError
from metricslam.io.frame import Frame
from metricslam.io.images import read_depth, read_rgb
from metricslam.io.sequences import open_sequence
from metricslam.io.synthetic import SyntheticSequence, render, write_sequence
from metricslam.io.synthetic.texture import NoiseTile, filtered_pulse
from metricslam.io.trajectory import read_trajectory

W, H = 160, 120


@pytest.fixture(scope="module")
def room() -> SyntheticSequence:
    return SyntheticSequence("room", frames=8, width=W, height=H, seed=0)


@pytest.fixture(scope="module")
def street() -> SyntheticSequence:
    return SyntheticSequence("street", frames=8, width=W, height=H, seed=0)


def reproject(fi: Frame, fj: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) in frame j of every pixel of frame i, and their depth in frame j."""
    K = fi.intrinsics
    v, u = np.mgrid[0 : fi.height, 0 : fi.width].astype(np.float64)
    z = fi.depth.astype(np.float64)
    X = np.stack([(u - K.cx) / K.fx * z, (v - K.cy) / K.fy * z, z], axis=-1)
    T_ji = np.linalg.inv(fj.pose_wc) @ fi.pose_wc
    Y = X @ T_ji[:3, :3].T + T_ji[:3, 3]
    zj = Y[..., 2]
    safe = np.where(np.abs(zj) > 1e-9, zj, 1e-9)
    return K.fx * Y[..., 0] / safe + K.cx, K.fy * Y[..., 1] / safe + K.cy, zj


def covisible(fi: Frame, fj: Frame, border: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(uj, vj, zj, mask): mask = frame-i pixels that land inside frame j on valid depth and are not occluded
    there. Frame j's depth is sampled by bilinear interpolation of inverse depth (exact on planes)."""
    uj, vj, zj = reproject(fi, fj)
    inside = (fi.depth > 0) & (zj > 0.05) & (uj >= border) & (uj <= fi.width - 1 - border) \
        & (vj >= border) & (vj <= fi.height - 1 - border)
    inv = np.where(fj.depth > 0, 1.0 / np.maximum(fj.depth, 1e-9), 0.0).astype(np.float32)
    mu, mv = uj.astype(np.float32), vj.astype(np.float32)
    sampled = cv2.remap(inv, mu, mv, cv2.INTER_LINEAR)
    all_valid = cv2.remap((fj.depth > 0).astype(np.float32), mu, mv, cv2.INTER_LINEAR) > 0.999
    z_sampled = 1.0 / np.where(sampled > 0, sampled, 1.0)
    ok = inside & all_valid & (sampled > 0)
    # Occluded points land behind the surface frame j sees; a 2 % gate separates them from visible ones.
    ok &= np.abs(z_sampled - zj) < 0.02 * zj
    return uj, vj, np.where(ok, np.abs(z_sampled - zj), np.nan), ok


@pytest.mark.parametrize("name,gap,min_visible", [("room", 3, 0.7), ("street", 3, 0.35)])
def test_depth_is_consistent_with_poses_and_intrinsics(name, gap, min_visible, room, street):
    seq = room if name == "room" else street
    for i in (0, 4):
        fi, fj = seq[i], seq[i + gap]
        _, _, err, ok = covisible(fi, fj)
        assert ok.mean() > min_visible, f"only {ok.mean():.2f} of pixels co-visible"
        assert np.nanmedian(err) < 1e-3
        assert np.nanpercentile(err, 90) < 0.02


def test_depth_is_z_depth_not_ray_length(room):
    """A ray-length depth would disagree with the pose geometry by several percent at the image corners."""
    fi, fj = room[0], room[2]
    _, _, err, ok = covisible(fi, fj)
    corners = np.zeros_like(ok)
    corners[: H // 4, : W // 4] = corners[-H // 4 :, -W // 4 :] = True
    assert ok[corners].mean() > 0.5
    assert np.nanmedian(np.where(corners, err, np.nan)) < 1e-3


def test_dis_flow_matches_ground_truth_flow(room):
    f0, f1 = room[0], room[2]
    uj, vj, _, ok = covisible(f0, f1, border=4)
    v, u = np.mgrid[0:H, 0:W]
    gt = np.stack([uj - u, vj - v], axis=-1)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(cv2.cvtColor(f0.rgb, cv2.COLOR_RGB2GRAY), cv2.cvtColor(f1.rgb, cv2.COLOR_RGB2GRAY), None)
    epe = np.linalg.norm(flow - gt, axis=-1)[ok]
    assert np.median(np.linalg.norm(gt, axis=-1)[ok]) > 5.0  # a real motion, not a still pair
    assert np.median(epe) < 0.5
    assert np.mean(epe < 1.0) > 0.8


def test_room_trajectory_is_smooth_and_inside_the_room():
    poses = SyntheticSequence("room", frames=300, width=32, height=24).gt_trajectory().poses
    step = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    rel = np.einsum("nji,njk->nik", poses[:-1, :3, :3], poses[1:, :3, :3])
    angle = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert 0.015 <= step.min() and step.max() <= 0.04
    assert 0.5 <= np.median(angle) <= 1.5 and angle.max() <= 2.0
    p = poses[:, :3, 3]
    assert p[:, 0].min() > 1.0 and p[:, 0].max() < 5.0 and p[:, 1].min() > 1.0 and p[:, 1].max() < 4.0
    assert 1.0 < p[:, 2].min() and p[:, 2].max() < 2.0
    faster = SyntheticSequence("room", frames=300, width=32, height=24, speed=2.0).gt_trajectory().poses
    assert np.median(np.linalg.norm(np.diff(faster[:, :3, 3], axis=0), axis=1)) == pytest.approx(2 * np.median(step), rel=0.15)


def test_room_size_moves_the_walls_and_keeps_the_furniture(monkeypatch):
    from metricslam.io.synthetic.room import ROOM, build_room
    from metricslam.io.synthetic.scene import SceneBuilder

    boxes: list[tuple[np.ndarray, np.ndarray]] = []
    add_box = SceneBuilder.box

    def recording_box(self, centre, size, *args, **kwargs):
        boxes.append((np.asarray(centre, float), np.asarray(size, float)))
        return add_box(self, centre, size, *args, **kwargs)

    monkeypatch.setattr(SceneBuilder, "box", recording_box)
    big = (10.5, 8.0, 3.6)
    scenes = {}
    for size in (ROOM, big):
        boxes.clear()
        scenes[size] = build_room(3, size), list(boxes)
    (default, base), (scene, grown) = scenes[ROOM], scenes[big]
    assert scene.extras["size"] == big and default.extras["size"] == ROOM
    # Shell first (floor, ceiling, 4 walls), then furniture: same boxes, same sizes, only moved.
    assert len(base) == len(grown)
    for shell, size in ((base[:6], ROOM), (grown[:6], big)):
        corners = np.stack([c + sign * s / 2 for c, s in shell for sign in (-1, 1)])
        np.testing.assert_allclose(np.ptp(corners, axis=0), np.add(size, 0.2), atol=1e-9)  # 0.1 m thick shell
    for (_, s0), (_, s1) in zip(base[6:], grown[6:]):
        np.testing.assert_array_equal(s0, s1)
    assert max(np.abs(c1 - c0).max() for (c0, _), (c1, _) in zip(base[6:], grown[6:])) > 2.0
    # Rays from above the furniture (beside the ceiling lamp) hit the walls and the ceiling of the requested size.
    sx, sy, sz = big
    x, y, z = sx / 2 + 1, sy / 2 + 1, 2.3
    dirs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], np.float32)
    rays = np.concatenate([np.tile([x, y, z], (5, 1)), dirs], axis=1).astype(np.float32)
    hit = scene.raycaster.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    np.testing.assert_allclose(hit, [sx - x, x, sy - y, y, sz - z], atol=1e-4)
    with pytest.raises(ValueError, match="room size"):
        build_room(0, (3.0, 5.0, 3.0))


def test_street_trajectory_drives_hundreds_of_metres_through_turns():
    seq = SyntheticSequence("street", frames=700, width=32, height=24, seed=0)
    poses = seq.gt_trajectory().poses
    p = poses[:, :3, 3]
    step = np.linalg.norm(np.diff(p, axis=0), axis=1)
    assert step.sum() >= 600
    assert 0.8 <= step.min() and step.max() <= 1.2
    assert np.allclose(p[:, 2], 1.65)
    forward = poses[:, :3, 2]
    motion = np.diff(p, axis=0) / step[:, None]
    assert np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", forward[:-1], motion), -1, 1))).max() < 3.0
    heading = np.unwrap(np.arctan2(forward[:, 1], forward[:, 0]))
    rate = np.degrees(np.abs(np.diff(heading)))
    assert rate.max() < 2.5  # gentle turns
    turning = np.concatenate([[False], rate > 0.1, [False]]).astype(int)
    starts, ends = np.flatnonzero(np.diff(turning) == 1), np.flatnonzero(np.diff(turning) == -1)
    turns = [np.degrees(abs(heading[e] - heading[s])) for s, e in zip(starts, ends)]
    assert sum(t > 25 for t in turns) >= 2, f"turns of {turns} degrees"
    assert seq.timestamps[1] == pytest.approx(0.1)


def test_street_has_sky_without_depth_and_bounded_range(street):
    frame = street[2]
    sky = frame.depth == 0
    assert 0.02 < sky.mean() < 0.5
    assert sky[: H // 4].mean() > sky[-H // 4 :].mean()  # sky is up
    assert frame.depth.max() <= 250.0
    blue = frame.rgb[sky].astype(int)
    assert (blue[:, 2] > blue[:, 0]).all()


def test_sequence_api_and_determinism(room):
    f = room[3]
    assert len(room) == 8 and room.has_depth and room.has_gt
    assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
    assert f.depth.dtype == np.float32 and f.index == 3 and f.timestamp == pytest.approx(3 / 30)
    assert room.intrinsics.width == W and 60 <= np.degrees(2 * np.arctan(W / 2 / room.intrinsics.fx)) <= 70
    assert [fr.index for fr in room] == list(range(8))
    assert np.array_equal(room.gt_trajectory().poses[3], f.pose_wc)
    again = SyntheticSequence("room", frames=8, width=W, height=H, seed=0)[3]
    assert np.array_equal(again.rgb, f.rgb) and np.array_equal(again.depth, f.depth)
    other = SyntheticSequence("room", frames=8, width=W, height=H, seed=1)[3]
    assert not np.array_equal(other.depth, f.depth)
    assert np.abs(other.rgb.astype(int) - f.rgb).mean() > 10
    with pytest.raises(IndexError):
        room[8]


def test_texture_has_detail_everywhere(room, street):
    """Every 8x8 block of a frame carries texture (no flat areas where flow would be blind), except the sky."""
    for frame in (room[1], street[1]):
        grey = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        blocks = grey.reshape(H // 8, 8, W // 8, 8).std(axis=(1, 3))
        solid = (frame.depth > 0).reshape(H // 8, 8, W // 8, 8).all(axis=(1, 3))
        assert np.percentile(blocks[solid], 10) > 2.0


def test_render_any_intrinsics_crop_is_consistent(room):
    """Rendering with cropped intrinsics reproduces the crop of the full image (pinhole model honoured)."""
    pose = room.gt_trajectory().poses[2]
    K = room.intrinsics
    rgb, depth = render(room.world, pose, K)
    sub = K.cropped(30, 20, 64, 48)
    rgb_c, depth_c = render(room.world, pose, sub)
    assert np.allclose(depth_c, depth[20:68, 30:94], rtol=1e-5)
    assert np.abs(rgb_c.astype(int) - rgb[20:68, 30:94]).max() <= 1
    # A longer focal length magnifies about the principal point: the optical-axis pixel sees the same point.
    tele = replace(K, fx=2 * K.fx, fy=2 * K.fy)
    _, depth_t = render(room.world, pose, tele)
    assert depth_t[H // 2, W // 2] == pytest.approx(depth[H // 2, W // 2], rel=1e-3)


def test_antialiasing_filters_fade_with_footprint():
    x = np.random.default_rng(0).uniform(0, 50, 10000).astype(np.float32)
    sharp = filtered_pulse(x, np.full_like(x, 1e-3), 0.3)
    assert np.mean(np.isclose(sharp, 0, atol=0.01) | np.isclose(sharp, 1, atol=0.01)) > 0.99 and sharp.mean() == pytest.approx(0.3, abs=0.01)
    wide = filtered_pulse(x, np.full_like(x, 8.0), 0.3)
    assert np.abs(wide - 0.3).max() < 1e-3
    tile = NoiseTile(np.random.default_rng(0), size=256)
    u = np.random.default_rng(1).uniform(0, 5000, 20000).astype(np.float32)
    v = np.random.default_rng(2).uniform(0, 5000, 20000).astype(np.float32)
    stds = [tile.sample(u, v, np.full_like(u, f), np.ones_like(u)).std() for f in (1.0, 8.0, 64.0)]
    assert stds[0] > 0.8 and stds[0] > stds[1] > stds[2]
    # With a grain of 16 texels the noise fades once a pixel covers several grains; self-similar noise keeps
    # over a third of its contrast even at 64 texels per pixel.
    grainy = NoiseTile(np.random.default_rng(0), size=256, grain=16.0)
    fine, coarse = (grainy.sample(u, v, np.full_like(u, f), np.ones_like(u)).std() for f in (1.0, 64.0))
    assert fine > 0.7 and coarse < 0.02 and stds[2] > 0.3


def test_write_sequence_round_trip(tmp_path):
    seq = SyntheticSequence("street", frames=3, width=64, height=48, seed=2)
    out = write_sequence(seq, tmp_path / "seq", progress=False)
    assert float((out / "depth_scale.txt").read_text()) == 256
    assert np.allclose(np.loadtxt(out / "K.txt"), seq.intrinsics.K)
    assert np.allclose(np.loadtxt(out / "times.txt"), seq.timestamps)
    traj = read_trajectory(out / "poses.txt")
    assert np.allclose(traj.poses, seq.gt_trajectory().poses, atol=1e-8)
    for i, frame in enumerate(seq):
        assert np.array_equal(read_rgb(out / "images" / f"{i:05d}.png"), frame.rgb)
        depth = read_depth(out / "depth" / f"{i:05d}.png", 256)
        assert np.abs(depth - frame.depth).max() <= 0.5 / 256 + 1e-6
        assert np.array_equal(depth == 0, frame.depth == 0)
    back = open_sequence(out)
    assert len(back) == 3 and back.has_depth and back.has_gt
    assert np.abs(back[1].depth - seq[1].depth).max() <= 0.5 / 256 + 1e-6
    assert not list(out.rglob(".*"))  # no temporary files left behind


def test_cli_synth(tmp_path, capsys):
    assert main(["synth", "--scene", "room", "--frames", "2", "--width", "48", "--height", "32", "--fx", "40",
                 "--out", str(tmp_path / "s")]) == 0
    assert sorted(p.name for p in (tmp_path / "s" / "images").iterdir()) == ["00000.png", "00001.png"]
    assert np.loadtxt(tmp_path / "s" / "K.txt")[0, 0] == 40
    assert main(["synth", "--scene", "room", "--frames", "0", "--out", str(tmp_path / "x")]) == 2
    assert "frames" in capsys.readouterr().err


def test_bad_arguments_raise_input_errors():
    with pytest.raises(InputError, match="forest"):
        SyntheticSequence("forest")
    with pytest.raises(InputError):
        SyntheticSequence("room", fx=-1.0)
