"""The web action vocabulary: `click(id)`, `type(id, text)`, `select(id, option)`, `scroll(up|down)`,
`go_back()` and `answer(text)`.

Actions are tool calls, parsed like every other action (`trajalign.envs.actions`: JSON or
`name(arg=value)` text through `ast`, never executed). Two conveniences for web agents: element ids
and scroll directions may be written bare (`click(e12)`, `click(add-to-cart)`, `scroll(down)`), and
an id may be given as a number (`click(12)` means `e12`) or in brackets (`click("[e12]")`).

`bind_web_action` checks a call against the latest page snapshot before anything reaches the
browser: the id must be on the page, `type` needs a text field, `select` a drop-down with that
option. A refused action never touches the page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from trajalign.envs.actions import ActionError, ToolCall, _unwrap, parse_action
from trajalign.envs.tools import Tool, tool_from_function


def click(id: str) -> None:
    """Click an element: a link, a button, a checkbox, or anything else with an id in brackets.

    Args:
        id: the element's id, shown in brackets in the observation (e.g. "e12" or "add-to-cart").
    """


def type_text(id: str, text: str) -> None:
    """Replace the text of a text field with `text`. End the text with a newline to press Enter afterwards.

    Args:
        id: the text field's id, shown in brackets in the observation.
        text: the text to put in the field.
    """


def select(id: str, option: str) -> None:
    """Choose an option of a drop-down list.

    Args:
        id: the drop-down's id, shown in brackets in the observation.
        option: the option's label, as listed in options=[...].
    """


def scroll(direction: Literal["up", "down"]) -> None:
    """Scroll the page up or down by most of a screen.

    Args:
        direction: "up" or "down".
    """


def go_back() -> None:
    """Go back to the previous page, like the browser's back button."""


def answer(text: str) -> None:
    """Give your final answer and end the episode. Include any facts the task asks for.

    Args:
        text: the answer.
    """


WEB_TOOLS: dict[str, Tool] = {
    "click": tool_from_function(click, "click"),
    "type": tool_from_function(type_text, "type"),
    "select": tool_from_function(select, "select"),
    "scroll": tool_from_function(scroll, "scroll"),
    "go_back": tool_from_function(go_back, "go_back"),
    "answer": tool_from_function(answer, "answer"),
}
WEB_TOOL_SCHEMAS = [tool.openai_schema() for tool in WEB_TOOLS.values()]
_SIGNATURES = "click(id), type(id, text), select(id, option), scroll(up|down), go_back(), answer(text)"
_BARE_CALL = re.compile(r"^([A-Za-z_]\w*)\s*\(\s*([A-Za-z_][\w-]*)\s*(,.*)?\)$", re.DOTALL)
_BRACKETED = re.compile(r"^\[\s*([^\]\s]+)\s*\]$")


@dataclass(frozen=True)
class WebAction:
    """A checked action: what to do, and on which element."""

    name: str
    id: str | None = None
    text: str | None = None
    option_index: int | None = None
    option_label: str | None = None
    direction: str | None = None
    press_enter: bool = False  # type(): the text ended with a newline, in a one-line field

    def describe(self) -> str:
        if self.name == "type":
            return f"type({self.id}, ...)"
        if self.name == "select":
            return f"select({self.id}, {self.option_label!r})"
        if self.name == "scroll":
            return f"scroll({self.direction})"
        if self.name in ("go_back", "answer"):
            return f"{self.name}()"
        return f"{self.name}({self.id})"


def parse_web_action(text: str) -> ToolCall:
    """Parse an action's text (JSON or call text; bare ids and directions allowed) into a tool call."""
    try:
        return parse_action(text)
    except ActionError as error:
        body = _unwrap(text.strip())
        match = _BARE_CALL.match(body)
        if match is None or match.group(2) in ("True", "False", "None"):
            raise error from None
        name, word, rest = match.groups()
        try:
            return parse_action(f'{name}("{word}"{rest or ""})')
        except ActionError:
            raise error from None


