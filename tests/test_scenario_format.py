"""The scenario format as a user meets it: the example in docs/scenarios.md, and broken variants."""

import json
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import trajalign  # noqa: F401
from trajalign.agents import OracleAgent, run_rollouts
from trajalign.envs import ScenarioError, load_scenario
from trajalign.envs.scenario import fresh_instances

DOCS = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"


@pytest.fixture
def todo_dir(tmp_path) -> Path:
    """Write the example scenario from docs/scenarios.md, using nothing but the docs."""
    blocks = re.findall(r"```\w+ file=(\S+)\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert {name for name, _ in blocks} == {"todo/scenario.yaml", "todo/tools.py", "todo/tasks.py"}
    for name, body in blocks:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    return tmp_path / "todo"


def test_docs_example_loads_and_runs(todo_dir, tmp_path):
    scenario = load_scenario(todo_dir)
    assert scenario.name == "todo" and len(scenario.tasks) == 40
    assert scenario.tasks_in("train") and scenario.tasks_in("test")

    env = gym.make("trajalign/ToolUse-v0", scenario=str(todo_dir))
    observation, info = env.reset(seed=0)
    task = scenario.task(info["task_id"])
    for call in task.oracle:
        observation, reward, terminated, truncated, info = env.step(call.to_text())
    assert terminated and reward == 1.0 and info["status"] == "success"

    out, summary = tmp_path / "todo.jsonl", tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "trajalign", "rollout", "--scenario", str(todo_dir), "--agent", "oracle",
         "--episodes", "5", "--out", str(out), "--summary-json", str(summary), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(summary.read_text())["success_rate"] == 1.0
    assert len(out.read_text().splitlines()) == 5


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        ("scenario.yaml", "tools:\n  - list_todos\n  - complete_todo\n", "", r"scenario\.yaml: field 'tools': Field required"),
        ("scenario.yaml", "max_turns: 8", "max_turns: many", r"scenario\.yaml: field 'limits\.max_turns': Input should be a valid integer.*got 'many'"),
        ("scenario.yaml", "test_fraction: 0.25", "test_fraction: 0.25\ncolour: blue", r"field 'colour': Extra inputs are not permitted"),
        ("scenario.yaml", "  - complete_todo", "  - complete", r"field 'tools\[1\]': 'complete' is not a function in tools\.py"),
        ("scenario.yaml", "tasks.py:generate_tasks", "tasks.py", r"field 'tasks.generator': expected 'file.py:function'"),
        ("scenario.yaml", "count: 40", "count: -1", r"field 'tasks': field 'count': Input should be greater than 0"),
        ("tools.py", "def list_todos(state: dict)", "def list_todos(state: dict\n", r"field 'tools_module': importing tools\.py failed: SyntaxError"),
        ("tools.py", "from trajalign.envs import ToolError", "import no_such_module", r"importing tools\.py failed: ModuleNotFoundError: No module named 'no_such_module' \(tools\.py line 1\)"),
        ("tools.py", '    todo["done"] = True', '    todo["done"] = 1 / 0', r"task 'todo-0': oracle step 3 \(complete_todo\): the tool raised ZeroDivisionError: division by zero \(tools\.py line \d+\)"),
        ("tools.py", "todo_id: str) -> str:", "todo_id) -> str:", r"field 'tools\[1\]': tool 'complete_todo': parameter 'todo_id' has no type annotation"),
        ("tasks.py", '"arguments": {"todo_id": target_id}', '"arguments": {"todo_id": "T0"}', r"task 'todo-0': oracle step 3 \(complete_todo\): the tool raised ToolError: no to-do item 'T0'"),
        ("tasks.py", '"required_outputs": [target_id]', '"required_outputs": ["never said"]', r"task 'todo-0': the oracle's answer lacks required outputs \['never said'\]"),
        ("tasks.py", '"goal": "I finished', '"gaol": "I finished', r"generated task 0: field 'goal': Field required"),
        ("tasks.py", "rng = random.Random(seed)", "rng = random.Random(seed); 1 / 0", r"field 'tasks\.generator': the generator raised ZeroDivisionError"),
        ("scenario.yaml", "test_fraction: 0.25", "test_fraction: 0.25\nname_swaps: SWAPS", r"field 'name_swaps': expected 'file\.py:NAME', got 'SWAPS'"),
        ("scenario.yaml", "test_fraction: 0.25", "test_fraction: 0.25\nname_swaps: tasks.py:SWAPS", r"field 'name_swaps': tasks\.py has no 'SWAPS'"),
    ],
    ids=["missing-field", "wrong-type", "unknown-field", "missing-tool", "bad-generator-ref", "bad-count",
         "syntax-error", "unimportable", "tool-raises", "untyped-tool", "oracle-fails", "oracle-answer", "bad-task", "generator-raises",
         "bad-name-swaps-ref", "missing-name-swaps"],
)
def test_broken_variants_name_what_is_wrong(todo_dir, file, old, new, expected):
    _edit(todo_dir / file, old, new)
    with pytest.raises(ScenarioError, match=expected) as error:
        load_scenario(todo_dir)
    assert str(todo_dir / "scenario.yaml") in str(error.value)


