#!/usr/bin/env bash
# Creates .venv (if needed) and installs metricslam with its extras on a fresh Debian machine.
# torch is pinned to the local CPU build where it is missing; Open3D's system library is installed when root.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${METRICSLAM_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.metricslam-installed"

if [ -f "$STAMP" ] && [ "$STAMP" -nt setup.py ] && [ "$STAMP" -nt pyproject.toml ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch 2.13.0 (CPU build)"
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
fi

if ! ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0"; then
  if [ "$(id -u)" = "0" ]; then
    echo "[setup] installing libusb-1.0-0 (needed by Open3D)"
    (apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1) || \
      (apt-get update -qq >/dev/null && apt-get install -y -qq libusb-1.0-0 >/dev/null)
  else
    echo "[setup] Open3D needs libusb-1.0-0: run 'sudo apt-get install -y libusb-1.0-0' and retry" >&2
    exit 1
  fi
fi

echo "[setup] installing metricslam and its extras"
"$VENV/bin/python" -m pip install --quiet -e ".[dev,train,viz]"
touch "$STAMP"
echo "[setup] ready: $VENV"
