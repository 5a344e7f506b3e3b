"""Scenarios: a YAML definition plus a Python module of tools, loaded into validated types.

A scenario folder holds `scenario.yaml` and the Python files it names (see docs/scenarios.md).
Loading validates everything up front, including each task's oracle solution, so a broken
scenario fails at load time with the file, the field or task, and the problem, not mid-rollout.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import pickle
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from trajalign.envs.actions import ActionError, ToolCall
from trajalign.envs.tools import Tool, ToolDefinitionError, tool_from_function

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "scenarios"
SCENARIO_FILE = "scenario.yaml"
# Actions every tool-use environment provides on top of the scenario's tools.
ASK_USER = "ask_user"
FINAL_ANSWER = "final_answer"
RESERVED_NAMES = (ASK_USER, FINAL_ANSWER)
_SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")

Split = Literal["train", "test"]


class ScenarioError(ValueError):
    """A scenario cannot be loaded; the message names the file, the field or task, and the problem."""


class HiddenDetail(BaseModel):
    """Something the user knows but did not say; the scripted user reveals it when asked."""

    model_config = ConfigDict(extra="forbid")
    keywords: list[str] = Field(min_length=1, description="A question mentioning any of these gets `reply`.")
    reply: str


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    goal: str = Field(min_length=1, description="The user's first message.")
    split: Split | None = Field(None, description="Assigned from `group` when omitted.")
    group: str | None = Field(
        None, description="Tasks of one group always share a split (e.g. the entity combination)."
    )
    initial_state: dict[str, Any] = Field(default_factory=dict)
    hidden: list[HiddenDetail] = Field(default_factory=list)
    required_outputs: list[str] = Field(
        default_factory=list, description="Strings the final answer must contain (case-insensitive)."
    )
    expected_state: dict[str, Any] | None = Field(
        None,
        description="Keys the final state must match. When omitted, the final state must equal the "
        "state the oracle solution leads to.",
    )
    oracle: list[ToolCall] = Field(min_length=1, description="A solution: actions that succeed.")


class TaskGenerator(BaseModel):
    model_config = ConfigDict(extra="forbid")
    generator: str = Field(description="'file.py:function'; called as function(count=..., seed=...).")
    count: int = Field(gt=0)
    seed: int = 0


def name_word_count(name: str) -> int:
    """Words in a snake_case name: 'yoga_class' has 2."""
    return name.count("_") + 1


def name_forms(name: str) -> tuple[str, str, str]:
    """How a snake_case name appears in text: in paths ('yoga_class'), as the user writes it
    ('yoga class'), and at the start of a sentence or heading ('Yoga class')."""
    spaced = name.replace("_", " ")
    return name, spaced, spaced.capitalize()


class NameSwaps(BaseModel):
    """Names in a scenario's tasks, and fresh names to put in their place in copies of SFT data.

    A small model trained on a few hundred tasks recalls the names it was shown instead of copying
    the one in front of it; copies with swapped names make recall useless (`trajalign augment`,
    docs/agents.md). Names are snake_case; each also matches as the user writes it ('yoga class',
    'Yoga class').
    """

    model_config = ConfigDict(extra="forbid")
    names: list[str] = Field(min_length=1, description="Names as tool outputs write them, e.g. 'yoga_class'.")
    replacements: list[str] = Field(min_length=1, description="Fresh names, none of them in `names`; each name "
                                    "is swapped for one with as many words.")

    @field_validator("names", "replacements")
    @classmethod
    def _snake_case(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _SNAKE_CASE.fullmatch(value):
                raise ValueError(f"{value!r} is not a snake_case name (lowercase words joined by '_', starting with "
                                 "a letter)")
        return values

    @model_validator(mode="after")
    def _fresh(self) -> "NameSwaps":
        reused = sorted(set(self.names) & set(self.replacements))
        if reused:
            raise ValueError(f"replacements must be fresh names, but {reused} are also in names")
        # A trajectory may mention every name; each needs its own replacement with as many words.
        for words in sorted(set(map(name_word_count, self.names))):
            needed = sum(name_word_count(name) == words for name in self.names)
            available = len({r for r in self.replacements if name_word_count(r) == words})
            if available < needed:
                raise ValueError(f"{needed} names have {words} word(s) but only {available} replacements do; each "
                                 "name needs its own replacement with as many words")
        return self


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_turns: int = Field(20, gt=0, description="Agent actions before the episode is truncated.")
    max_invalid_actions: int = Field(5, gt=0, description="Rejected actions before the episode ends.")
    max_action_chars: int = Field(16384, gt=0, description="Longer actions are rejected unparsed.")
    max_observation_chars: int = Field(8192, gt=0, description="Longer observations are cut.")


class UserSimulatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["scripted"] = "scripted"
    fallback_reply: str = "I have nothing to add to my request."


class ScenarioFile(BaseModel):
    """The schema of `scenario.yaml`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["tool_use", "web"] = "tool_use"  # web scenarios have their own schema (web_scenario.py)
    description: str = ""
    instructions: str = Field("", description="Extra guidance for the agent's system prompt.")
    tools_module: str = "tools.py"
    tools: list[str] = Field(min_length=1)
    tasks: Any = Field(description="A list of tasks, or a TaskGenerator mapping; validated by the loader.")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    limits: Limits = Field(default_factory=Limits)
    user_simulator: UserSimulatorSettings = Field(default_factory=UserSimulatorSettings)
    name_swaps: str | None = Field(None, description="'file.py:NAME', a mapping with 'names' and 'replacements' "
                                   "(NameSwaps) for `trajalign augment`.")


