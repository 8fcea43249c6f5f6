"""The package's top-level names: what `import metricslam` gives a script."""
from __future__ import annotations

import subprocess
import sys

import metricslam


def test_all_lists_every_export_and_each_resolves():
    assert sorted(metricslam.__all__) == sorted([*metricslam._EXPORTS, "__version__"])
    for name in metricslam._EXPORTS:
        obj = getattr(metricslam, name)
        assert obj.__module__.startswith(metricslam._EXPORTS[name]), name
        assert obj.__doc__, f"{name} has no docstring"


def test_unknown_name_raises_attribute_error():
    try:
        metricslam.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_from_another_directory(tmp_path):
    code = ("import metricslam as m; m.Slam; m.SlamConfig; m.open_sequence; m.Metric3DPredictor; "
            "print(m.SlamConfig().prior.kind)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in {"none", "simulated"}
