"""evaluation/ablation_cstm.py: the data it renders (focal scale, depth range, reuse) and its input checks."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from metricslam.training.data import AnnotationDataset
from metricslam.training.synthetic_set import HELD_OUT_FOCALS, TRAIN_FOCALS


@pytest.fixture(scope="module")
def ablation():
    path = Path(__file__).parents[1] / "evaluation" / "ablation_cstm.py"
    spec = importlib.util.spec_from_file_location("ablation_cstm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_focal_scale_scales_both_splits_and_keeps_them_disjoint(ablation):
    assert ablation.scaled_focals("train", 1.0) is None and ablation.scaled_focals("held_out", 1.0) is None
    train, held = ablation.scaled_focals("train", 0.25), ablation.scaled_focals("held_out", 0.25)
    assert train == tuple(f / 4 for f in TRAIN_FOCALS) and held == tuple(f / 4 for f in HELD_OUT_FOCALS)
    assert min(train) == 75.0 and max(train) == 375.0 and not set(train) & set(held)


def test_rendered_data_follow_the_focal_scale_and_depth_range_and_are_reused(ablation, tmp_path):
    data = ablation.render_data(tmp_path, frames=1, held_out_frames=1, seed=0, cameras_per_view=5,
                                focal_scale=0.25, max_depth=22.0)
    for split, focals in (("train", TRAIN_FOCALS), ("held_out", HELD_OUT_FOCALS)):
        for path in data[split]:
            ds = AnnotationDataset(path)
            assert sorted(e.cam_in[0] for e in ds.entries) == sorted(f / 4 for f in focals)
            depth = np.concatenate([ds.load(i).depth.ravel() for i in range(len(ds))])
            assert 0 < depth.max() <= 22.0 + 0.01
    stamp = tmp_path / "train" / "room" / "annotation.json"
    before = stamp.stat().st_mtime_ns
    assert ablation.render_data(tmp_path, 1, 1, 0, 5, 0.25, 22.0) == data and stamp.stat().st_mtime_ns == before


def test_a_depth_range_beyond_the_canonical_bins_is_a_one_line_error(ablation, tmp_path, capsys):
    # 80 m seen by a 75 px camera is 1067 canonical metres, beyond the network's 300 m.
    assert ablation.main(["--out", str(tmp_path), "--focal-scale", "0.25", "--max-depth", "80", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-depth" in err and "lower" in err
    assert not (tmp_path / "data").exists()