def test_name_swaps_that_are_not_fresh_are_rejected_with_the_field(todo_dir):
    _edit(todo_dir / "scenario.yaml", "test_fraction: 0.25", "test_fraction: 0.25\nname_swaps: tasks.py:SWAPS")
    (todo_dir / "tasks.py").write_text((todo_dir / "tasks.py").read_text()
                                       + "\nSWAPS = {'names': ['groceries'], 'replacements': ['groceries']}\n")
    with pytest.raises(ScenarioError, match=r"field 'name_swaps'.*must be fresh names, but \['groceries'\]"):
        load_scenario(todo_dir)


def test_cli_reports_a_broken_scenario_without_a_traceback(todo_dir):
    _edit(todo_dir / "scenario.yaml", "max_turns: 8", "max_turns: many")
    result = subprocess.run([sys.executable, "-m", "trajalign", "scenarios", "check", str(todo_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "field 'limits.max_turns'" in result.stderr and "Traceback" not in result.stderr


def test_a_tool_raising_during_an_episode_is_a_tool_error(todo_dir):
    (todo_dir / "tools.py").write_text((todo_dir / "tools.py").read_text() + '''

def flaky(state: dict, note: str) -> str:
    """Fails after changing the state."""
    state["todos"].clear()
    raise RuntimeError("backend down")
''')
    _edit(todo_dir / "scenario.yaml", "  - complete_todo\n", "  - complete_todo\n  - flaky\n")
    env = gym.make("trajalign/ToolUse-v0", scenario=str(todo_dir))
    env.reset(seed=0)
    before = json.dumps(env.unwrapped.state, sort_keys=True)
    observation, _, terminated, _, info = env.step('flaky(note="x")')
    assert info["action_error"] == "flaky raised RuntimeError: backend down"
    assert observation == "Error: flaky raised RuntimeError: backend down"
    assert not terminated and json.dumps(env.unwrapped.state, sort_keys=True) == before


def test_unknown_scenario_lists_the_built_ins():
    with pytest.raises(ScenarioError, match="built-in: .*retail"):
        load_scenario("no-such-scenario")


def test_editing_a_tools_file_is_picked_up_on_the_next_load(todo_dir):
    assert load_scenario(todo_dir) is load_scenario(todo_dir)
    _edit(todo_dir / "tools.py", '    todo["done"] = True', '    todo["done"] = 1 / 0')
    with pytest.raises(ScenarioError, match="ZeroDivisionError"):
        load_scenario(todo_dir)


def test_fresh_instances_are_new_tasks_of_the_train_groups():
    scenario = load_scenario("filesystem")
    fresh = fresh_instances(scenario, seed=1)
    train_groups = {task.group for task in scenario.tasks_in("train")}
    assert fresh.tasks and all(task.split == "train" and task.group in train_groups for task in fresh.tasks)
    assert len({task.group for task in fresh.tasks}) > 10  # many groups, not one
    originals = {task.id: task for task in scenario.tasks}
    assert all(task.id.endswith("-fresh1") for task in fresh.tasks)
    assert all(task.initial_state != originals[task.id.removesuffix("-fresh1")].initial_state for task in fresh.tasks)
    summary = run_rollouts(fresh, lambda: OracleAgent(fresh), "train", 10, seed=0, out=None, progress=False)
    assert summary.success_rate == 1.0  # each task's oracle and goal state come with it
    assert fresh_instances(scenario, seed=1).tasks == fresh.tasks  # the same seed, the same tasks


def test_fresh_instances_refuse_the_generators_own_seed_and_fixed_task_lists(todo_dir):
    with pytest.raises(ScenarioError, match="seed 7 is the generator's own seed"):
        fresh_instances(load_scenario(todo_dir), seed=7)
    todo = load_scenario(todo_dir)
    listed = yaml.safe_load((todo_dir / "scenario.yaml").read_text())
    listed["tasks"] = [task.model_dump(mode="json", exclude_none=True) for task in todo.tasks]
    (todo_dir / "scenario.yaml").write_text(yaml.safe_dump(listed))
    with pytest.raises(ScenarioError, match="fresh instances need tasks from a generator"):
        fresh_instances(load_scenario(todo_dir), seed=8)
