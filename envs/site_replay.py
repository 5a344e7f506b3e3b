"""Replay web actions against a site without a browser, to check oracles when a scenario loads.

A small engine for server-rendered HTML: it follows links and redirects, fills in and submits
forms the way a browser encodes them, ticks checkboxes, chooses options and goes back through
its history. It reads only the tags that matter for that (a, form, input, select, option,
textarea, button), with regular expressions, because every scenario load replays hundreds of
oracles. Element ids are the elements' HTML ids, which is what Chromium shows for them too
(see envs/accessibility.py), so an oracle that replays here runs unchanged in the browser.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from trajalign.envs.actions import ActionError, ToolCall
from trajalign.envs.web_site import Site, SiteRequest, serve

_TAG = re.compile(r"<(/?)(a|form|input|select|option|textarea|button)\b([^>]*)>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_ATTR = re.compile(r"""([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_TEXT_INPUTS = {"text", "password", "email", "search", "tel", "url", "number", "date", "time", "month", "week",
                "datetime-local", ""}
MAX_REDIRECTS = 10


@dataclass
class _Element:
    tag: str
    attrs: dict[str, str]
    form: int | None
    text: str = ""
    options: list[tuple[str, str, bool]] = field(default_factory=list)  # (value, label, selected)
    value: str = ""
    checked: bool = False

    @property
    def type(self) -> str:
        if self.tag == "input":
            return self.attrs.get("type", "text").lower()
        if self.tag == "button":
            return self.attrs.get("type", "submit").lower()
        return self.tag


@dataclass
class _Page:
    url: str
    elements: list[_Element]
    by_id: dict[str, _Element]
    forms: list[dict[str, str]]


def parse_page(url: str, text: str) -> _Page:
    elements: list[_Element] = []
    by_id: dict[str, _Element] = {}
    forms: list[dict[str, str]] = []
    form: int | None = None
    select: _Element | None = None
    capture: tuple[_Element, int] | None = None  # element whose text runs until its end tag
    option: tuple[dict[str, str], int] | None = None
    for match in _TAG.finditer(text):
        closing, tag = match.group(1), (match.group(2) or "").lower()
        if not tag:
            continue  # a comment
        if option is not None and (tag in ("option", "select") or closing):
            attrs, start = option
            _add_option(select, attrs, text[start:match.start()])
            option = None
        if closing:
            if tag == "form":
                form = None
            elif tag == "select":
                select = None
            elif capture is not None and capture[0].tag == tag:
                element, start = capture
                element.text = _text(text[start:match.start()])
                if tag == "textarea":
                    element.value = html.unescape(text[start:match.start()]).removeprefix("\n")
                capture = None
            continue
        attrs = _attributes(match.group(3))
        if tag == "form":
            forms.append(attrs)
            form = len(forms) - 1
            continue
        if tag == "option":
            if select is not None:
                option = (attrs, match.end())
            continue
        element = _Element(tag=tag, attrs=attrs, form=form)
        if tag == "input":
            element.value = attrs.get("value", "on" if element.type in ("checkbox", "radio") else "")
            element.checked = "checked" in attrs
        elif tag == "select":
            select = element
        if tag in ("a", "button", "textarea"):
            capture = (element, match.end())
        elements.append(element)
        element_id = attrs.get("id")
        if element_id and element_id not in by_id:
            by_id[element_id] = element
    return _Page(url=url, elements=elements, by_id=by_id, forms=forms)


def _add_option(select: _Element | None, attrs: dict[str, str], raw_label: str) -> None:
    if select is None:
        return
    label = attrs.get("label") or _text(raw_label)
    select.options.append((attrs.get("value", label), label, "selected" in attrs))


def _attributes(raw: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for name, double, single, bare in _ATTR.findall(raw):
        value = double or single or bare
        attrs.setdefault(name.lower(), html.unescape(value) if "&" in value else value)
    return attrs


def _text(raw: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", raw)).split())


class SiteReplayer:
    """A browser-free client of one site instance: navigate, act, and read where it ended up."""

    def __init__(self, site: Site, host: str, start_path: str = "/"):
        self.site = site
        self.origin = f"http://{host}"
        self.history: list[str] = []
        self._raw: tuple[str, str] = ("", "")
        self._page: _Page | None = None
        self._navigate("GET", urljoin(self.origin + "/", start_path), {})

    @property
    def url(self) -> str:
        return self._raw[0]

    @property
    def page(self) -> _Page:
        """The current page, parsed when an action first needs it."""
        if self._page is None:
            self._page = parse_page(*self._raw)
        return self._page

    def act(self, call: ToolCall) -> str | None:
        """Perform one web action; return the answer for `answer`, else None. Raises `ActionError`."""
        arguments = dict(call.arguments)
        for name, value in zip(_PARAMETERS.get(call.name, ()), call.positional, strict=False):
            arguments.setdefault(name, value)
        if call.name == "answer":
            return str(arguments.get("text", ""))
        if call.name == "scroll":
            return None
        if call.name == "go_back":
            if len(self.history) < 2:
                raise ActionError("there is no previous page")
            self.history.pop()
            self._navigate("GET", self.history.pop(), {})
            return None
        if call.name not in ("click", "type", "select"):
            raise ActionError(f"unknown action {call.name!r}")
        element = self._element(str(arguments.get("id", "")))
        if call.name == "click":
            self._click(element)
        elif call.name == "type":
            text = str(arguments.get("text", ""))
            if not (element.tag == "textarea" or (element.tag == "input" and element.type in _TEXT_INPUTS)):
                raise ActionError(f"element {arguments.get('id')!r} is not a text field")
            enter = text.endswith("\n") and element.tag != "textarea"
            element.value = text[:-1] if enter else text
            if enter and element.form is not None:
                submitter = next((e for e in self.page.elements if e.form == element.form and _is_submit(e)), None)
                self._submit(element.form, submitter)
        else:
            if element.tag != "select":
                raise ActionError(f"element {arguments.get('id')!r} is not a drop-down")
            wanted = str(arguments.get("option", ""))
            index = _match_option(wanted, element.options)
            if index is None:
                raise ActionError(f"drop-down {arguments.get('id')!r} has no option {wanted!r}")
            element.options = [(v, label, i == index) for i, (v, label, _) in enumerate(element.options)]
        return None

    def _element(self, element_id: str) -> _Element:
        element = self.page.by_id.get(element_id)
        if element is None:
            raise ActionError(f"no element with id {element_id!r} on {self.url}")
        if "disabled" in element.attrs:
            raise ActionError(f"element {element_id!r} is disabled")
        return element

    def _click(self, element: _Element) -> None:
        if element.tag == "a":
            href = element.attrs.get("href")
            if href is None or href.startswith(("#", "javascript:")):
                return
            self._navigate("GET", urljoin(self.url, href), {})
        elif element.tag == "input" and element.type == "checkbox":
            element.checked = not element.checked
        elif element.tag == "input" and element.type == "radio":
            for other in self.page.elements:
                if other.tag == "input" and other.type == "radio" and other.form == element.form \
                        and other.attrs.get("name") == element.attrs.get("name"):
                    other.checked = False
            element.checked = True
        elif _is_submit(element) and element.form is not None:
            self._submit(element.form, element)

    def _submit(self, form_index: int, submitter: _Element | None) -> None:
        form = self.page.forms[form_index]
        fields: list[tuple[str, str]] = []
        for element in self.page.elements:
            name = element.attrs.get("name")
            if element.form != form_index or not name or "disabled" in element.attrs:
                continue
            if element.tag == "input":
                kind = element.type
                if kind in ("checkbox", "radio"):
                    if element.checked:
                        fields.append((name, element.value))
                elif kind in ("submit", "image", "button", "reset", "file"):
                    if element is submitter and kind in ("submit", "image"):
                        fields.append((name, element.value))
                else:
                    fields.append((name, element.value))
            elif element.tag == "select":
                chosen = [value for value, _, selected in element.options if selected]
                if not chosen and element.options and "multiple" not in element.attrs:
                    chosen = [element.options[0][0]]
                fields += [(name, value) for value in chosen]
            elif element.tag == "textarea":
                fields.append((name, element.value))
            elif element.tag == "button" and element is submitter:
                fields.append((name, element.attrs.get("value", "")))
        action = urljoin(self.url, form.get("action") or self.url)
        if (form.get("method") or "get").lower() == "post":
            self._navigate("POST", action, {"body": urlencode(fields)})
        else:
            parts = urlsplit(action)
            self._navigate("GET", urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(fields), "")), {})

    def _navigate(self, method: str, url: str, data: dict[str, str]) -> None:
        body = data.get("body", "")
        for _ in range(MAX_REDIRECTS):
            if urlsplit(url).netloc != urlsplit(self.origin).netloc:
                raise ActionError(f"{url} is outside the site (a browser would block it)")
            request = SiteRequest.from_url(method, url, body.encode(), "application/x-www-form-urlencoded")
            response = serve(self.site, request)
            if 300 <= response.status < 400 and response.location:
                method, url, body = "GET", urljoin(url, response.location), ""
                continue
            self._raw = (url, response.body)
            self._page = None
            self.history.append(url)
            return
        raise ActionError(f"too many redirects from {url}")


_PARAMETERS = {"click": ("id",), "type": ("id", "text"), "select": ("id", "option"), "answer": ("text",),
               "scroll": ("direction",)}


def _is_submit(element: _Element) -> bool:
    return (element.tag == "button" and element.type == "submit") or (
        element.tag == "input" and element.type in ("submit", "image"))


def _match_option(wanted: str, options: list[tuple[str, str, bool]]) -> int | None:
    labels = [label for _, label, _ in options]
    values = [value for value, _, _ in options]
    for candidates, fold in ((labels, False), (values, False), (labels, True)):
        for index, candidate in enumerate(candidates):
            if (candidate.casefold().strip() == wanted.casefold().strip()) if fold else candidate == wanted:
                return index
    return None
