"""The loopback gateway: a browser's only way out, serving its site and refusing everything else.

Chromium is launched with this gateway as its HTTP proxy (loopback included) and with host name
resolution switched off, so every request it makes, from pages or from the browser itself,
arrives here on 127.0.0.1. The gateway answers requests for the hosts it serves from Python and
answers everything else with 403 (CONNECT tunnels for https/wss included). It never opens a
connection of its own, so nothing can leave the machine through it.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
BLOCKED_BODY = (b"<!DOCTYPE html><title>Blocked</title><h1>Blocked</h1>"
                b"<p>This environment only serves its own site; requests to other origins are blocked.</p>")


@dataclass
class HttpRequest:
    method: str
    url: str  # absolute, e.g. http://shop.test/search?q=x
    headers: dict[str, str]
    body: bytes = b""

    @property
    def host(self) -> str:
        return (urlsplit(self.url).netloc or "").lower()


@dataclass
class HttpResponse:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, keep_alive: bool) -> bytes:
        body = self.body.encode("utf-8") if isinstance(self.body, str) else self.body
        reason = _REASONS.get(self.status, "OK")
        lines = [f"HTTP/1.1 {self.status} {reason}", f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(body)}", "Cache-Control: no-store",
                 f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        lines += [f"{key}: {value}" for key, value in self.headers.items()
                  if "\r" not in key + value and "\n" not in key + value]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


_REASONS = {200: "OK", 302: "Found", 303: "See Other", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 500: "Internal Server Error"}

# Serves one request for a host the gateway serves; runs on the event loop.
Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class LoopbackGateway:
    """An HTTP proxy on 127.0.0.1 that serves `hosts` through their handlers and blocks the rest.

    `log` records every request that reached it as (method, target, served); `blocked` lists the
    targets it refused. Both are kept until `clear()`.
    """

    def __init__(self) -> None:
        self.hosts: dict[str, Handler] = {}
        self.port: int | None = None
        self.log: list[tuple[str, str, bool]] = []
        self.errors: list[str] = []  # exceptions raised by the handlers (site code)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def blocked(self) -> list[str]:
        return [target for _, target, served in self.log if not served]

    def clear(self) -> None:
        self.log.clear()
        self.errors.clear()

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", 0,
                                                      limit=MAX_HEADER_BYTES)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        for writer in list(self._connections):
            writer.close()
        if server is not None:
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except Exception:
                pass

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                method, target, headers, body = request
                keep_alive = headers.get("proxy-connection", headers.get("connection", "")).lower() != "close"
                if method == "CONNECT":  # https/wss tunnels: never opened
                    self.log.append((method, f"{target} (tunnel)", False))
                    writer.write(HttpResponse(403, b"", "text/plain").encode(keep_alive=False))
                    await writer.drain()
                    break
                url = target if "://" in target else f"http://{headers.get('host', '')}{target}"
                handler = self.hosts.get((urlsplit(url).netloc or "").lower()) if url.startswith("http://") else None
                if handler is None:
                    self.log.append((method, url, False))
                    response = HttpResponse(403, BLOCKED_BODY)
                else:
                    self.log.append((method, url, True))
                    try:
                        response = await handler(HttpRequest(method, url, headers, body))
                    except Exception as exc:  # a bug in site code: a server error page, like a tool error
                        self.errors.append(f"{method} {url}: {type(exc).__name__}: {exc}")
                        response = HttpResponse(500, "<!DOCTYPE html><title>Server error</title><h1>Server error</h1>"
                                                     f"<pre>{html.escape(f'{type(exc).__name__}: {exc}')}</pre>")
                writer.write(response.encode(keep_alive))
                await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line.strip():
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise ValueError("malformed request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    size = 0
    while True:
        header = await reader.readline()
        size += len(header)
        if size > MAX_HEADER_BYTES:
            raise ValueError("headers too large")
        if header in (b"\r\n", b"\n", b""):
            break
        key, _, value = header.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    body = b""
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY_BYTES:
        raise ValueError("body too large")
    if length:
        body = await reader.readexactly(length)
    return method.upper(), target, headers, body
