import json
import re
import subprocess
import sys

from trajalign.cli import main
from trajalign.envs import Trajectory
from trajalign.envs.jsonl import read_jsonl


def test_scenarios_list_json(capsys):
    assert main(["scenarios", "list", "--kind", "tool_use", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"retail", "filesystem", "travel"} <= {row["name"] for row in rows}
    assert all(row["train_tasks"] + row["test_tasks"] >= 500 for row in rows)
    assert main(["scenarios", "list", "--kind", "web", "--json"]) == 0
    web = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in web} == {"shop", "accounts", "wiki"}
    assert all(row["kind"] == "web" and row["train_tasks"] + row["test_tasks"] >= 300 for row in web)


def test_rollout_writes_trajectories_and_summary_and_resumes(tmp_path, capsys):
    out, summary_path = tmp_path / "runs" / "noisy.jsonl", tmp_path / "summary.json"
    def rollout(episodes):
        return main(["rollout", "--scenario", "travel", "--agent", "noisy", "--split", "test", "--episodes",
                     str(episodes), "--seed", "3", "--out", str(out), "--summary-json", str(summary_path),
                     "--no-progress", "--noise", '{"wrong_argument": 0.3}'])

    assert rollout(30) == 0
    printed = capsys.readouterr().out
    summary = json.loads(summary_path.read_text())
    trajectories = read_jsonl(out, Trajectory)
    assert len(trajectories) == summary["episodes"] == 30
    assert all(t.split == "test" and t.agent == "noisy" for t in trajectories)
    assert summary["success_rate"] == sum(t.success for t in trajectories) / 30
    assert 0 < summary["success_rate"] < 1  # 30% wrong arguments must cost some episodes
    assert sum(summary["status_counts"].values()) == 30
    assert re.search(rf"success rate +{summary['success_rate']:.3f}\n", printed)

    before = out.read_bytes()
    assert rollout(40) == 0
    assert out.read_bytes().startswith(before)  # nothing rewritten
    again = read_jsonl(out, Trajectory)
    assert len(again) == 40 and again[:30] == trajectories
    assert len({(t.task_id, t.seed) for t in again}) == 40
    assert "30 episode(s) were already in" in capsys.readouterr().out


def test_rollouts_are_reproducible(tmp_path):
    for name in ("a", "b"):
        assert main(["rollout", "--scenario", "retail", "--agent", "random", "--episodes", "10", "--seed", "5",
                     "--out", str(tmp_path / f"{name}.jsonl"), "--no-progress"]) == 0
    first, second = (read_jsonl(tmp_path / f"{n}.jsonl", Trajectory) for n in "ab")
    assert [t.turns for t in first] == [t.turns for t in second]


def test_module_entry_point_shows_progress_and_reports_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trajalign", "rollout", "--scenario", "retail", "--episodes", "3",
                             "--out", str(tmp_path / "o.jsonl")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "3/3" in result.stderr and "success rate" in result.stdout
    result = subprocess.run([sys.executable, "-m", "trajalign", "rollout", "--scenario", "nope", "--out",
                             str(tmp_path / "o.jsonl")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "error: no scenario 'nope'" in result.stderr
