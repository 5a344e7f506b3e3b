"""Token-level conversation layout from a tokenizer's chat template.

Token-in-token-out: a conversation is a concatenation of per-turn token segments. Assistant
segments are the exact tokens the policy sampled (ending with the stop token); every other
segment is the template's rendering of that message, plus whatever the template put after the
previous assistant's stop token, plus the generation prompt for the next action. Training
concatenates the same segments, so it never re-tokenizes text the model produced.

The template must render a conversation as a concatenation of per-message pieces (true of
common chat templates); `ChatFormat` checks this when it is built and says so if not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trajalign.envs import Scenario, make_env
from trajalign.envs.trajectory import Trajectory, Turn

_PROBE = "\x00PROBE\x00"


def system_prompt(info: dict[str, Any]) -> str:
    """The agent's instructions: the scenario's guidance, the tools, and the action format.

    Tools are listed as one signature line each rather than as JSON schemas: the same information
    in about a third of the tokens, which matters for every forward pass over the conversation.
    """
    tools = "\n".join(f"- {_signature(schema['function'])}" for schema in info["tools"])
    names = [schema["function"]["name"] for schema in info["tools"]]
    # Tool-use scenarios end with final_answer, web pages with answer.
    finish = next((name for name in ("final_answer", "answer") if name in names), None)
    parts = [
        "You are an agent that completes the user's request by calling tools, one call per turn.",
        " ".join(info.get("instructions", "").split()),
        f"Tools:\n{tools}",
        'Reply with exactly one tool call as JSON: {"name": "<tool>", "arguments": {...}}.'
        + (f" Call {finish} when the request is done." if finish else ""),
    ]
    return "\n\n".join(part for part in parts if part)


def scenario_system_prompt(scenario: Scenario) -> str:
    """The system prompt an episode of `scenario` starts with (for data recorded without one)."""
    env = make_env(scenario)
    try:
        return system_prompt({"tools": env.unwrapped.tool_schemas, "instructions": scenario.instructions})
    finally:
        env.close()


def _signature(function: dict[str, Any]) -> str:
    parameters = function.get("parameters", {})
    required = set(parameters.get("required", []))
    rendered = []
    for name, schema in parameters.get("properties", {}).items():
        text = f"{name}: {_type_name(schema)}"
        if name not in required:
            text += f" = {json.dumps(schema.get('default'))}"
        rendered.append(text)
    return f"{function['name']}({', '.join(rendered)}): {function.get('description', '')}".rstrip(": ")


def _type_name(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    if "anyOf" in schema:
        return " | ".join(_type_name(option) for option in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list[{_type_name(schema.get('items', {}))}]"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "object": "dict",
            "null": "null"}.get(kind, str(kind))


@dataclass(frozen=True)
class _Wrapper:
    before: str
    after: str


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be used token-in-token-out."""


