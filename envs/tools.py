"""Tools are plain typed Python functions; their schemas come from signatures and docstrings.

A tool's first parameter may be `state`: the environment passes the episode's state there and it
is not part of the schema the agent sees. Every other parameter needs a type annotation. The
docstring's first paragraph becomes the description; an `Args:` section (Google style) describes
the parameters.
"""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from trajalign.envs.actions import ActionError, ToolCall

STATE_PARAMETER = "state"


class ToolDefinitionError(ValueError):
    """A function cannot serve as a tool (missing annotations, unsupported parameters)."""


class ToolError(Exception):
    """Raised by tool code to refuse an operation; the message is shown to the agent."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    function: Callable[..., Any]
    arguments_model: type[BaseModel]
    parameter_order: tuple[str, ...]
    takes_state: bool

    def openai_schema(self) -> dict[str, Any]:
        """The tool in OpenAI function-calling format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": _parameters_schema(self)},
        }

    def bind(self, call: ToolCall) -> dict[str, Any]:
        """Validate a call's arguments; return them as keyword arguments or raise `ActionError`."""
        arguments = dict(call.arguments)
        if len(call.positional) > len(self.parameter_order):
            raise ActionError(
                f"{self.name}() takes {len(self.parameter_order)} argument(s), {len(call.positional)} were given."
            )
        for name, value in zip(self.parameter_order, call.positional):
            if name in arguments:
                raise ActionError(f"{self.name}() got argument '{name}' twice.")
            arguments[name] = value
        try:
            validated = self.arguments_model.model_validate(arguments)
        except ValidationError as exc:
            raise ActionError(f"Invalid arguments for {self.name}: {_describe_validation(exc)}") from None
        return {name: getattr(validated, name) for name in self.parameter_order}


def tool_from_function(function: Callable[..., Any], name: str | None = None) -> Tool:
    name = name or function.__name__
    try:
        signature = inspect.signature(function)
        hints = typing.get_type_hints(function)
    except (TypeError, ValueError, NameError) as exc:
        raise ToolDefinitionError(f"tool '{name}': cannot read its signature ({exc}).") from None
    parameters = list(signature.parameters.values())
    takes_state = bool(parameters) and parameters[0].name == STATE_PARAMETER
    if takes_state:
        parameters = parameters[1:]
    descriptions = _argument_descriptions(function.__doc__ or "")
    fields: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool '{name}': *args/**kwargs are not supported (parameter '{parameter.name}').")
        if parameter.name not in hints:
            raise ToolDefinitionError(f"tool '{name}': parameter '{parameter.name}' has no type annotation.")
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], Field(default, description=descriptions.get(parameter.name)))
    try:
        model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
        model.model_json_schema()
    except Exception as exc:  # pydantic raises several types for unsupported annotations
        raise ToolDefinitionError(f"tool '{name}': unsupported parameter type ({exc}).") from None
    return Tool(
        name=name,
        description=_summary(function.__doc__ or ""),
        function=function,
        arguments_model=model,
        parameter_order=tuple(p.name for p in parameters),
        takes_state=takes_state,
    )


def _parameters_schema(tool: Tool) -> dict[str, Any]:
    schema = tool.arguments_model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("required", [])
    return schema


def _summary(doc: str) -> str:
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return " ".join(paragraphs[0].split()) if paragraphs and paragraphs[0] else ""


_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


def _argument_descriptions(doc: str) -> dict[str, str]:
    descriptions: dict[str, str] = {}
    in_args = False
    for line in inspect.cleandoc(doc).splitlines():
        if _ARGS_HEADER.match(line):
            in_args = True
            continue
        if in_args:
            if line and not line[0].isspace():
                break  # next section
            match = _ARG_LINE.match(line)
            if match:
                descriptions[match.group(1)] = match.group(2).strip()
    return descriptions


def _describe_validation(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        if error["type"] == "extra_forbidden":
            problems.append(f"unexpected argument '{where}'")
        elif error["type"] == "missing":
            problems.append(f"missing argument '{where}'")
        else:
            problems.append(f"'{where}': {error['msg']}")
    return "; ".join(problems) + "."
