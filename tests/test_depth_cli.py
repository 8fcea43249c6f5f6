"""`metricslam depth`, `metricslam measure`, evaluation/eval_depth.py, single-image intrinsics and the PLY writer."""
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from metricslam.cli import main
from metricslam.depth.camera_guess import default_intrinsics, intrinsics_for_image, intrinsics_from_exif
from metricslam.depth.models.metric3d import build_metric3d
from metricslam.errors import InputError
from metricslam.io.images import read_depth
from metricslam.io.ply import write_ply
from metricslam.training.data import read_annotation
from shared_paths import DATA

ROOT = Path(__file__).resolve().parents[1]
DEMO = DATA / "metric3d_demo"
NYU_IMAGE = DEMO / "data" / "nyu_demo" / "rgb" / "rgb_00000.jpg"
NYU_CAM = ["--fx", "518.8579", "--fy", "519.46961", "--cx", "325.58245", "--cy", "253.73617"]
SMALL = ["--input-size", "56", "84", "--device", "cpu"]


def needs_demo():
    if not DEMO.is_dir():
        pytest.skip("shared metric3d_demo data not available")


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A randomly initialised vit_small saved like the official file (model_state_dict, official name)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "metric_depth_vit_small_800k.pth"
    torch.save({"model_state_dict": build_metric3d("vit_small").state_dict()}, path)
    return path


def test_depth_cli_writes_all_outputs(random_checkpoint, tmp_path, capsys):
    needs_demo()
    out = tmp_path / "out"
    argv = ["depth", str(NYU_IMAGE), "--weights", str(random_checkpoint), "--out", str(out), *NYU_CAM, *SMALL]
    assert main(argv) == 0
    stem = "rgb_00000"
    depth = np.load(out / f"{stem}_depth.npy")
    assert depth.shape == (480, 640) and depth.dtype == np.float32 and (depth > 0).all() and depth.max() <= 300
    png = read_depth(out / f"{stem}_depth.png", scale=1000.0)
    valid = depth < 65.535
    np.testing.assert_allclose(png[valid], depth[valid], atol=0.0006)  # millimetre rounding
    colour = np.asarray(Image.open(out / f"{stem}_depth_color.png"))
    assert colour.shape[0] == 480 and colour.shape[1] > 640 and colour.shape[2] == 3  # image + colour bar
    assert np.asarray(Image.open(out / f"{stem}_confidence.png")).shape == (480, 640)
    assert np.asarray(Image.open(out / f"{stem}_normals.png")).shape == (480, 640, 3)
    cameras = json.loads((out / "cameras.json").read_text())
    assert cameras["rgb_00000.jpg"]["source"] == "flags" and cameras["rgb_00000.jpg"]["fx"] == pytest.approx(518.8579)

    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(out / f"{stem}.ply"))
    points = np.asarray(cloud.points)
    assert len(points) == depth.size and cloud.has_colors() and cloud.has_normals()
    # Pixel (u, v) = (100, 200) is row-major point 200 * 640 + 100; its z is the depth there and x follows fx, cx.
    p = points[200 * 640 + 100]
    assert p[2] == pytest.approx(depth[200, 100], rel=1e-5)
    assert p[0] == pytest.approx((100 - 325.58245) / 518.8579 * depth[200, 100], rel=1e-4)