def bind_web_action(call: ToolCall, elements: dict[str, dict[str, Any]]) -> WebAction:
    """Validate `call` against the page's interactive elements; raise `ActionError` saying what is wrong."""
    tool = WEB_TOOLS.get(call.name)
    if tool is None:
        raise ActionError(f"Unknown action {call.name[:60]!r}. Available: {_SIGNATURES}.")
    call = _normalize_id(call)
    arguments = tool.bind(call)
    if call.name == "scroll":
        return WebAction("scroll", direction=arguments["direction"])
    if call.name == "go_back":
        return WebAction("go_back")
    if call.name == "answer":
        return WebAction("answer", text=arguments["text"])
    element_id = arguments["id"]
    element = elements.get(element_id)
    if element is None:
        shown = ", ".join(list(elements)[:8])
        hint = f" Ids on this page include: {shown}." if shown else " This page has no interactive elements."
        raise ActionError(f"There is no element with id {element_id[:60]!r} on this page; use an id shown in "
                          f"brackets in the latest observation.{hint}")
    if element.get("disabled"):
        raise ActionError(f"Element {element_id} ({element['role']} {element['name'][:60]!r}) is disabled.")
    if call.name == "click":
        return WebAction("click", id=element_id)
    if call.name == "type":
        if not element.get("editable"):
            raise ActionError(f"Element {element_id} is a {element['role']}, not a text field; type() needs a "
                              "textbox.")
        text = arguments["text"]
        return WebAction("type", id=element_id, text=text,
                         press_enter=text.endswith("\n") and element.get("tag") != "textarea")
    # select
    if element.get("tag") != "select":
        raise ActionError(f"Element {element_id} is a {element['role']}, not a drop-down list; select() needs a "
                          "combobox.")
    index = _option_index(arguments["option"], element.get("options", []), element.get("values", []))
    if index is None:
        options = element.get("options", [])
        listed = ", ".join(repr(option) for option in options[:20]) + (" ..." if len(options) > 20 else "")
        raise ActionError(f"Drop-down {element_id} has no option {arguments['option'][:60]!r}. Options: {listed}.")
    return WebAction("select", id=element_id, option_index=index, option_label=element["options"][index])


# Goal words worth typing or answering: identifiers (with digits, @, dots or dashes inside) and quoted text.
_GOAL_VALUE = re.compile(r'"([^"]{1,80})"|(?<![\w@.+-])([\w.+-]*[\d@][\w.@+-]*)')
# Page text worth answering with: numbers (years, counts, prices).
_PAGE_NUMBER = re.compile(r"(?<![\w.])\d[\d,.]*\d(?![\w])|(?<![\w.])\d(?![\w.])")


def available_web_actions(elements: dict[str, dict[str, Any]], goal: str, page_text: str,
                          max_answers: int = 8) -> list[str]:
    """Candidate actions for agents that choose rather than write (RLlib PPO through `AdmissibleActionEnv`).

    In page order: `click` for every enabled element, `select` for each option of a drop-down,
    `type` of each value the goal spells out (identifiers, passwords, addresses, quoted text) into
    each text field, then scrolling, `go_back`, and `answer` with each number on the page. Every
    candidate passes `bind_web_action` on this page; whether it helps is for the agent to learn.
    """
    values = list(dict.fromkeys(quoted or word.rstrip(".,;:)") for quoted, word in _GOAL_VALUE.findall(goal)))
    actions: list[str] = []
    for element_id, element in elements.items():
        if element.get("disabled"):
            continue
        if element.get("tag") == "select":
            actions += [f"select({element_id!r}, {option!r})" for option in element.get("options", [])]
        elif element.get("editable"):
            actions += [f"type({element_id!r}, {value!r})" for value in values]
        else:
            actions.append(f"click({element_id!r})")
    actions += ["scroll('down')", "scroll('up')", "go_back()"]
    numbers = list(dict.fromkeys(_PAGE_NUMBER.findall(page_text)))[:max_answers]
    return actions + [f"answer({number!r})" for number in numbers]


def _normalize_id(call: ToolCall) -> ToolCall:
    """Accept ids as numbers (12 -> e12) and in brackets ("[e12]")."""
    def fix(value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return f"e{value}"
        if isinstance(value, str):
            match = _BRACKETED.match(value.strip())
            return match.group(1) if match else value.strip()
        return value

    if call.name not in ("click", "type", "select"):
        return call
    arguments = dict(call.arguments)
    positional = list(call.positional)
    if "id" in arguments:
        arguments["id"] = fix(arguments["id"])
    elif positional:
        positional[0] = fix(positional[0])
    return ToolCall(name=call.name, arguments=arguments, positional=positional)


def _option_index(wanted: str, labels: list[str], values: list[str]) -> int | None:
    for candidates, fold in ((labels, False), (values, False), (labels, True)):
        for index, candidate in enumerate(candidates):
            if (candidate.casefold().strip() == wanted.casefold().strip()) if fold else candidate == wanted:
                return index
    return None
