# The two commands a user needs: `make demo` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup bench clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) -m metricslam.cli demo --out outputs/demo

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf outputs .pytest_cache
