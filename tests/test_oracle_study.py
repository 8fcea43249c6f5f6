"""evaluation/oracle_study.py on a tiny synthetic room: the oracle is exact, correlated noise hurts more than
independent noise of the same size, and the real flow's measured error is sub-pixel on rendered images."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "evaluation" / "oracle_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("oracle_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _rows(result) -> dict[str, float]:
    (_, rows, _), = result
    return {f"{r.correspondences}/{r.noise}/{r.prior}": r for r in rows}


def test_tiny_study(study, tmp_path):
    out = tmp_path / "oracle.md"
    runs = [study.main(["--tiny", "--max-frames", "50", "--seed", str(seed), "--out", str(out)]) for seed in (0, 1)]
    first = _rows(runs[0])
    exact = first["ground truth/none/ground truth"]
    assert exact.ate < 1e-3 and abs(exact.scale) < 1e-3  # exact correspondences and prior: the ground truth
    iid = np.mean([_rows(r)["ground truth/independent 0.65 px/ground truth"].ate for r in runs])
    corr = np.mean([_rows(r)["ground truth/correlated 0.65 px/ground truth"].ate for r in runs])
    assert 1e-3 < iid < corr  # same noise level, correlated across cells: less averages out
    (_, _, stats), = runs[0]
    assert 0.1 < stats["median"] < 1.0 and stats["p90"] > stats["median"]
    assert 0.5 < stats["corr1"] <= 1.0  # flow errors of neighbouring cells are correlated
    text = out.read_text()
    assert "| real flow | measured | simulated |" in text and "ATE SE3 (cm)" in text


def test_conclusions_are_kept(study, tmp_path):
    out = tmp_path / "oracle.md"
    out.write_text("old table\n\n## Conclusions\nhand-written\n")
    study.write_markdown(out, "# new table\n")
    assert out.read_text() == "# new table\n\n## Conclusions\nhand-written\n"
