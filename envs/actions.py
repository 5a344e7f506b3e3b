"""Parse an agent's text action into a tool call.

Accepted forms (one call per action):

- JSON: `{"name": "get_order", "arguments": {"order_id": "W1"}}`; `arguments` may also be a JSON
  string (OpenAI style), and `{"function": {...}}` / `{"tool_calls": [{...}]}` wrappers are unwrapped.
- Function-call text: `get_order(order_id="W1")`, positional arguments allowed.
- Either form wrapped in `<tool_call>...</tool_call>`, a Markdown code fence, or after `Action:`.

Parsing never executes model text: function-call text goes through `ast` and only literal values
are accepted.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from typing import Any

from pydantic import BaseModel, Field


class ToolCall(BaseModel):
    """One action: a tool name and its keyword arguments.

    `positional` holds arguments given by position in function-call text; the environment binds
    them to the tool's parameters in signature order.
    """

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    positional: list[Any] = Field(default_factory=list, exclude=True)

    def to_text(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)


class ActionError(ValueError):
    """The action could not be understood; the message tells the agent how to fix it."""


def action_text(action: Any, max_chars: int) -> str:
    """The env's action as text: bytes decoded, non-text and over-long actions refused, lone surrogates replaced.

    Lone surrogates are replaced because they can be neither echoed back, typed into a page nor written to JSONL.
    """
    if isinstance(action, bytes):
        action = action.decode("utf-8", errors="replace")
    if not isinstance(action, str):
        raise ActionError(f"An action must be text, got {type(action).__name__}.")
    if len(action) > max_chars:
        raise ActionError(f"The action is {len(action)} characters long; the limit is {max_chars}.")
    try:
        action.encode("utf-8")
    except UnicodeEncodeError:
        action = action.encode("utf-8", errors="replace").decode("utf-8")
    return action


_WRAPPERS = [
    re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL),
    re.compile(r"```(?:json|python|tool_call)?\s*(.*?)\s*```", re.DOTALL),
    re.compile(r"^\s*Action\s*:\s*(.*)$", re.DOTALL | re.IGNORECASE),
]
_FORMAT_HINT = 'Write one tool call as JSON {"name": ..., "arguments": {...}} or as name(arg=value).'


def parse_action(text: str) -> ToolCall:
    """Return the tool call in `text`, or raise `ActionError` saying what is wrong."""
    body = _unwrap(text.strip())
    if not body:
        raise ActionError(f"Empty action. {_FORMAT_HINT}")
    if body[0] in "{[":
        return _from_json(body)
    return _from_call_text(body)


def _unwrap(text: str) -> str:
    for pattern in _WRAPPERS:
        match = pattern.search(text)
        if match:
            return match.group(1).strip()
    return text


def _from_json(body: str) -> ToolCall:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ActionError(f"Invalid JSON ({_describe_json_error(exc)}). {_FORMAT_HINT}") from None
    if isinstance(data, list):
        if len(data) != 1:
            raise ActionError(f"Expected exactly one tool call, got a list of {len(data)}.")
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("tool_calls"), list):
        calls = data["tool_calls"]
        if len(calls) != 1:
            raise ActionError(f"Expected exactly one tool call, got {len(calls)} in 'tool_calls'.")
        data = calls[0]
    if isinstance(data, dict) and isinstance(data.get("function"), dict):
        data = data["function"]
    if not isinstance(data, dict):
        raise ActionError(f"Expected a JSON object, got {type(data).__name__}. {_FORMAT_HINT}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ActionError(f"The tool call has no 'name' string. {_FORMAT_HINT}")
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ActionError(f"'arguments' is a string but not valid JSON ({_describe_json_error(exc)}).") from None
    if not isinstance(arguments, dict):
        raise ActionError(f"'arguments' must be an object, got {type(arguments).__name__}.")
    return ToolCall(name=name, arguments=arguments)


def _describe_json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at character {exc.pos}"
    return "nested too deeply"


def _from_call_text(body: str) -> ToolCall:
    try:
        with warnings.catch_warnings():  # model text like `1abc` makes the parser print SyntaxWarnings
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(body, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ActionError(f"Could not parse the action. {_FORMAT_HINT}") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ActionError(f"Expected a single call like tool_name(arg=value). {_FORMAT_HINT}")
    if any(isinstance(arg, ast.Starred) for arg in call.args) or any(kw.arg is None for kw in call.keywords):
        raise ActionError("*args and **kwargs are not allowed in a tool call.")
    return ToolCall(
        name=call.func.id,
        positional=[_literal(arg, f"argument {i + 1}") for i, arg in enumerate(call.args)],
        arguments={kw.arg: _literal(kw.value, f"argument '{kw.arg}'") for kw in call.keywords},
    )


def _literal(node: ast.expr, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise ActionError(f"The value of {where} must be a literal (quote strings, e.g. \"W123\").") from None