class Scenario(BaseModel):
    """A loaded scenario: resolved tools, tasks with splits, and each task's goal state."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)
    name: str
    kind: str
    description: str
    instructions: str
    path: Path  # the folder: tool and task modules are imported from it
    tools: dict[str, Tool]
    tasks: list[Task]
    limits: Limits
    user_simulator: UserSimulatorSettings
    name_swaps: NameSwaps | None = None
    file: Path | None = None  # the YAML file `load_scenario` read, which need not be named scenario.yaml
    _by_id: dict[str, Task] = PrivateAttr(default_factory=dict)
    _gold_states: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, _context: Any) -> None:
        self._by_id.update({task.id: task for task in self.tasks})

    def task(self, task_id: str) -> Task:
        try:
            return self._by_id[task_id]
        except KeyError:
            raise KeyError(f"scenario '{self.name}' has no task '{task_id}'") from None

    def tasks_in(self, split: str) -> list[Task]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return [task for task in self.tasks if task.split == split]

    def with_tasks(self, tasks: Sequence[Task], drop_failing: bool = False) -> "Scenario":
        """This scenario with other tasks (same tools and limits), each checked by replaying its oracle.

        Every task needs its split set. A task whose oracle fails raises ScenarioError naming it, or
        with `drop_failing` is left out.
        """
        if self.kind != "tool_use":  # web tasks replay their oracles in a browser (web_scenario.py)
            raise ScenarioError(f"scenario '{self.name}': only tool-use scenarios take other tasks, not {self.kind}")
        unsplit = [task.id for task in tasks if task.split is None]
        if unsplit:
            raise ScenarioError(f"scenario '{self.name}': tasks without a split: {unsplit[:5]}")
        gold_states: dict[str, dict[str, Any]] = {}
        for task in tasks:
            try:
                gold_states[task.id] = _run_oracle(self, task, self.path)  # reads only the tools
            except ScenarioError:
                if not drop_failing:
                    raise
        kept = [task for task in tasks if task.id in gold_states]
        copy = self.model_copy(update={"tasks": kept})
        copy._by_id = {task.id: task for task in kept}
        copy._gold_states = gold_states
        return copy

    def succeeded(self, task: Task, final_state: dict[str, Any], answer: str | None) -> bool:
        """Did the episode reach the task's goal state and give an answer with the required facts?"""
        if answer is None:
            return False
        if task.expected_state is not None:
            if not _matches(final_state, task.expected_state):
                return False
        elif final_state != self._gold_states[task.id]:
            return False
        folded = " ".join(answer.casefold().split())
        return all(" ".join(fact.casefold().split()) in folded for fact in task.required_outputs)


