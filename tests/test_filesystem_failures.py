"""benchmarks/filesystem_failures.py counts successes by task kind and by one- or two-word topic."""

import json
import subprocess
import sys
from collections import Counter
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
    table_lines = [line for line in result.stdout.splitlines() if line.startswith("|")][2:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table_lines]
    table = {(kind, words): counts for kind, words, _, counts, _ in rows}
    assert table == {key: f"{wins} / {total}" for key, (wins, total) in expected.items()}
    assert sum(total for (kind, _), (_, total) in expected.items() if kind == "all") == 20
    assert sum(wins for (kind, _), (wins, _) in expected.items() if kind == "all") == 19

    # Train topics: the (kind, topic) groups of the train split, by kind and topic length.
    train = Counter()
    for group in {task.group for task in scenario.tasks_in("train")}:
        kind, topic = group.split(":")
        train[kind, "two" if "_" in topic else "one"] += 1
    for kind, words, topics, _, _ in rows:
        expected_topics = sum(n for (k, w), n in train.items() if w == words) if kind == "all" else train[kind, words]
        assert int(topics) == expected_topics, (kind, words)
    assert sum(int(topics) for kind, _, topics, _, _ in rows if kind == "all") == sum(train.values())


def test_an_eval_of_another_scenario_is_refused(tmp_path):
    scenario = load_scenario("retail")
    data = tmp_path / "eval.jsonl"
    run_rollouts(scenario, lambda: OracleAgent(scenario), "test", 2, seed=0, out=data, progress=False)
    result = run_script("--eval", str(data), "--scenario", "filesystem")
    assert result.returncode != 0
    assert "is --scenario the one the evaluation ran on" in result.stderr


def test_counts_move_tasks_that_search_for_the_goals_contact(tmp_path):
    scenario = load_scenario("filesystem")
    data = tmp_path / "eval.jsonl"
    run_rollouts(scenario, lambda: OracleAgent(scenario), "test", 40, seed=0, out=data, progress=False)
    records = [json.loads(line) for line in data.read_text().splitlines()]
    goals = {task.id: task.goal for task in scenario.tasks}
    moves = [record for record in records if "as the contact" in goals[record["task_id"]]]
    assert len(moves) >= 3
    # One policy recalls a last name from train, another forgets the whole name.
    recalled, forgotten = (next(t for t in record["turns"] if t["role"] == "assistant") for record in moves[:2])
    first, last = json.loads(recalled["text"])["arguments"]["query"].split()
    wrong_last = "Ito" if last != "Ito" else "Kim"
    recalled["text"] = recalled["text"].replace(f"{first} {last}", f"{first} {wrong_last}")
    forgotten["text"] = "not json"
    data.write_text("".join(json.dumps(record) + "\n" for record in records))

    result = run_script("--eval", str(data), "--scenario", "filesystem")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == (
        f"move tasks whose first action names the goal's contact: {len(moves) - 2} / {len(moves)}; of the other 2, "
        f"1 kept the first name; last names written instead: {wrong_last} 1")
