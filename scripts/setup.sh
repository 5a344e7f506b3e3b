#!/usr/bin/env bash
# Set up trajalign on a fresh machine: a virtual environment in .venv with the package (editable)
# and its test dependencies. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
echo "==> installing torch (CPU build) and trajalign[dev]"
# torch first and pinned: the CPU wheel of 2.13.0 comes from local disk, an unpinned torch is a multi-GB CUDA build.
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet "torch==2.13.0"
.venv/bin/pip install --quiet -e ".[dev]"
.venv/bin/trajalign scenarios list
echo "==> ready: .venv/bin/trajalign --help"
