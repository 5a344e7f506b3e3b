"""The interface between a web scenario's site (plain Python) and whatever requests its pages.

A site is a class the scenario names (`site: site.py:ShopSite`). Each episode builds a fresh
instance from the task's `initial_state` and serves every page from it: `handle(request)` returns
HTML (or a `SiteResponse` for redirects and errors), and `state` is what the task's success check
reads afterwards. Pages are server-rendered HTML with links and forms, so the same site runs in
Chromium (through the loopback gateway) and in the browser-free replay that checks every oracle
when the scenario loads.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class SiteRequest:
    """One request to the site: `query` from the URL, `form` from a POSTed form (lists, as in HTML)."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    form: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        """The first value of a form or query field."""
        values = self.form.get(name) or self.query.get(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self.form.get(name) or self.query.get(name) or [])

    @classmethod
    def from_url(cls, method: str, url: str, body: bytes = b"", content_type: str = "") -> SiteRequest:
        parts = urlsplit(url)
        form: dict[str, list[str]] = {}
        if body and "application/x-www-form-urlencoded" in content_type.lower():
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return cls(method=method.upper(), path=parts.path or "/", query=parse_qs(parts.query, keep_blank_values=True),
                   form=form)


@dataclass
class SiteResponse:
    status: int = 200
    body: str = ""
    location: str | None = None  # for redirects
    content_type: str = "text/html; charset=utf-8"


def redirect(location: str) -> SiteResponse:
    """See Other: after a POST, send the browser to the page that shows the result."""
    return SiteResponse(status=303, location=location)


def not_found(message: str = "Page not found.") -> SiteResponse:
    return SiteResponse(status=404, body=f"<!DOCTYPE html><title>Not found</title><h1>Not found</h1><p>{escape(message)}</p>")


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


class Site(Protocol):
    state: dict[str, Any]

    def handle(self, request: SiteRequest) -> SiteResponse | str:
        ...


def serve(site: Site, request: SiteRequest) -> SiteResponse:
    """Call a site and normalize what it returns (a string is a 200 HTML page)."""
    result = site.handle(request)
    if isinstance(result, str):
        return SiteResponse(body=result)
    if not isinstance(result, SiteResponse):
        raise TypeError(f"{type(site).__name__}.handle() returned {type(result).__name__}, not str or SiteResponse")
    return result
