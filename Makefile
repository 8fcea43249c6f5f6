# The two commands a user needs: `make demo` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint setup bench clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) -m metricslam.cli demo --out outputs/demo --overwrite

# -p no:dash: open3d pulls in dash, whose pytest plugin only adds a deprecation warning to every run.
test: setup
	$(PY) -m pytest -q -p no:dash tests

# Lint and type checks (settings in pyproject.toml); CI runs them before the tests.
lint: setup
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

clean:
	rm -rf outputs .pytest_cache