def test_measure_cli_prints_distance(random_checkpoint, capsys):
    needs_demo()
    code = main(["measure", str(NYU_IMAGE), "--weights", str(random_checkpoint), *NYU_CAM, *SMALL,
                 "--points", "100,200", "400,250"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    z1 = float(lines[0].split("depth ")[1].split(" m")[0])
    xyz1 = np.array([float(v) for v in lines[0].split("(")[2].split(")")[0].split(",")])
    xyz2 = np.array([float(v) for v in lines[1].split("(")[2].split(")")[0].split(",")])
    dist = float(lines[2].split("distance: ")[1].split(" m")[0])
    assert z1 > 0 and xyz1[2] == pytest.approx(z1, abs=1e-3)
    assert xyz1[0] == pytest.approx((100 - 325.58245) / 518.8579 * z1, abs=2e-3)
    assert dist == pytest.approx(np.linalg.norm(xyz1 - xyz2), abs=3e-3)


def test_cli_user_errors_are_one_line(random_checkpoint, tmp_path, capsys):
    other = tmp_path / "mine.pth"
    other.symlink_to(random_checkpoint)
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(img)
    cases = [
        (["depth", str(img), "--weights", str(other), "--out", str(tmp_path / "o")], "--variant"),
        (["depth", str(tmp_path / "no.png"), "--weights", str(random_checkpoint), "--out", str(tmp_path)], "not found"),
        (["measure", str(img), "--weights", str(random_checkpoint), "--points", "5,5", "50,5"], "outside"),
        (["depth", str(img), "--weights", str(tmp_path / "x.pth"), "--out", str(tmp_path)], "weights file not found"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err


def _eval_module():
    spec = importlib.util.spec_from_file_location("eval_depth", ROOT / "evaluation" / "eval_depth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_depth_end_to_end_on_demo(random_checkpoint, tmp_path, capsys):
    needs_demo()
    eval_depth = _eval_module()
    out = tmp_path / "eval"
    code = eval_depth.main([str(DEMO / "data" / "nyu_demo" / "test_annotations.json"), "--weights",
                            str(random_checkpoint), "--dataset", "nyu", *SMALL, "--out", str(out)])
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["settings"]["crop"] == "eigen" and result["settings"]["max_depth"] == 10.0
    assert result["per_image"]["num_images"] == 3 and len(result["images"]) == 3
    for row in result["images"]:
        assert 0 < row["num_pixels"] < 480 * 640 and np.isfinite(row["abs_rel"]) and 0 <= row["d1"] <= 1
    np.testing.assert_allclose(result["per_image"]["abs_rel"], np.mean([r["abs_rel"] for r in result["images"]]))
    assert (out / "per_image.csv").read_text().count("\n") == 4
    printed = capsys.readouterr().out
    assert "per_image" in printed and "pooled" in printed
    assert eval_depth.main([str(tmp_path / "missing.json"), "--weights", str(random_checkpoint)]) == 2


def test_eval_annotation_paths_resolve_against_ancestors(tmp_path):
    (tmp_path / "data" / "set" / "rgb").mkdir(parents=True)
    (tmp_path / "data" / "set" / "rgb" / "a.png").write_bytes(b"")
    ann = tmp_path / "data" / "set" / "test.json"
    ann.write_text(json.dumps({"files": [{"rgb": "data/set/rgb/a.png", "depth": "rgb/a.png", "depth_scale": 256,
                                          "cam_in": [1, 2, 3, 4]}]}))
    (entry,) = read_annotation(ann)  # the reader eval_depth.py uses
    assert entry.rgb == tmp_path / "data" / "set" / "rgb" / "a.png" == entry.depth
    ann.write_text(json.dumps({"files": [{"rgb": "nope.png", "depth": "rgb/a.png", "depth_scale": 1,
                                          "cam_in": [1, 2, 3, 4]}]}))
    with pytest.raises(InputError, match="nope.png"):
        read_annotation(ann)


def _jpeg_with_exif(path, size, tags):
    img = Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8))
    exif = Image.Exif()
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd.update(tags)
    img.save(path, exif=exif)
    return path


def test_intrinsics_from_exif_35mm_and_focal_plane(tmp_path):
    phone = _jpeg_with_exif(tmp_path / "phone.jpg", (400, 300), {0xA405: 26, 0x920A: IFDRational(42, 10)})
    guess = intrinsics_from_exif(phone, 400, 300)
    assert guess.source == "exif-35mm" and guess.intrinsics.fx == pytest.approx(26 / 36 * 400)
    assert (guess.intrinsics.cx, guess.intrinsics.cy) == (200.0, 150.0)
    # 8 mm lens, 250 px per mm on the sensor at the recorded 4000x3000, image downscaled to 400x300.
    tags = {0x920A: IFDRational(8, 1), 0xA20E: IFDRational(250, 1), 0xA210: 4, 0xA002: 4000, 0xA003: 3000}
    camera = _jpeg_with_exif(tmp_path / "cam.jpg", (400, 300), tags)
    guess = intrinsics_from_exif(camera, 400, 300)
    assert guess.source == "exif-focal-plane" and guess.intrinsics.fx == pytest.approx(8 * 250 / 10)
    focal_only = _jpeg_with_exif(tmp_path / "f.jpg", (400, 300), {0x920A: IFDRational(8, 1)})
    assert intrinsics_from_exif(focal_only, 400, 300) is None
    guess = intrinsics_from_exif(focal_only, 400, 300, sensor_width_mm=6.4)
    assert guess.source == "exif-sensor" and guess.intrinsics.fx == pytest.approx(8 / 6.4 * 400)


def test_intrinsics_priority_and_default_warning(tmp_path, caplog):
    phone = _jpeg_with_exif(tmp_path / "phone.jpg", (400, 300), {0xA405: 26})
    calib = tmp_path / "cam.txt"
    calib.write_text("500 510 199.5 149.5\n")
    assert intrinsics_for_image(phone, 400, 300, calib=calib).intrinsics.fy == 510
    flags = intrinsics_for_image(phone, 400, 300, fx=300.0)
    assert flags.source == "flags" and flags.intrinsics.fy == 300.0 and flags.intrinsics.cx == 200.0
    assert intrinsics_for_image(phone, 400, 300).source == "exif-35mm"
    plain = tmp_path / "plain.png"
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(plain)
    with caplog.at_level(logging.WARNING, logger="metricslam"):
        guess = intrinsics_for_image(plain, 400, 300)
    assert guess.source == "default" and guess.intrinsics == default_intrinsics(400, 300)
    assert guess.intrinsics.fx == pytest.approx(480.0)
    assert "--fx" in caplog.text and "--calib" in caplog.text
    with pytest.raises(InputError):
        intrinsics_for_image(plain, 400, 300, cx=3.0)
    with pytest.raises(InputError):
        intrinsics_for_image(plain, 400, 300, calib=calib, fx=3.0)


def test_ply_writer_round_trip(tmp_path):
    import open3d as o3d

    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    colors = rng.integers(0, 255, (50, 3), dtype=np.uint8)
    normals = rng.normal(size=(50, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    write_ply(tmp_path / "c.ply", points, colors, normals)
    assert (tmp_path / "c.ply").read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 50\n")
    cloud = o3d.io.read_point_cloud(str(tmp_path / "c.ply"))
    np.testing.assert_allclose(np.asarray(cloud.points), points, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(cloud.colors) * 255, colors, atol=1e-3)
    np.testing.assert_allclose(np.asarray(cloud.normals), normals, rtol=1e-6, atol=1e-7)
    write_ply(tmp_path / "p.ply", points)
    assert not o3d.io.read_point_cloud(str(tmp_path / "p.ply")).has_colors()
    with pytest.raises(InputError):
        write_ply(tmp_path / "bad.ply", points, colors[:10])
