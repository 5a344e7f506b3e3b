"""`ToolUseEnv`: a multi-turn tool-use task as a Gymnasium environment with text in and text out.

Each step takes one action (a tool call as JSON or `name(arg=value)` text) and returns the tool's
output, the simulated user's reply, or an error the agent can act on. Bad actions never raise:
they are rejected, leave the state unchanged, and count toward the invalid-action limit.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from trajalign.envs.actions import ActionError, ToolCall, action_text, parse_action
from trajalign.envs.scenario import (
    ASK_USER,
    FINAL_ANSWER,
    Scenario,
    Task,
    call_tool,
    copy_state,
    load_scenario,
)
from trajalign.envs.spaces import UnicodeText
from trajalign.envs.tools import Tool, ToolError, tool_from_function
from trajalign.envs.user_sim import ScriptedUser, UserSimulator

RUNNING = "running"


def ask_user(message: str) -> str:
    """Send a message to the user and get their reply. Use it to ask for details the request leaves out."""
    return message


def final_answer(answer: str) -> str:
    """Give the user your final answer and end the episode. Include any facts the user asked for."""
    return answer


_BUILTIN_ACTIONS = {ASK_USER: tool_from_function(ask_user), FINAL_ANSWER: tool_from_function(final_answer)}


@dataclass(frozen=True, eq=False)
class StepTiming:
    """Wall-clock seconds spent in a step and in its tool call.

    Measurements differ from run to run while the episode does not, so every two `StepTiming`s compare
    equal: an info dict is equal across reruns of the same seed and actions.
    """

    step_s: float
    tool_s: float = 0.0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepTiming)

    def __hash__(self) -> int:
        return hash(StepTiming)


class ToolUseEnv(gym.Env[str, str]):
    """Multi-turn tool use over a scenario's tasks.

    Args:
        scenario: a built-in scenario name, a scenario folder or YAML path, or a loaded `Scenario`.
        split: which tasks `reset` draws from, "train" or "test".
        user_simulator: answers `ask_user`; defaults to the scenario's scripted user.
        max_turns, max_invalid_actions: override the scenario's limits.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        scenario: str | Path | Scenario = "retail",
        split: str = "train",
        user_simulator: UserSimulator | None = None,
        max_turns: int | None = None,
        max_invalid_actions: int | None = None,
        render_mode: str | None = None,
    ):
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        if self.scenario.kind != "tool_use":
            raise ValueError(f"scenario '{self.scenario.name}' is a {self.scenario.kind} scenario, not tool_use")
        self.split = split
        self.tasks = self.scenario.tasks_in(split)
        if not self.tasks:
            raise ValueError(f"scenario '{self.scenario.name}' has no tasks in split '{split}'")
        limits = self.scenario.limits
        self.max_turns = max_turns or limits.max_turns
        self.max_invalid_actions = max_invalid_actions or limits.max_invalid_actions
        self.max_action_chars = limits.max_action_chars
        self.max_observation_chars = limits.max_observation_chars
        self.user = user_simulator or ScriptedUser(self.scenario.user_simulator.fallback_reply)
        self.render_mode = render_mode
        self.action_space = UnicodeText(self.max_action_chars)
        self.observation_space = UnicodeText(max(self.max_observation_chars, max(len(t.goal) for t in self.tasks)))
        self._actions: dict[str, Tool] = {**self.scenario.tools, **_BUILTIN_ACTIONS}
        self.tool_schemas = [tool.openai_schema() for tool in self._actions.values()]

        self.task: Task | None = None
        self.state: dict[str, Any] = {}
        self.status = RUNNING
        self.turn = 0
        self.invalid_actions = 0
        self.answer: str | None = None
        self._last_observation = ""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        task_id = (options or {}).get("task_id")
        if task_id is None:
            self.task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        else:
            self.task = self.scenario.task(task_id)
            if self.task.split != self.split:
                raise ValueError(f"task '{task_id}' is in split '{self.task.split}', this env serves '{self.split}'")
        self.state = copy_state(self.task.initial_state)
        self.status = RUNNING
        self.turn = 0
        self.invalid_actions = 0
        self.answer = None
        self._last_observation = self.task.goal
        info = {
            "task_id": self.task.id,
            "scenario": self.scenario.name,
            "split": self.split,
            "goal": self.task.goal,
            "instructions": self.scenario.instructions,
            "tools": self.tool_schemas,
            "max_turns": self.max_turns,
            "status": RUNNING,
            "action_error": None,
            "observation_role": "user",
        }
        return self.task.goal, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.task is None or self.status != RUNNING:
            raise RuntimeError("The episode is over (or never started): call reset() before step().")
        started = time.perf_counter()
        self.turn += 1
        role, action_error, tool_s = "tool", None, 0.0
        try:
            call = parse_action(action_text(action, self.max_action_chars))
            observation, role, tool_s = self._dispatch(call)
        except ActionError as exc:
            action_error = str(exc)
            observation = f"Error: {action_error}"
            self.invalid_actions += 1

        reward, terminated, truncated = 0.0, False, False
        if self.status == "env_error":
            terminated = True
        elif self.answer is not None:
            terminated = True
            success = self.scenario.succeeded(self.task, self.state, self.answer)
            self.status, reward = ("success", 1.0) if success else ("failure", 0.0)
        elif self.invalid_actions >= self.max_invalid_actions:
            terminated, self.status = True, "invalid_action_limit"
        elif self.turn >= self.max_turns:
            truncated, self.status = True, "truncated"

        if len(observation) > self.max_observation_chars:
            observation = observation[: self.max_observation_chars - 20] + " ...[output cut]"
        self._last_observation = observation
        info = {
            "task_id": self.task.id,
            "status": self.status,
            "action_error": action_error,
            "observation_role": role,
            "turn": self.turn,
            "invalid_actions": self.invalid_actions,
            "timing": StepTiming(step_s=time.perf_counter() - started, tool_s=tool_s),
        }
        return observation, reward, terminated, truncated, info

    def render(self) -> str | None:
        return self._last_observation if self.render_mode == "ansi" else None


    def _dispatch(self, call: ToolCall) -> tuple[str, str, float]:
        """Run a parsed call; return (observation, observation role, seconds in the tool)."""
        tool = self._actions.get(call.name)
        if tool is None:
            raise ActionError(f"Unknown tool {call.name[:60]!r}. Available: {', '.join(self._actions)}.")
        arguments = tool.bind(call)
        if call.name == FINAL_ANSWER:
            self.answer = arguments["answer"]
            return "Answer received. The episode is over.", "tool", 0.0
        if call.name == ASK_USER:
            try:
                return str(self.user.reply(self.task, arguments["message"])), "user", 0.0
            except Exception as exc:  # the simulator is infrastructure, not the agent's fault
                self.status = "env_error"
                return f"The user simulator failed: {type(exc).__name__}: {exc}", "user", 0.0
        started = time.perf_counter()
        try:
            observation = _render_result(call_tool(tool, self.state, arguments))
        except ToolError as exc:
            raise ActionError(f"{call.name} failed: {exc}") from None
        except Exception as exc:
            raise ActionError(f"{call.name} raised {type(exc).__name__}: {exc}") from None
        return observation, "tool", time.perf_counter() - started


def _render_result(result: Any) -> str:
    if isinstance(result, str):
        return result
    return json.dumps(result, ensure_ascii=False, default=str)
