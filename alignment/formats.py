"""Preference pairs in other tools' formats, out and back in: TRL, OpenAI DPO fine-tuning, ShareGPT.

One JSON object per line in each format. Roles map as follows (observations are the environment's
`tool` and `observation` turns):

========  ============================  =====================================  =================
format    prefix                        chosen / rejected                      observations
========  ============================  =====================================  =================
trl       "prompt": [messages]          "chosen"/"rejected": [messages]        role "tool"
openai    "input": {"messages": [...]}  "preferred_output"/"non_preferred_     role "user"
                                        output": [one assistant message]
sharegpt  "conversations": [messages]   "chosen"/"rejected": [messages]        from "tool"
========  ============================  =====================================  =================

- **trl**: TRL's conversational preference format; messages are `{"role", "content"}`. Multi-turn
  continuations are written whole. TRL scores every completion token, observations included, so
  for multi-turn pairs it is an approximation of the step-wise loss (trajalign's trainer masks them).
- **openai**: OpenAI's preference fine-tuning format allows exactly one assistant message per
  output, so a multi-action continuation cannot be written faithfully. By default
  (`openai_multi_turn="error"`) such pairs are refused before anything is written, with a count;
  pairs whose sides hold one action each are written with the trailing observation dropped (it is
  never trained). With `openai_multi_turn="first_action"` each side is cut to its first action, the
  one taken at the branch state (for branch pairs, where the Monte-Carlo credit is assigned);
  pairs whose first actions are identical (common for outcome pairs) are skipped and counted.
  Observations in the prompt are `user` messages: actions are plain text here, not OpenAI tool
  calls, and a `tool` message would need a tool call id.
- **sharegpt**: `{"conversations": [...], "chosen": [...], "rejected": [...]}` with messages
  `{"from": "system|human|gpt|tool", "value": str, "loss": bool}`. `chosen` and `rejected` are always
  lists (a multi-turn continuation is several messages), `loss` is true on trainable assistant turns
  and false elsewhere; the prefix's messages always have loss false (the shared prefix is context).
  LLaMA-Factory's single-message form (`"chosen": {"from": "gpt", "value": ...}`) is accepted on import.

Exports carry text only: token ids, log-probs, values, ids and metadata stay in trajalign's own
pairs files. Imports give text-only turns; assistant turns of a continuation are trainable (in
ShareGPT, unless `loss` is false), assistant turns of the prompt are context. The prompt must end
with a non-assistant message. A TRL row without `prompt` (TRL's implicit-prompt form) is split
where `chosen` and `rejected` diverge; if they share no prompt, that is an error. The scenario is
not part of these formats: it is given on import; the task id is derived from the goal text.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import RootModel, ValidationError

from trajalign.alignment.pairs import PreferencePair, Source
from trajalign.envs.jsonl import BadLine, atomic_jsonl
from trajalign.envs.trajectory import Turn

log = logging.getLogger(__name__)

Format = Literal["trl", "openai", "sharegpt"]
FORMATS: tuple[str, ...] = Format.__args__
OpenAIMultiTurn = Literal["error", "first_action"]


class FormatError(ValueError):
    """Pairs cannot be written in, or read from, a format; the message says where and why."""


class RowError(ValueError):
    """One row of a file does not hold a valid pair; the message names the field and the problem."""


@dataclass
class ExportStats:
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    trimmed: int = 0  # openai "first_action": pairs cut to their first action

    def summary(self) -> str:
        text = f"{self.written} pairs written"
        if self.trimmed:
            text += f" ({self.trimmed} cut to their first action)"
        if self.skipped:
            text += "; skipped: " + ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items()))
        return text


class _Row(RootModel[dict[str, Any]]):
    """A JSON object, so rows go through the JSONL writer like every other record."""


# ---- export ----------------------------------------------------------------------------------------

_TRL_ROLE = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool", "observation": "tool"}
_OPENAI_ROLE = {"system": "system", "user": "user", "assistant": "assistant", "tool": "user", "observation": "user"}
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt", "tool": "tool", "observation": "tool"}


def export_pairs(
    pairs: Iterable[PreferencePair],
    path: str | Path,
    format: Format,
    *,
    openai_multi_turn: OpenAIMultiTurn = "error",
    system_prompt: Callable[[str], str | None] | None = None,
) -> ExportStats:
    """Write pairs to `path` in `format`, replacing the file (it is derived data); returns what was written.

    `system_prompt(scenario)` supplies a system message for pairs recorded without one (scripted
    agents' data); without it such pairs are written without a system message.
    Raises `FormatError` (and writes nothing) for openai exports of multi-action continuations
    unless `openai_multi_turn="first_action"`.
    """
    if format not in FORMATS:
        raise FormatError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    pairs = list(pairs)
    if format == "openai" and openai_multi_turn == "error":
        multi = sum(_actions(pair.chosen) > 1 or _actions(pair.rejected) > 1 for pair in pairs)
        if multi:
            raise FormatError(
                f"{multi} of {len(pairs)} pairs have a continuation with more than one action; OpenAI's preference "
                "format holds a single assistant message per output. Export them with openai_multi_turn='first_action' "
                "(CLI: --openai-multi-turn first_action) to keep each side's action at the branch state only, or use "
                "the trl or sharegpt format, which keep whole continuations."
            )
    stats = ExportStats()
    with atomic_jsonl(path) as writer:
        for pair in pairs:
            row = _export_row(pair, format, system_prompt, stats)
            if row is not None:
                writer.write(_Row(row))
                stats.written += 1
    return stats


def _export_row(pair: PreferencePair, format: str, system_prompt: Callable[[str], str | None] | None,
                stats: ExportStats) -> dict[str, Any] | None:
    prefix = list(pair.prefix)
    if system_prompt is not None and prefix[0].role != "system":
        text = system_prompt(pair.scenario)
        if text is not None:
            prefix.insert(0, Turn(role="system", text=text))
    if format == "trl":
        def message(turn: Turn) -> dict[str, Any]:
            return {"role": _TRL_ROLE[turn.role], "content": turn.text}
        return {"prompt": [message(t) for t in prefix], "chosen": [message(t) for t in pair.chosen],
                "rejected": [message(t) for t in pair.rejected]}
    if format == "sharegpt":
        def message(turn: Turn, context: bool = False) -> dict[str, Any]:
            return {"from": _SHAREGPT_FROM[turn.role], "value": turn.text, "loss": turn.trainable and not context}
        return {"conversations": [message(t, context=True) for t in prefix],
                "chosen": [message(t) for t in pair.chosen], "rejected": [message(t) for t in pair.rejected]}
    chosen, rejected = pair.chosen[:1], pair.rejected[:1]  # openai: one assistant message per side
    if _actions(pair.chosen) > 1 or _actions(pair.rejected) > 1:
        if chosen[0].text == rejected[0].text:
            stats.skipped["same_first_action"] += 1
            return None
        stats.trimmed += 1

    def openai_message(turn: Turn) -> dict[str, Any]:
        return {"role": _OPENAI_ROLE[turn.role], "content": turn.text}
    return {"input": {"messages": [openai_message(t) for t in prefix]},
            "preferred_output": [openai_message(t) for t in chosen],
            "non_preferred_output": [openai_message(t) for t in rejected]}


def _actions(turns: list[Turn]) -> int:
    return sum(turn.role == "assistant" for turn in turns)


# ---- import ----------------------------------------------------------------------------------------

_ROLES = {
    "system": "system", "developer": "system",
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant", "function_call": "assistant",
    "tool": "tool", "function": "tool", "ipython": "tool", "observation": "tool",
}


def import_pairs(
    path: str | Path,
    format: Format,
    scenario: str = "imported",
    *,
    source: Source = "human",
    bad_lines: list[BadLine] | None = None,
) -> list[PreferencePair]:
    """Read a file in `format` into pairs of `scenario`.

    A bad line raises `FormatError` naming the file, the line and the problem; pass a list as
    `bad_lines` to collect such lines there instead (they are logged and skipped). Pair ids are
    hashes of the pair's content, so importing the same data again gives the same ids.
    """
    if format not in FORMATS:
        raise FormatError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    pairs: list[PreferencePair] = []
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                if not isinstance(row, dict):
                    raise RowError(f"expected a JSON object, got {type(row).__name__}")
                pair = row_to_pair(row, format, scenario, source)
            except ValueError as exc:  # RowError, and json.JSONDecodeError
                problem = f"not valid JSON ({exc})" if isinstance(exc, json.JSONDecodeError) else str(exc)
                if bad_lines is None:
                    raise FormatError(f"{path}:{number}: {problem}") from None
                bad = BadLine(path=str(path), line=number, problem=problem)
                bad_lines.append(bad)
                log.warning("%s:%d skipped: %s", bad.path, bad.line, bad.problem)
                continue
            pair.metadata.update({"imported_from": str(path), "line": number, "format": format})
            pairs.append(pair)
    return pairs


def row_to_pair(row: dict[str, Any], format: Format, scenario: str = "imported",
                source: Source = "human") -> PreferencePair:
    """One row of `format` as a pair; raises `RowError` naming the field and the problem."""
    if format == "trl":
        prefix, chosen, rejected = _trl_sides(row)
    elif format == "openai":
        inputs = _field(row, "input", dict)
        prefix = _messages(_field(inputs, "messages", list, "input"), "input.messages")
        chosen = _messages(_field(row, "preferred_output", list), "preferred_output", trainable=True)
        rejected = _messages(_field(row, "non_preferred_output", list), "non_preferred_output", trainable=True)
    elif format == "sharegpt":
        prefix = _sharegpt(_field(row, "conversations", list), "conversations", context=True)
        if isinstance(row.get("system"), str) and row["system"] and (not prefix or prefix[0].role != "system"):
            prefix.insert(0, Turn(role="system", text=row["system"]))
        chosen = _sharegpt(_one_or_many(row, "chosen"), "chosen", context=False)
        rejected = _sharegpt(_one_or_many(row, "rejected"), "rejected", context=False)
    else:
        raise RowError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if not prefix:
        raise RowError("the prompt is empty; it needs at least the user's request")
    if prefix[-1].role == "assistant":
        raise RowError("the prompt ends with an assistant message; a pair branches at the assistant's next action, "
                         "so the prompt must end with a user, tool or system message")
    for side, turns in (("chosen", chosen), ("rejected", rejected)):
        if not turns or turns[0].role != "assistant":
            raise RowError(f"{side} must start with an assistant message")
        if not any(turn.trainable for turn in turns):
            raise RowError(f"{side} has no trained assistant message")
    content = json.dumps([[(t.role, t.text, t.trainable) for t in part] for part in (prefix, chosen, rejected)],
                         ensure_ascii=False)
    goal = next((turn.text for turn in prefix if turn.role == "user"), prefix[-1].text)
    try:
        return PreferencePair(
            id=f"{format}-{_digest(content)}",
            scenario=scenario,
            task_id=f"goal-{_digest(goal)[:12]}",
            prefix=prefix,
            chosen=chosen,
            rejected=rejected,
            branch_turn=_actions(prefix),
            source=source,
        )
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise RowError(error["msg"].removeprefix("Value error, ")) from None


def _trl_sides(row: dict[str, Any]) -> tuple[list[Turn], list[Turn], list[Turn]]:
    chosen_raw, rejected_raw = _field(row, "chosen", (list, str)), _field(row, "rejected", (list, str))
    chosen = _completion(chosen_raw, "chosen")
    rejected = _completion(rejected_raw, "rejected")
    if row.get("prompt") is not None:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            return [Turn(role="user", text=prompt)], chosen, rejected
        if not isinstance(prompt, list):
            raise RowError(f"prompt: expected a list of messages or a string, got {type(prompt).__name__}")
        return _messages(prompt, "prompt"), chosen, rejected
    # Implicit prompt: both sides hold the whole conversation; the prompt is what they share up to a
    # non-assistant message that both sides follow with an assistant message.
    split = 0
    for index in range(1, min(len(chosen), len(rejected))):
        if (chosen[index - 1].role, chosen[index - 1].text) != (rejected[index - 1].role, rejected[index - 1].text):
            break
        if chosen[index - 1].role != "assistant" and chosen[index].role == rejected[index].role == "assistant":
            split = index
    if split == 0:
        raise RowError("no prompt: the row has no 'prompt', and chosen and rejected do not start with the same "
                         "messages followed by an assistant message on each side (their prompts do not match)")
    prefix = [turn.model_copy(update={"trainable": False}) for turn in chosen[:split]]
    return prefix, chosen[split:], rejected[split:]


def _completion(value: list | str, where: str) -> list[Turn]:
    if isinstance(value, str):
        return [Turn(role="assistant", text=value, trainable=True)]
    return _messages(value, where, trainable=True)


def _messages(messages: list, where: str, trainable: bool = False) -> list[Turn]:
    turns = []
    for index, message in enumerate(messages):
        at = f"{where}[{index}]"
        if not isinstance(message, dict):
            raise RowError(f"{at}: expected a message object, got {type(message).__name__}")
        role = _role(message.get("role"), at)
        turns.append(Turn(role=role, text=_content(message, at), trainable=trainable and role == "assistant"))
    return turns


def _sharegpt(messages: list, where: str, context: bool) -> list[Turn]:
    turns = []
    for index, message in enumerate(messages):
        at = f"{where}[{index}]"
        if not isinstance(message, dict):
            raise RowError(f"{at}: expected a message object, got {type(message).__name__}")
        role = _role(message.get("from"), at, key="from")
        value = message.get("value")
        if not isinstance(value, str):
            raise RowError(f"{at}.value: expected a string, got {type(value).__name__}")
        loss = message.get("loss")
        if loss is not None and not isinstance(loss, bool):
            raise RowError(f"{at}.loss: expected true or false, got {loss!r}")
        if loss and role != "assistant" and not context:
            raise RowError(f"{at}: loss is true on a {message.get('from')!r} message; only assistant turns are trained")
        trainable = role == "assistant" and not context and loss is not False
        turns.append(Turn(role=role, text=value, trainable=trainable))
    return turns


def _one_or_many(row: dict[str, Any], key: str) -> list:
    value = _field(row, key, (list, dict))
    return [value] if isinstance(value, dict) else value


def _field(row: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    name = f"{where}.{key}" if where else key
    if key not in row:
        raise RowError(f"{name}: missing")
    value = row[key]
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join({"list": "a list", "dict": "an object", "str": "a string"}[k.__name__] for k in kinds)
        raise RowError(f"{name}: expected {expected}, got {type(value).__name__}")
    return value


def _role(value: Any, at: str, key: str = "role") -> str:
    if not isinstance(value, str) or value.lower() not in _ROLES:
        raise RowError(f"{at}.{key}: unknown role {value!r} (known: {', '.join(sorted(_ROLES))})")
    return _ROLES[value.lower()]


def _content(message: dict[str, Any], at: str) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        texts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        if len(texts) != len(content):
            raise RowError(f"{at}.content: only text content parts can be imported")
        return "".join(texts)
    calls = message.get("tool_calls")
    if content is None and isinstance(calls, list) and len(calls) == 1:
        # An OpenAI tool call becomes the JSON action text the environments accept.
        function = calls[0].get("function", {}) if isinstance(calls[0], dict) else {}
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                raise RowError(f"{at}.tool_calls[0].function.arguments: not valid JSON") from None
        return json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
    if content is None and isinstance(calls, list):
        raise RowError(f"{at}: {len(calls)} tool calls in one message; an action is a single call")
    raise RowError(f"{at}.content: expected a string, got {type(content).__name__}")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


__all__ = ["FORMATS", "ExportStats", "Format", "FormatError", "RowError", "export_pairs", "import_pairs", "row_to_pair"]
