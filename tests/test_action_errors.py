"""benchmarks/action_errors.py sorts actions by the error real environments answered them with."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

from trajalign.agents import AgentAction, run_episode
from trajalign.envs import make_env
from trajalign.envs.jsonl import JsonlWriter

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from action_errors import action_outcomes  # noqa: E402


class ReplayAgent:
    """Plays the given actions in order."""

    name = "replay"

    def __init__(self, actions: list[str]):
        self.actions = actions

    def reset(self, observation, info, seed=None):
        self.remaining = iter(self.actions)

    def act(self, observation, info):
        return AgentAction(text=next(self.remaining))


TOOL_USE_ACTIONS = [
    '{"name": "list_dir", "arguments": {"path": "/"',  # cut short
    '{"name": "fly", "arguments": {}}',
    '{"name": "list_dir", "arguments": {"folder": "/"}}',
    '{"name": "read_file", "arguments": {"path": "/no/such/file.txt"}}',
    '{"name": "list_dir", "arguments": {"path": "/home/user"}}',
    '{"name": "final_answer", "arguments": {"answer": "done"}}',
]
WEB_ACTIONS = [
    'click("no-such-id")',
    'type("home-link", "jeans")',  # a link, not a text field
    '{"name": "select", "arguments": {"id": "search-input"}}',  # no option
    '{"name": "fly", "arguments": {}}',
    'scroll("down")',
    'answer("done")',
]


def tool_use_episode():
    env = make_env("filesystem", max_invalid_actions=10)
    try:
        return run_episode(env, ReplayAgent(TOOL_USE_ACTIONS), seed=0)
    finally:
        env.close()


def test_tool_use_actions_by_kind():
    kinds, messages = action_outcomes([tool_use_episode()])
    assert kinds == Counter({"accepted": 2, "not one tool call": 1, "unknown tool": 1, "wrong arguments": 1,
                             "the tool or page action failed": 1})
    assert next(iter(messages["unknown tool"])).startswith("Unknown tool 'fly'")


def test_web_actions_by_kind(shared_env, tmp_path):
    env = shared_env("shop")
    trajectory = run_episode(env, ReplayAgent(WEB_ACTIONS), seed=0)
    kinds, messages = action_outcomes([trajectory])
    assert kinds == Counter({"accepted": 2, "no element with that id": 1, "wrong element or option": 1,
                             "wrong arguments": 1, "unknown tool": 1}), messages

    # The script: one column per file, the kinds of both files as rows.
    files = []
    for name, episode in (("web", trajectory), ("tool-use", tool_use_episode())):
        files.append(tmp_path / f"{name}.jsonl")
        with JsonlWriter(files[-1]) as writer:
            writer.write(episode)
    done = subprocess.run([sys.executable, str(BENCHMARKS / "action_errors.py"), *map(str, files), "--actions", "6"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in done.stdout.splitlines() if line.startswith("| ")}
    assert rows["action outcome"] == ["web.jsonl", "tool-use.jsonl"]  # named within their common folder
    assert rows["accepted"] == ["2 (33%)", "2 (33%)"]
    assert rows["no element with that id"] == ["1 (17%)", "0 (0%)"]
    assert rows["the tool or page action failed"] == ["0 (0%)", "1 (17%)"]
    assert rows["episodes"] == ["1", "1"]
    assert '- 1 x click("no-such-id") (no element with that id)' in done.stdout
    assert '- 1 x {"name": "fly", "arguments": {}} (unknown tool)' in done.stdout
    plain = subprocess.run([sys.executable, str(BENCHMARKS / "action_errors.py"), *map(str, files)],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "most common actions" not in plain.stdout, plain.stderr

    missing = subprocess.run([sys.executable, str(BENCHMARKS / "action_errors.py"), str(tmp_path / "nope.jsonl")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "nope.jsonl: no such file" in missing.stderr