def fresh_instances(scenario: Scenario, seed: int) -> Scenario:
    """New instances of the scenario's train groups: its task generator run again with `seed`.

    The tasks get other files, people and values, and only groups with train tasks in `scenario`
    are kept, so the test split's groups stay unseen. Ids gain a `-fresh<seed>` suffix, so a new
    task never shares an id with an original. For exploring beyond the tasks a policy was fine-tuned
    on, which it may have memorized.
    """
    where = f"scenario '{scenario.name}'"
    if scenario.kind != "tool_use" or scenario.file is None:
        raise ScenarioError(f"{where}: fresh instances need a tool-use scenario loaded from its YAML file")
    spec = ScenarioFile.model_validate(yaml.safe_load(scenario.file.read_text(encoding="utf-8")))
    if not isinstance(spec.tasks, dict):
        raise ScenarioError(f"{where}: fresh instances need tasks from a generator ('tasks: {{generator: ..., "
                            f"count: ...}}' in {scenario.file}); its tasks are a fixed list")
    own_seed = spec.tasks.get("seed", TaskGenerator.model_fields["seed"].default)
    if seed == own_seed:
        raise ScenarioError(f"{where}: seed {seed} is the generator's own seed in {scenario.file}, "
                            f"which gives the same tasks; choose another")
    generated = _load_tasks(spec.model_copy(update={"tasks": {**spec.tasks, "seed": seed}}), scenario.file)
    train_groups = {task.group for task in scenario.tasks_in("train")}
    tasks = [task.model_copy(update={"id": f"{task.id}-fresh{seed}"})
             for task in _assign_splits(generated, spec.test_fraction)
             if task.split == "train" and task.group in train_groups]
    if not tasks:
        raise ScenarioError(f"{where}: the generator with seed {seed} made no tasks of the train groups")
    return scenario.with_tasks(tasks)


def copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of JSON-like state; a pickle round trip is several times faster than deepcopy."""
    return pickle.loads(pickle.dumps(state, pickle.HIGHEST_PROTOCOL))


def call_tool(tool: Tool, state: dict[str, Any], arguments: dict[str, Any]) -> Any:
    """Run a tool; if it raises, the state is restored, so a refused call changes nothing."""
    if not tool.takes_state:
        return tool.function(**arguments)
    snapshot = copy_state(state)
    try:
        return tool.function(state, **arguments)
    except BaseException:
        state.clear()
        state.update(snapshot)
        raise


def builtin_scenarios() -> list[str]:
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.parent.name for p in BUILTIN_DIR.glob(f"*/{SCENARIO_FILE}"))


def resolve_scenario_path(name_or_path: str | Path) -> Path:
    """Map a built-in scenario name or a folder / YAML path to the scenario's YAML file."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / SCENARIO_FILE
    if path.is_file():
        return path.resolve()
    builtin = BUILTIN_DIR / str(name_or_path) / SCENARIO_FILE
    if builtin.is_file():
        return builtin
    raise ScenarioError(
        f"no scenario '{name_or_path}': not a folder with {SCENARIO_FILE}, not a YAML file, and not a built-in "
        f"scenario (built-in: {', '.join(builtin_scenarios()) or 'none'})."
    )


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and validate a scenario by built-in name, folder, or YAML path (cached per file)."""
    path = resolve_scenario_path(name_or_path)
    # Keyed on the modification times of the folder's files, so an edited scenario is reloaded.
    versions = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(path.parent.iterdir()) if p.is_file())
    return _load_cached(path, versions)


@functools.lru_cache(maxsize=32)
def _load_cached(path: Path, _versions: tuple[tuple[str, int], ...]) -> Scenario:
    return _load(path)


def _load(path: Path) -> Scenario:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping of fields at the top level, got {type(raw).__name__}.")
    if raw.get("kind") == "web":  # sites instead of tools: see envs/web_scenario.py
        from trajalign.envs.web_scenario import load_web_scenario

        return load_web_scenario(path, raw)
    try:
        spec = ScenarioFile.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_describe_errors(exc, str(path))) from None

    module = _import_module(path.parent / spec.tools_module, spec.name, path, "tools_module")
    tools = {}
    for index, name in enumerate(spec.tools):
        where = f"{path}: field 'tools[{index}]'"
        if name in RESERVED_NAMES:
            raise ScenarioError(f"{where}: '{name}' is a built-in action of every environment; rename the tool.")
        function = getattr(module, name, None)
        if not callable(function):
            raise ScenarioError(f"{where}: '{name}' is not a function in {spec.tools_module}.")
        try:
            tools[name] = tool_from_function(function, name)
        except ToolDefinitionError as exc:
            raise ScenarioError(f"{where}: {exc}") from None

    tasks = _load_tasks(spec, path)
    scenario = Scenario(
        name=spec.name,
        kind=spec.kind,
        description=spec.description,
        instructions=spec.instructions,
        path=path.parent,
        file=path,
        tools=tools,
        tasks=_assign_splits(tasks, spec.test_fraction),
        limits=spec.limits,
        user_simulator=spec.user_simulator,
        name_swaps=_load_name_swaps(spec, path),
    )
    for task in scenario.tasks:
        scenario._gold_states[task.id] = _run_oracle(scenario, task, path)
    return scenario


def _load_tasks(spec: ScenarioFile, path: Path) -> list[Task]:
    if isinstance(spec.tasks, list):
        produced, origin = spec.tasks, "tasks item"
    elif isinstance(spec.tasks, dict):
        produced, origin = _generate_tasks(spec, path), "generated task"
    else:
        raise ScenarioError(
            f"{path}: field 'tasks': expected a list of tasks or a mapping with 'generator' and 'count', "
            f"got {_short_repr(spec.tasks)}."
        )
    tasks = []
    for index, item in enumerate(produced):
        try:
            tasks.append(item if isinstance(item, Task) else Task.model_validate(item))
        except ValidationError as exc:
            raise ScenarioError(_describe_errors(exc, f"{path}: {origin} {index}")) from None
    if not tasks:
        raise ScenarioError(f"{path}: field 'tasks': the scenario has no tasks.")
    seen: set[str] = set()
    for task in tasks:
        if task.id in seen:
            raise ScenarioError(f"{path}: task id '{task.id}' appears more than once.")
        seen.add(task.id)
    return tasks


def _generate_tasks(spec: ScenarioFile, path: Path) -> list[Any]:
    try:
        generator = TaskGenerator.model_validate(spec.tasks)
    except ValidationError as exc:
        raise ScenarioError(_describe_errors(exc, f"{path}: field 'tasks'")) from None
    file_name, _, function_name = generator.generator.partition(":")
    where = f"{path}: field 'tasks.generator'"
    if not function_name:
        raise ScenarioError(f"{where}: expected 'file.py:function', got {generator.generator!r}.")
    module = _import_module(path.parent / file_name, spec.name, path, "tasks.generator")
    generate = getattr(module, function_name, None)
    if not callable(generate):
        raise ScenarioError(f"{where}: '{function_name}' is not a function in {file_name}.")
    try:
        return list(generate(count=generator.count, seed=generator.seed))
    except Exception as exc:
        raise ScenarioError(f"{where}: the generator raised {_describe_exception(exc)}") from None


def _load_name_swaps(spec: ScenarioFile, path: Path) -> NameSwaps | None:
    if spec.name_swaps is None:
        return None
    where = f"{path}: field 'name_swaps'"
    file_name, _, attribute = spec.name_swaps.partition(":")
    if not attribute:
        raise ScenarioError(f"{where}: expected 'file.py:NAME', got {spec.name_swaps!r}.")
    module = _import_module(path.parent / file_name, spec.name, path, "name_swaps")
    if not hasattr(module, attribute):
        raise ScenarioError(f"{where}: {file_name} has no '{attribute}'.")
    try:
        return NameSwaps.model_validate(getattr(module, attribute))
    except ValidationError as exc:
        raise ScenarioError(_describe_errors(exc, where)) from None


def _assign_splits(tasks: Iterable[Task], test_fraction: float) -> list[Task]:
    """Give each task without a split one from a stable hash of its group (or id).

    Hashing the group keeps whole entity combinations on one side, so the test split holds
    combinations that never occur in train.
    """
    assigned = []
    for task in tasks:
        if task.split is None:
            key = (task.group or task.id).encode("utf-8")
            bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
            task = task.model_copy(update={"split": "test" if bucket < test_fraction else "train"})
        assigned.append(task)
    return assigned


def _run_oracle(scenario: Scenario, task: Task, path: Path) -> dict[str, Any]:
    """Replay a task's oracle; return the final state, or raise naming the task and the step."""
    state = copy_state(task.initial_state)
    answer = None
    for step, call in enumerate(task.oracle, start=1):
        where = f"{path}: task '{task.id}': oracle step {step} ({call.name})"
        if call.name == ASK_USER:
            continue
        if call.name == FINAL_ANSWER:
            answer = str(call.arguments.get("answer", ""))
            break
        tool = scenario.tools.get(call.name)
        if tool is None:
            raise ScenarioError(f"{where}: unknown tool '{call.name}'.")
        try:
            call_tool(tool, state, tool.bind(call))
        except ActionError as exc:
            raise ScenarioError(f"{where}: {exc}") from None
        except Exception as exc:
            raise ScenarioError(f"{where}: the tool raised {_describe_exception(exc)}") from None
    if answer is None:
        raise ScenarioError(f"{path}: task '{task.id}': the oracle never calls {FINAL_ANSWER}.")
    if task.expected_state is not None and not _matches(state, task.expected_state):
        raise ScenarioError(f"{path}: task '{task.id}': the oracle does not reach expected_state.")
    missing = [fact for fact in task.required_outputs if fact.casefold() not in answer.casefold()]
    if missing:
        raise ScenarioError(f"{path}: task '{task.id}': the oracle's answer lacks required outputs {missing}.")
    return state


