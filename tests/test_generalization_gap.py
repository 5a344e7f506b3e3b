"""benchmarks/generalization_gap.py: the four task sets it compares, and a run of the script."""

import json
import os
import subprocess
import sys
from pathlib import Path

from trajalign.envs import load_scenario

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from generalization_gap import task_sets  # noqa: E402


def test_the_four_task_sets():
    scenario = load_scenario("filesystem")
    (_, trained, _), (_, fresh, _), (_, swapped, _), (_, test, split) = task_sets(scenario, 1)
    assert trained is scenario and test is scenario and split == "test"
    assert fresh.tasks and all(task.id.endswith("-fresh1") and task.split == "train" for task in fresh.tasks)
    assert all(task.id.endswith("-swapped") for task in swapped.tasks)
    # A set that cannot be built says why, rather than passing for a scenario without a generator.
    _, (_, fresh, _), _, _ = task_sets(scenario, 7031)  # filesystem's own generator seed
    assert isinstance(fresh, str) and "seed 7031 is the generator's own seed" in fresh


def test_the_script_reports_every_set_it_can_build(retail_model, tmp_path):
    env = {**os.environ, "TRAJALIGN_RESULTS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "generalization_gap.py"), "--model", str(retail_model),
                           "--scenario", "retail", "--episodes", "2"], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "generalization_gap_retail.json").read_text())
    # retail has a generator but no name_swaps: three sets are evaluated, the swapped one is reported n/a.
    assert [row["set"] for row in result["rows"]] == ["train tasks (fine-tuned on)", "fresh instances of train groups",
                                                      "test tasks (unseen groups)"]
    assert all(row["episodes"] == 2 for row in result["rows"])
    assert "names swapped | n/a" in (tmp_path / "generalization_gap_retail.md").read_text()
