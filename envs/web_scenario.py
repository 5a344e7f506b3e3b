"""Web scenarios: `kind: web` YAML plus a Python site class and a seeded task generator.

Same shape as the tool-use scenarios (docs/scenarios.md), with `site:` in place of `tools:`:

    name: shop
    kind: web
    site: site.py:ShopSite        # class(initial_state) with handle(request) and state
    reward: site.py:reward        # optional: reward(task, state, answer) -> float in [0, 1]
    start_path: /
    tasks: {generator: tasks.py:generate_tasks, count: 400, seed: 7}

Each task's `oracle` is a list of web actions (`click`, `type`, ...) on the ids the site's HTML
gives its elements. Loading replays every oracle against the site without a browser
(envs/site_replay.py); a step that does not work names the task, the step and the problem.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from trajalign.envs.actions import ActionError
from trajalign.envs.scenario import (
    Limits,
    Scenario,
    ScenarioError,
    Task,
    _assign_splits,
    _describe_errors,
    _describe_exception,
    _import_module,
    _load_tasks,
    _matches,
    copy_state,
)
from trajalign.envs.site_replay import SiteReplayer
from trajalign.envs.web_actions import WEB_TOOLS


class WebLimits(Limits):
    max_observation_chars: int = Field(16000, gt=0, description="Longer observations are cut.")


class WebScenarioFile(BaseModel):
    """The schema of a `kind: web` scenario.yaml."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["web"]
    description: str = ""
    instructions: str = Field("", description="Extra guidance for the agent's system prompt.")
    site: str = Field(description="'file.py:ClassName': built once per episode from the task's initial_state.")
    host: str | None = Field(None, pattern=r"^[a-z0-9.-]+$", description="Host name the site is served as; "
                             "default '<name>.test'.")
    start_path: str = Field("/", pattern=r"^/")
    reward: str | None = Field(None, description="'file.py:function' called as function(task, state, answer) -> "
                               "float in [0, 1]; it then owns the success check and reads what it needs from the "
                               "task (e.g. expected_state). Default: 1.0 when the task's success check passes "
                               "(expected_state or the oracle's end state, and required_outputs), else 0.0.")
    tasks: Any = Field(description="A list of tasks, or a TaskGenerator mapping; validated by the loader.")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    limits: WebLimits = Field(default_factory=WebLimits)


class WebScenario(Scenario):
    """A loaded web scenario: the site class, the reward, and each task's oracle end state."""

    site_factory: Any
    reward_function: Any = None
    host: str
    start_path: str = "/"

    @property
    def origin(self) -> str:
        return f"http://{self.host}"

    def make_site(self, task: Task) -> Any:
        """A fresh site for one episode of `task`."""
        return self.site_factory(copy_state(task.initial_state))

    def score(self, task: Task, state: dict[str, Any], answer: str | None) -> float:
        """The episode's reward in [0, 1] from the site's final state and the agent's answer."""
        if self.reward_function is None:
            return 1.0 if self.succeeded(task, state, answer) else 0.0
        value = float(self.reward_function(task, state, answer))
        if math.isnan(value):
            raise ValueError(f"scenario '{self.name}': reward() returned NaN for task '{task.id}'")
        return min(1.0, max(0.0, value))


def load_web_scenario(path: Path, raw: dict[str, Any]) -> WebScenario:
    try:
        spec = WebScenarioFile.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_describe_errors(exc, str(path))) from None
    site_factory = _load_callable(spec.site, path, spec.name, "site")
    reward_function = _load_callable(spec.reward, path, spec.name, "reward") if spec.reward else None
    if reward_function is not None:
        try:
            inspect.signature(reward_function).bind(None, None, None)
        except TypeError:
            raise ScenarioError(f"{path}: field 'reward': {spec.reward} must take (task, state, answer).") from None
    tasks = _load_tasks(spec, path)
    scenario = WebScenario(
        name=spec.name,
        kind="web",
        description=spec.description,
        instructions=spec.instructions,
        path=path.parent,
        file=path,
        tools=dict(WEB_TOOLS),
        tasks=_assign_splits(tasks, spec.test_fraction),
        limits=spec.limits,
        user_simulator={},
        site_factory=site_factory,
        reward_function=reward_function,
        host=spec.host or f"{spec.name.lower().replace('_', '-')}.test",
        start_path=spec.start_path,
    )
    for task in scenario.tasks:
        scenario._gold_states[task.id] = replay_oracle(scenario, task, path)
    return scenario


def replay_oracle(scenario: WebScenario, task: Task, path: Path | str = "") -> dict[str, Any]:
    """Play a task's oracle against a fresh site without a browser; return the site's final state.

    Raises `ScenarioError` naming the task and the step if an action fails, the oracle never
    answers, or the result does not meet the task's success check with a reward of 1.0.
    """
    where = f"{path or scenario.path}: task '{task.id}'"
    try:
        site = scenario.make_site(task)
        replayer = SiteReplayer(site, scenario.host, scenario.start_path)
    except Exception as exc:
        raise ScenarioError(f"{where}: building the site or opening {scenario.start_path} raised "
                            f"{_describe_exception(exc)}") from None
    answer = None
    for step, call in enumerate(task.oracle, start=1):
        try:
            answer = replayer.act(call)
        except ActionError as exc:
            raise ScenarioError(f"{where}: oracle step {step} ({call.name}): {exc}") from None
        except Exception as exc:
            raise ScenarioError(f"{where}: oracle step {step} ({call.name}): the site raised "
                                f"{_describe_exception(exc)}") from None
        if call.name == "answer":
            break
    if answer is None:
        raise ScenarioError(f"{where}: the oracle never calls answer.")
    state = copy_state(site.state)
    if scenario.reward_function is None and task.expected_state is not None \
            and not _matches(state, task.expected_state):
        raise ScenarioError(f"{where}: the oracle does not reach expected_state.")
    missing = [fact for fact in task.required_outputs if fact.casefold() not in answer.casefold()]
    if missing:
        raise ScenarioError(f"{where}: the oracle's answer lacks required outputs {missing}.")
    if scenario.reward_function is not None:
        try:
            reward = scenario.score(task, state, answer)
        except Exception as exc:
            raise ScenarioError(f"{where}: reward() raised {_describe_exception(exc)}") from None
        if reward < 1.0:
            raise ScenarioError(f"{where}: the oracle's reward is {reward:.3f}, not 1.0.")
    return state


def _load_callable(reference: str, path: Path, name: str, field: str) -> Any:
    file_name, _, attribute = reference.partition(":")
    if not attribute:
        raise ScenarioError(f"{path}: field '{field}': expected 'file.py:name', got {reference!r}.")
    module = _import_module(path.parent / file_name, name, path, field)
    value = getattr(module, attribute, None)
    if not callable(value):
        raise ScenarioError(f"{path}: field '{field}': '{attribute}' is not defined in {file_name}.")
    return value