def _matches(state: Any, expected: Any) -> bool:
    """True if every key in `expected` is in `state` with a matching value (recursively for dicts)."""
    if isinstance(expected, dict):
        return isinstance(state, dict) and all(k in state and _matches(state[k], v) for k, v in expected.items())
    return state == expected


def import_sibling(here: str | Path, file_name: str) -> Any:
    """Import a file next to `here` (a scenario's tasks.py importing its site.py), executed afresh on every call.

    Fresh, so a generator sees an edited site; registered in `sys.modules`, so its dataclasses and
    functions pickle. Errors are `ScenarioError`s naming the file.
    """
    here = Path(here)
    return _import_module(here.with_name(file_name), here.parent.name, here, "import")


def _import_module(file: Path, scenario_name: str, yaml_path: Path, field: str) -> Any:
    where = f"{yaml_path}: field '{field}'"
    if not file.is_file():
        raise ScenarioError(f"{where}: file {file} does not exist.")
    digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:10]
    module_name = f"trajalign_scenario_{scenario_name.replace('-', '_').replace('.', '_')}_{file.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ScenarioError(f"{where}: {file} is not an importable Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # so pickling functions and dataclasses from it works
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ScenarioError(f"{where}: importing {file.name} failed: {_describe_exception(exc)}") from None
    return module


def _describe_exception(exc: BaseException) -> str:
    """`Type: message (file.py line N)` for the innermost frame, which is where scenario code failed."""
    frames = traceback.extract_tb(exc.__traceback__)
    location = ""
    if isinstance(exc, SyntaxError) and exc.lineno:
        location = f" ({Path(exc.filename or '?').name} line {exc.lineno})"
    elif frames:
        location = f" ({Path(frames[-1].filename).name} line {frames[-1].lineno})"
    return f"{type(exc).__name__}: {exc}{location}"


def _describe_errors(exc: ValidationError, where: str) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        given = error.get("input")
        shown = "" if error["type"] == "missing" else f" (got {_short_repr(given)})"
        lines.append(f"{where}: field '{field}': {error['msg']}{shown}")
    return "\n".join(lines)


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "ASK_USER",
    "FINAL_ANSWER",
    "HiddenDetail",
    "Limits",
    "Scenario",
    "ScenarioError",
    "ScenarioFile",
    "Task",
    "TaskGenerator",
    "builtin_scenarios",
    "call_tool",
    "copy_state",
    "fresh_instances",
    "load_scenario",
]
