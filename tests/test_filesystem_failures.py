"""benchmarks/filesystem_failures.py counts successes by task kind and by one- or two-word topic."""

import json
import subprocess
import sys
from pathlib import Path

from trajalign.agents import OracleAgent, run_rollouts
from trajalign.envs import load_scenario

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "filesystem_failures.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_counts_by_kind_and_topic_words(tmp_path):
    scenario = load_scenario("filesystem")
    data = tmp_path / "eval.jsonl"
    run_rollouts(scenario, lambda: OracleAgent(scenario), "test", 20, seed=0, out=data, progress=False)
    records = [json.loads(line) for line in data.read_text().splitlines()]
    records[0]["status"] = "failure"  # the oracle succeeds everywhere; one failure must show in its cell
    data.write_text("".join(json.dumps(record) + "\n" for record in records))

    groups = {task.id: task.group for task in scenario.tasks}
    expected: dict[tuple[str, str], list[int]] = {}
    for record in records:
        kind, topic = groups[record["task_id"]].split(":")
        for key in ((kind, "two" if "_" in topic else "one"), ("all", "two" if "_" in topic else "one")):
            wins_total = expected.setdefault(key, [0, 0])
            wins_total[0] += record["status"] == "success"
            wins_total[1] += 1

    result = run_script("--eval", str(data), "--scenario", "filesystem")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines()[2:]]
    table = {(kind.strip(), words.strip()): counts.strip() for kind, words, counts, _ in rows}
    assert table == {key: f"{wins} / {total}" for key, (wins, total) in expected.items()}
    assert sum(total for (kind, _), (_, total) in expected.items() if kind == "all") == 20


def test_an_eval_of_another_scenario_is_refused(tmp_path):
    scenario = load_scenario("retail")
    data = tmp_path / "eval.jsonl"
    run_rollouts(scenario, lambda: OracleAgent(scenario), "test", 2, seed=0, out=data, progress=False)
    result = run_script("--eval", str(data), "--scenario", "filesystem")
    assert result.returncode != 0
    assert "is --scenario the one the evaluation ran on" in result.stderr
