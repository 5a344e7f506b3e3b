"""Scripted agents: the oracle, a noisy oracle for controlled data, and a random agent."""

from __future__ import annotations

import json
import random
import re
from typing import Any

from pydantic import BaseModel, Field

from trajalign.agents.base import AgentAction
from trajalign.envs.actions import ToolCall
from trajalign.envs.scenario import FINAL_ANSWER, Scenario

_GIVE_UP_TEXT = "I could not complete the request."
# The action that ends an episode: web environments (web, MiniWoB++) call it answer(text).
_WEB_KINDS = ("web", "miniwob")


def final_answer_call(scenario: Scenario, text: str) -> ToolCall:
    """The call that gives `text` as the final answer in this scenario's environment."""
    if scenario.kind in _WEB_KINDS:
        return ToolCall(name="answer", arguments={"text": text})
    return ToolCall(name=FINAL_ANSWER, arguments={"answer": text})


def _is_final(call: ToolCall) -> bool:
    return call.name in (FINAL_ANSWER, "answer")


class OracleAgent:
    """Plays the task's oracle solution, one action per turn."""

    name = "oracle"

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self._plan: list[ToolCall] = []
        self._next = 0

    def reset(self, observation: str, info: dict[str, Any], seed: int | None = None) -> None:
        self._plan = list(self.scenario.task(info["task_id"]).oracle)
        self._next = 0

    def act(self, observation: str, info: dict[str, Any]) -> AgentAction:
        return AgentAction(self._advance().to_text())

    def _advance(self) -> ToolCall:
        if self._next >= len(self._plan):
            return final_answer_call(self.scenario, _GIVE_UP_TEXT)
        self._next += 1
        return self._plan[self._next - 1]


class NoiseRates(BaseModel):
    """Per-turn probabilities of each mistake; at most one mistake happens per turn."""

    wrong_tool: float = Field(0.05, ge=0, le=1, description="Call another tool with the intended arguments.")
    wrong_argument: float = Field(0.05, ge=0, le=1, description="Call the intended tool with one argument changed.")
    premature_answer: float = Field(0.02, ge=0, le=1, description="Answer before the work is done.")
    repeated_call: float = Field(0.05, ge=0, le=1, description="Repeat the previous action.")


class NoisyOracleAgent(OracleAgent):
    """The oracle with controlled mistakes. After a mistake it resumes the plan where it was.

    Mistakes on read-only steps usually cost a turn; mistakes on state-changing steps (a wrong id
    in a cancellation) doom the episode, as they would for a real agent.
    """

    name = "noisy"

    def __init__(self, scenario: Scenario, rates: NoiseRates | None = None, seed: int = 0):
        super().__init__(scenario)
        self.rates = rates or NoiseRates()
        self.seed = seed
        self._rng = random.Random(seed)
        self._previous: ToolCall | None = None

    def reset(self, observation: str, info: dict[str, Any], seed: int | None = None) -> None:
        super().reset(observation, info, seed)
        self._rng = random.Random(f"{self.seed}/{seed}/{info['task_id']}")
        self._previous = None

    def act(self, observation: str, info: dict[str, Any]) -> AgentAction:
        call, mistake = self._choose()
        self._previous = call
        return AgentAction(call.to_text(), mistake=mistake)

    def _choose(self) -> tuple[ToolCall, str | None]:
        """The next call, and which mistake it is (None for the plan's own step)."""
        intended = (self._plan[self._next] if self._next < len(self._plan)
                    else final_answer_call(self.scenario, _GIVE_UP_TEXT))
        roll = self._rng.random()
        rates = self.rates
        if (roll := roll - rates.wrong_tool) < 0:
            others = [name for name in self.scenario.tools if name != intended.name]
            if others:
                return ToolCall(name=self._rng.choice(others), arguments=intended.arguments), "wrong_tool"
        elif (roll := roll - rates.wrong_argument) < 0 and intended.arguments:
            return self._with_wrong_argument(intended), "wrong_argument"
        elif (roll := roll - rates.premature_answer) < 0 and not _is_final(intended):
            self._next = len(self._plan)
            return final_answer_call(self.scenario, "Done."), "premature_answer"
        elif roll - rates.repeated_call < 0 and self._previous is not None:
            return self._previous, "repeated_call"
        return self._advance(), None

    def _with_wrong_argument(self, call: ToolCall) -> ToolCall:
        key = self._rng.choice(sorted(call.arguments))
        arguments = dict(call.arguments)
        arguments[key] = _perturb(arguments[key], self._plan, self._rng)
        return ToolCall(name=call.name, arguments=arguments)


def _perturb(value: Any, plan: list[ToolCall], rng: random.Random) -> Any:
    """A plausible wrong value: another value of the same type from the plan, or an edited one."""
    same_type = [v for step in plan for v in step.arguments.values() if type(v) is type(value) and v != value]
    if same_type and rng.random() < 0.5:
        return rng.choice(same_type)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + rng.choice([-1, 1])
    if isinstance(value, str):
        if value and value[-1].isdigit():
            return value[:-1] + str((int(value[-1]) + rng.randint(1, 9)) % 10)
        return value + "x"
    if isinstance(value, list):
        return value[:-1] if len(value) > 1 else value + value
    return value


class RandomAgent:
    """Calls a random tool with random, schema-typed arguments.

    String arguments are often words taken from what the agent has seen, so some calls are valid
    and the episode moves; the rest exercise the error paths.
    """

    name = "random"

    def __init__(self, seed: int = 0, text_form_rate: float = 0.3):
        self.seed = seed
        self.text_form_rate = text_form_rate
        self._rng = random.Random(seed)
        self._tools: list[dict[str, Any]] = []
        self._seen: list[str] = []

    def reset(self, observation: str, info: dict[str, Any], seed: int | None = None) -> None:
        self._rng = random.Random(f"{self.seed}/{seed}/{info['task_id']}")
        self._tools = [schema["function"] for schema in info["tools"]]
        self._seen = []
        self._remember(observation)

    def act(self, observation: str, info: dict[str, Any]) -> AgentAction:
        self._remember(observation)
        function = self._rng.choice(self._tools)
        properties = function["parameters"].get("properties", {})
        arguments = {name: self._value(schema) for name, schema in properties.items()}
        if self._rng.random() < self.text_form_rate:
            rendered = ", ".join(f"{name}={value!r}" for name, value in arguments.items())
            return AgentAction(f"{function['name']}({rendered})")
        return AgentAction(json.dumps({"name": function["name"], "arguments": arguments}, ensure_ascii=False))

    def _remember(self, observation: str) -> None:
        self._seen = (self._seen + re.findall(r"[#\w./@-]{2,}", observation))[-200:]

    def _value(self, schema: dict[str, Any]) -> Any:
        if "enum" in schema:
            return self._rng.choice(schema["enum"])
        kind = schema.get("type")
        if kind == "integer":
            return self._rng.randint(0, 100)
        if kind == "number":
            return round(self._rng.uniform(0, 100), 2)
        if kind == "boolean":
            return self._rng.random() < 0.5
        if kind == "array":
            return [self._value(schema.get("items", {"type": "string"}))]
        if self._seen and self._rng.random() < 0.8:
            return self._rng.choice(self._seen)
        return "".join(self._rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6))
