"""MiniWoB++ (`trajalign/MiniWoB-v0`): the installed package's task pages in Chromium, scored by their own
JavaScript."""

import json
import re
import subprocess
import sys

import pytest
from gymnasium.utils.env_checker import check_env
from trajalign.envs import Trajectory
from trajalign.envs.jsonl import read_jsonl
from trajalign.envs.miniwob import miniwob_html_dir, miniwob_scenario, miniwob_tasks, probe_tasks

import trajalign  # noqa: F401  (registers the environment ids)
from trajalign.cli import main

SCRIPTED_TASKS = ["click-test", "click-button", "enter-text", "login-user", "focus-text"]


@pytest.fixture
def miniwob_env(shared_env):
    return shared_env("miniwob")


def test_the_task_pages_are_found_without_importing_miniwob():
    code = ("import sys, trajalign.envs.miniwob as m; d = m.miniwob_html_dir(); "
            "print(len(m.miniwob_tasks()), (d / 'core' / 'core.js').is_file(), 'miniwob' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 100 and out[1:] == ["True", "False"]
    assert (miniwob_html_dir() / "miniwob" / "click-test.html").is_file() and "click-test" in miniwob_tasks()


def test_check_env_passes(miniwob_env):
    check_env(miniwob_env, skip_render_check=True)


def _elements(observation):
    """(id, role, name) of every interactive element in an observation."""
    return re.findall(r'^\s*\[([^\]]+)\] (\S+) "((?:[^"\\]|\\.)*)"', observation, re.MULTILINE)


def scripted_actions(task: str, observation: str, goal: str) -> list[str]:
    """Solutions written against the env's action interface: they read the goal and the element ids."""
    elements = _elements(observation)
    if task == "click-test":
        return [f"click({next(i for i, role, name in elements if role == 'button')})"]
    if task == "click-button":
        label = re.search(r'"(.*)"', goal).group(1)
        return [f"click({next(i for i, role, name in elements if role == 'button' and name == label)})"]
    if task == "enter-text":
        text = re.search(r'Enter "(.*)" into', goal).group(1)
        field = next(i for i, role, name in elements if role == "textbox")
        submit = next(i for i, role, name in elements if role == "button")
        return [json.dumps({"name": "type", "arguments": {"id": field, "text": text}}), f"click({submit})"]
    if task == "login-user":
        username, password = re.findall(r'"(.*?)"', goal)
        return [f"type(username, {username!r})", f"type(password, {password!r})",
                f"click({next(i for i, role, name in elements if name == 'Login')})"]
    if task == "focus-text":
        return [f"click({next(i for i, role, name in elements if role == 'textbox')})"]
    raise ValueError(task)


def test_scripted_solutions_earn_reward_from_the_pages_own_javascript(miniwob_env):
    env = miniwob_env
    for seed, task in enumerate(SCRIPTED_TASKS):
        observation, info = env.reset(options={"task_id": f"{task}/{seed}"})
        assert info["scenario"] == f"miniwob/{task}" and info["goal"]
        for action in scripted_actions(task, observation, info["goal"]):
            observation, reward, terminated, truncated, info = env.step(action)
            assert info["action_error"] is None, (task, action, info["action_error"])
        assert terminated and reward > 0 and info["status"] == "success", (task, seed, info)
        assert info["miniwob"]["done"] and info["miniwob"]["raw_reward"] == reward


def test_a_wrong_click_is_scored_by_the_page_and_seeds_are_reproducible(miniwob_env):
    env = miniwob_env
    first, info = env.reset(options={"task_id": "click-button/4"})
    again, _ = env.reset(options={"task_id": "click-button/4"})
    other, _ = env.reset(options={"task_id": "click-button/5"})
    assert first == again and first != other
    env.reset(options={"task_id": "click-button/4"})
    label = re.search(r'"(.*)"', info["goal"]).group(1)
    wrong = [i for i, role, name in _elements(first) if role == "button" and name != label]
    assert wrong, first
    observation, reward, terminated, truncated, info = env.step(f"click({wrong[0]})")
    assert terminated and reward == -1.0 and info["status"] == "failure"
    # answer() ends an episode the page has not ended, as a failure.
    env.reset(options={"task_id": "click-test/3"})
    observation, reward, terminated, truncated, info = env.step('answer("done")')
    assert (reward, terminated, info["status"]) == (0.0, True, "failure")


def test_a_few_tasks_load_and_reset(miniwob_env):
    results = probe_tasks(["click-checkboxes", "click-link", "click-tab", "no-such-task"], env=miniwob_env)
    assert [name for name, problem in results.items() if problem is None] == [
        "click-checkboxes", "click-link", "click-tab"]
    assert results["no-such-task"] == "no such task page"


@pytest.mark.slow
def test_at_least_40_tasks_load_and_reset_and_are_listed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["scenarios", "list", "--kind", "miniwob", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in rows}
    assert len(rows) >= 40 and {f"miniwob/{task}" for task in SCRIPTED_TASKS} <= names
    assert all(row["kind"] == "miniwob" for row in rows)
    assert main(["scenarios", "list", "--kind", "miniwob", "--json"]) == 0  # cached the second time
    assert json.loads(capsys.readouterr().out) == rows


def test_trajalign_rollout_plays_a_miniwob_task(tmp_path, capsys):
    out = tmp_path / "miniwob.jsonl"
    assert main(["rollout", "--scenario", "miniwob", "--task", "click-button", "--agent", "random", "--episodes", "2",
                 "--out", str(out), "--no-progress"]) == 0
    trajectories = read_jsonl(out, Trajectory)
    assert len(trajectories) == 2 and all(t.scenario == "miniwob/click-button" for t in trajectories)
    assert all(t.task_id.startswith("click-button/") and t.status != "env_error" for t in trajectories)
    assert main(["rollout", "--scenario", "miniwob", "--task", "click-button", "--agent", "oracle", "--episodes", "1",
                 "--out", str(out), "--no-progress"]) == 2
    assert "no oracle" in capsys.readouterr().err


def test_miniwob_scenario_lists_seeds_as_tasks():
    scenario = miniwob_scenario("click-test", train_seeds=5, test_seeds=2)
    assert [t.id for t in scenario.tasks_in("train")] == [f"click-test/{seed}" for seed in range(5)]
    assert [t.id for t in scenario.tasks_in("test")] == ["click-test/1000000", "click-test/1000001"]
    assert scenario.kind == "miniwob"
