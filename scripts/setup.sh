#!/usr/bin/env bash
# Set up trajalign on a fresh machine: a virtual environment in .venv with the package (editable)
# and its test dependencies. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Chromium for the web and MiniWoB++ environments: Debian's package (Playwright drives it; its own
# browser download is not used). Installed when missing; needs root (CI runs as root) or sudo.
if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then
    echo "==> installing Debian's chromium"
    if [ "$(id -u)" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
    elif command -v sudo >/dev/null 2>&1; then
        sudo DEBIAN_FRONTEND=noninteractive apt-get update
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
    else
        echo "error: chromium is not installed and this user cannot install it; run: apt-get install -y chromium" >&2
        exit 1
    fi
fi

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
# Optional: TRL, for benchmarks/trl_comparison.py only (BENCH=1 bash scripts/setup.sh, or later
# .venv/bin/pip install -e '.[bench]'). The core install does not need it.
if [ "${BENCH:-0}" = "1" ]; then
    echo "==> installing the bench extra (TRL)"
    .venv/bin/pip install --quiet -e ".[bench]"
fi
# MiniWoB++'s task pages. --no-deps: only its HTML is used (located on disk, never imported), and its
# dependencies would replace the pinned gymnasium.
.venv/bin/pip install --quiet --no-deps "miniwob==1.1.0"
.venv/bin/trajalign scenarios list
echo "==> ready: .venv/bin/trajalign --help"
