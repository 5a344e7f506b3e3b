"""benchmarks/run_all.py in smoke mode: every benchmark script runs end to end, so none can rot.

The light benchmarks run in the fast suite. trl_comparison and length_bias are left out here
because their own tests (test_trl_comparison.py, test_length_bias_benchmark.py) run the same smoke
size; the heavy ones (Ray actors, RLlib, the whole pipeline) run in the slow suite.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_ALL = REPO / "benchmarks" / "run_all.py"
COVERED_ELSEWHERE = ["trl_comparison", "length_bias"]


def run_all(tmp_path: Path, *args: str) -> dict:
    completed = subprocess.run([sys.executable, str(RUN_ALL), "--smoke", "--results-dir", str(tmp_path), *args],
                               capture_output=True, text=True, cwd=REPO, timeout=1200, check=False)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return json.loads((tmp_path / "run_all_smoke.json").read_text())


def listed(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, str(RUN_ALL), "--smoke", "--list", *args], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    return [line.split()[0] for line in out.splitlines()]


def test_light_benchmarks_run_in_smoke_mode(tmp_path):
    summary = run_all(tmp_path, "--light", "--skip", *COVERED_ELSEWHERE)
    ran = [run["name"] for run in summary["runs"]]
    assert ran == [name for name in listed("--light") if name not in COVERED_ELSEWHERE]
    assert summary["failed"] == []
    # Each script wrote its own results into the smoke folder, not into benchmarks/results.
    written = {path.name for path in tmp_path.glob("*.json")}
    for prefix in ["env_throughput", "oracle_sweep", "rollout_throughput", "pair_throughput", "sft_filesystem"]:
        assert any(name.startswith(prefix) for name in written), (prefix, written)


@pytest.mark.slow
def test_heavy_benchmarks_run_in_smoke_mode(tmp_path):
    heavy = [name for name in listed() if name not in listed("--light")]
    assert heavy, "no heavy benchmark is registered"
    summary = run_all(tmp_path, "--only", *heavy)
    assert [run["name"] for run in summary["runs"]] == heavy
    assert summary["failed"] == []


def test_unknown_benchmark_names_are_refused():
    completed = subprocess.run([sys.executable, str(RUN_ALL), "--smoke", "--only", "no_such_bench"],
                               capture_output=True, text=True, cwd=REPO, check=False)
    assert completed.returncode != 0
    assert "no_such_bench" in completed.stderr and "env_throughput" in completed.stderr