class ChatFormat:
    """Renders conversation segments with a tokenizer's chat template.

    Observations use the template's `tool` role when it has one and fall back to `user`;
    templates without a system role get the system prompt folded into the first user message.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        if getattr(tokenizer, "chat_template", None) is None:
            raise ChatTemplateError("the tokenizer has no chat template; set tokenizer.chat_template")
        self.stop_text, self.stop_ids = self._stop()
        self.has_system = self._supports("system")
        self._head = [{"role": "system", "content": "rules"}] if self.has_system else []
        self.observation_role = "tool" if self._supports("tool") else "user"
        # The first message's wrapper also holds whatever the template puts at the very start (a BOS).
        first = "system" if self.has_system else "user"
        self._first = _partition(self._apply([{"role": first, "content": _PROBE}]))
        self._wrappers = {role: self._wrapper(role) for role in {"user", "assistant", self.observation_role}}
        self.generation_prompt = self._generation_prompt()
        assistant_after = self._wrappers["assistant"].after
        if not assistant_after.startswith(self.stop_text):
            raise ChatTemplateError(
                f"the template ends assistant messages with {assistant_after!r}, which does not start with the "
                f"stop token {self.stop_text!r}; generation could not stop where the template expects"
            )
        # What the template writes after the stop token belongs to the next (context) segment.
        self._after_stop = assistant_after[len(self.stop_text):]
        self._check_concatenation()

    # ---- segments -------------------------------------------------------------------------------

    def prompt_segments(self, system: str, goal: str) -> tuple[list[int], list[int]]:
        """Token ids of the system segment and of the first user segment (ending with the generation prompt)."""
        if self.has_system:
            system_text = self._first.before + system + self._first.after
            user_text = self._render("user", goal)
        else:
            system_text, user_text = "", self._first.before + f"{system}\n\n{goal}" + self._first.after
        return self.encode(system_text), self.encode(user_text + self.generation_prompt)

    def observation_segment(self, role: str, text: str) -> list[int]:
        """Token ids that follow an assistant turn: the message, then the next generation prompt."""
        role = "user" if role == "user" else self.observation_role
        return self.encode(self._after_stop + self._render(role, text) + self.generation_prompt)

    def assistant_segment(self, text: str) -> list[int]:
        """Token ids of an assistant message given as text (scripted agents, imported data)."""
        return self.encode(text) + self.stop_ids

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def trajectory_segments(self, trajectory: Trajectory, system: str) -> list[tuple[Turn, list[int]]]:
        """Each turn with its token ids: recorded ids where the trajectory has them, rendered otherwise."""
        return self.turn_segments(trajectory.turns, system)

    def turn_segments(self, turns: list[Turn], system: str) -> list[tuple[Turn, list[int]]]:
        """`trajectory_segments` of a conversation given as turns (a trajectory, or a pair's prefix plus one side).

        `system` is used when the turns do not start with a system turn (text-only records).
        """
        segments: list[tuple[Turn, list[int]]] = []
        turns = list(turns)
        if turns and turns[0].role == "system":
            system_turn, turns = turns[0], turns[1:]
            system = system_turn.text
        else:
            system_turn = Turn(role="system", text=system)
        goal = turns[0]
        system_ids, goal_ids = self.prompt_segments(system, goal.text)
        segments.append((system_turn, system_turn.token_ids if system_turn.token_ids is not None else system_ids))
        segments.append((goal, goal.token_ids if goal.token_ids is not None else goal_ids))
        for turn in turns[1:]:
            if turn.token_ids is not None:
                ids = turn.token_ids
            elif turn.role == "assistant":
                ids = self.assistant_segment(turn.text)
            else:
                ids = self.observation_segment(turn.role, turn.text)
            segments.append((turn, ids))
        return segments

    # ---- template probing -----------------------------------------------------------------------

    def _stop(self) -> tuple[str, list[int]]:
        token = self.tokenizer.eos_token
        if not token:
            raise ChatTemplateError("the tokenizer has no eos_token to stop generation at")
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        return token, ids

    def _apply(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _supports(self, role: str) -> bool:
        messages = [{"role": "system", "content": _PROBE}] if role == "system" else [
            *self._head, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": role, "content": _PROBE}]
        try:
            rendered = self._apply(messages)
        except Exception:  # templates raise on roles they reject
            return False
        return _PROBE in rendered

    def _wrapper(self, role: str) -> _Wrapper:
        """What the template puts around a message of `role` that follows others."""
        anchor = [*self._head, {"role": "user", "content": "a"}]
        if role != "assistant":
            anchor.append({"role": "assistant", "content": "b"})
        before, full = self._apply(anchor), self._apply([*anchor, {"role": role, "content": _PROBE}])
        if not full.startswith(before):
            raise ChatTemplateError(f"adding a {role} message re-renders the earlier ones; token-in-token-out needs appending")
        return _partition(full[len(before):])

    def _render(self, role: str, content: str) -> str:
        wrapper = self._wrappers[role]
        return wrapper.before + content + wrapper.after

    def _generation_prompt(self) -> str:
        messages = [{"role": "user", "content": _PROBE}]
        plain, prompted = self._apply(messages), self._apply(messages, add_generation_prompt=True)
        if not prompted.startswith(plain):
            raise ChatTemplateError("add_generation_prompt changes the rendered messages instead of appending")
        return prompted[len(plain):]

    def _check_concatenation(self) -> None:
        messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "act"},
                    {"role": self.observation_role, "content": "seen"}, {"role": "assistant", "content": "again"}]
        if self.has_system:
            messages.insert(0, {"role": "system", "content": "rules"})
        expected = self._apply(messages)
        first = messages[0]
        pieces = self._first.before + first["content"] + self._first.after
        pieces += "".join(self._render(m["role"], m["content"]) for m in messages[1:])
        if pieces != expected:
            raise ChatTemplateError(
                "the chat template does not render a conversation as a concatenation of its messages "
                f"(rendered {expected[:200]!r}, pieces give {pieces[:200]!r}); token-in-token-out needs that"
            )


def _partition(rendered: str) -> _Wrapper:
    before, _, after = rendered.partition(_PROBE)
    return _Wrapper(before, after)


def trajectory_tokens(fmt: ChatFormat, trajectory: Trajectory, system: str) -> tuple[list[int], list[int]]:
    """The trajectory as one token sequence and, per token, the index of its turn (-1 for untrained)."""
    ids: list[int] = []
    turn_index: list[int] = []
    for index, (turn, segment) in enumerate(fmt.trajectory_segments(trajectory, system)):
        ids.extend(segment)
        turn_index.extend([index if turn.trainable else -1] * len(segment))
    return ids, turn_index
