"""Chromium driven through Playwright's async API from synchronous environment code.

One background thread per process runs an asyncio loop and the Playwright driver (`BrowserDriver`);
every environment gets its own Chromium process from it (`BrowserSession`) and a fresh browser
context per episode. The environments are synchronous Gymnasium envs: they submit coroutines to
the loop and wait with a deadline, so a hung browser turns into a `BrowserError`, never a hang.

Every Chromium is launched with its proxy set to its own `LoopbackGateway` (envs/gateway.py) and
with host resolution switched off, so the only place it can send a request is 127.0.0.1.

Chromium processes carry `TRAJALIGN_BROWSER_TAG` and a per-session `TRAJALIGN_BROWSER_ID` in their
environment, inherited by every child process. `browser_processes()` finds them through /proc,
which is how a session finds its own process to kill and how the tests check that none is left.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from trajalign.envs.gateway import LoopbackGateway

T = TypeVar("T")

TAG_VARIABLE = "TRAJALIGN_BROWSER_TAG"
ID_VARIABLE = "TRAJALIGN_BROWSER_ID"
CHROMIUM_VARIABLE = "TRAJALIGN_CHROMIUM"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium",
                       "/usr/bin/google-chrome", "/snap/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Belt and braces behind the proxy: no host name resolves, only the gateway's address is reachable.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
# Seconds the synchronous side waits on top of an operation's own timeout before declaring the browser hung.
HANG_MARGIN_S = 15.0


class BrowserError(RuntimeError):
    """The browser infrastructure failed (crash, hang, lost driver): an `env_error`, not the agent's fault."""


class BrowserUnavailable(BrowserError):
    """Chromium or Playwright is not installed; the message says how to install it."""


def find_chromium(explicit: str | os.PathLike | None = None) -> str:
    """The Chromium binary: `explicit`, else $TRAJALIGN_CHROMIUM, else Debian's /usr/bin/chromium and friends."""
    candidates = [explicit] if explicit else []
    if os.environ.get(CHROMIUM_VARIABLE):
        candidates.append(os.environ[CHROMIUM_VARIABLE])
    candidates += [*CHROMIUM_CANDIDATES, shutil.which("chromium") or "", shutil.which("chromium-browser") or ""]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return str(candidate)
    if explicit:
        raise BrowserUnavailable(f"Chromium binary {explicit} does not exist or is not executable.")
    raise BrowserUnavailable(
        "No Chromium found. Install Debian's package (`apt-get install -y chromium`, as scripts/setup.sh does) "
        f"or point ${CHROMIUM_VARIABLE} at a Chromium binary."
    )


def browser_tag() -> str:
    """The tag put on every browser this process starts; inherited from the environment when set (tests set it)."""
    return os.environ.get(TAG_VARIABLE) or f"pid-{os.getpid()}"


def browser_processes(tag: str | None = None, browser_id: str | None = None) -> list[dict[str, Any]]:
    """Live processes of trajalign browsers, found through /proc.

    The main Chromium process carries the tag and the per-session id in its environment; its
    helpers (zygotes, renderers, the network service) are found as its descendants. Filters on
    the tag and/or the id. Each entry has `pid`, `tag`, `id` and `cmdline`. Zombies (exited,
    waiting to be reaped) are not running and are skipped.
    """
    processes: dict[int, dict[str, Any]] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (OSError, IndexError):
            continue
        if stat[0] in ("Z", "X"):
            continue
        pid, parent = int(entry.name), int(stat[1])
        processes[pid] = {"pid": pid, "tag": None, "id": None, "cmdline": cmdline}
        children.setdefault(parent, []).append(pid)
        if "chrom" not in cmdline:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            key, _, value = item.partition(b"=")
            if key == TAG_VARIABLE.encode():
                processes[pid]["tag"] = value.decode("utf-8", "replace")
            elif key == ID_VARIABLE.encode():
                processes[pid]["id"] = value.decode("utf-8", "replace")
    found: dict[int, dict[str, Any]] = {}
    for pid, process in processes.items():
        if process["id"] is None or pid in found:
            continue
        stack = [pid]
        while stack:
            current = stack.pop()
            if current in processes and current not in found:
                found[current] = {**processes[current], "tag": process["tag"], "id": process["id"]}
                stack.extend(children.get(current, []))
    return [process for process in found.values()
            if (tag is None or process["tag"] == tag) and (browser_id is None or process["id"] == browser_id)]


def kill_processes(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class BrowserDriver:
    """The process-wide asyncio loop thread and Playwright driver, shared by reference count."""

    _instance: BrowserDriver | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.users = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run_loop, name="trajalign-browser-loop", daemon=True)
        self.thread.start()
        self._playwright: Any = None
        self._selectors_registered = False

    @classmethod
    def acquire(cls) -> BrowserDriver:
        with cls._lock:
            driver = cls._instance
            if driver is None or driver.pid != os.getpid() or not driver.thread.is_alive():
                driver = cls._instance = BrowserDriver()  # a forked child gets its own thread and driver
            driver.users += 1
            return driver

    def release(self) -> None:
        with BrowserDriver._lock:
            self.users -= 1
            if self.users > 0 or BrowserDriver._instance is not self:
                return
            BrowserDriver._instance = None
        self.shutdown()

    def shutdown(self) -> None:
        if self.pid != os.getpid() or not self.thread.is_alive():
            return
        if threading.current_thread() is self.thread:  # dropped by the garbage collector on the loop thread
            self.loop.create_task(self._stop_playwright()).add_done_callback(lambda _: self.loop.stop())
            return
        try:
            self.call(self._stop_playwright(), timeout=20)
        except BaseException:  # shutting down: nothing left to report to
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def call(self, coroutine: Awaitable[T], timeout: float) -> T:
        """Run a coroutine on the loop thread; raise `BrowserError` if it takes longer than `timeout` seconds."""
        if threading.current_thread() is self.thread:
            raise RuntimeError("BrowserDriver.call() from the loop thread would deadlock")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrowserError(f"the browser did not answer within {timeout:.0f} s") from None

    async def playwright(self) -> Any:
        """The Playwright instance, started on first use and restarted if its driver process died."""
        if self._playwright is not None and not _driver_alive(self._playwright):
            self._playwright = None
            self._selectors_registered = False
        if self._playwright is None:
            try:
                from playwright.async_api import async_playwright
            except ImportError as exc:
                raise BrowserUnavailable(f"Playwright is not installed ({exc}); pip install playwright") from None
            self._playwright = await async_playwright().start()
        if not self._selectors_registered:
            from trajalign.envs.accessibility import SELECTOR_ENGINE, SELECTOR_ENGINE_NAME

            try:
                await self._playwright.selectors.register(SELECTOR_ENGINE_NAME, SELECTOR_ENGINE)
            except Exception as exc:  # registered already by an earlier driver in this process
                if "already registered" not in str(exc):
                    raise
            self._selectors_registered = True
        return self._playwright

    async def _stop_playwright(self) -> None:
        if self._playwright is not None:
            playwright, self._playwright = self._playwright, None
            try:
                await asyncio.wait_for(playwright.stop(), 15)
            except Exception:
                pass

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()


def _driver_alive(playwright: Any) -> bool:
    connection = getattr(getattr(playwright, "_impl_obj", None), "_connection", None)
    return connection is None or not getattr(connection, "_closed_error", None)


@atexit.register
def _shutdown_driver() -> None:
    driver = BrowserDriver._instance
    if driver is not None:
        driver.shutdown()


class BrowserSession:
    """One Chromium process behind its own loopback gateway, and the page an episode runs in.

    Each episode either gets the previous episode's page back, wiped clean (`reuse_page`, the
    default), or a fresh browser context and page. Wiping costs about one navigation; a fresh
    context costs a renderer process start and profile set-up, CPU that competes with the steps
    of the episode on a small machine. A crashed page or browser always gets a fresh context.

    All `async` methods run on the driver's loop (use `call`). The browser starts on the first
    `new_page` and is relaunched there after a crash.
    """

    def __init__(self, chromium: str | None = None, viewport: tuple[int, int] = (1024, 768),
                 extra_args: tuple[str, ...] = (), launch_timeout_s: float = 60.0, reuse_page: bool = True):
        self.chromium = find_chromium(chromium)
        self.viewport = viewport
        self.extra_args = tuple(extra_args)
        self.launch_timeout_s = launch_timeout_s
        self.reuse_page = reuse_page
        self.driver = BrowserDriver.acquire()
        self.gateway = LoopbackGateway()
        self.browser_id = ""
        self.launches = 0
        self._browser: Any = None
        self._context: Any = None
        self.page: Any = None
        self._spare: asyncio.Future | None = None  # the next episode's (context, page, browser)
        self._devtools: Any = None  # the reused page's DevTools session, for wiping it
        self._origins: set[str] = set()  # origins the reused page has shown since it was last wiped
        self._closing: set[asyncio.Future] = set()
        self.crashed: str | None = None  # why the browser or page is unusable, once it is
        self._closed = False

    # -- synchronous side -------------------------------------------------------------------

    def call(self, coroutine: Awaitable[T], timeout: float) -> T:
        return self.driver.call(coroutine, timeout)

    def pids(self) -> list[int]:
        """All live processes of this session's Chromium (browser, renderers, helpers)."""
        return [p["pid"] for p in browser_processes(browser_id=self.browser_id)] if self.browser_id else []

    def browser_pid(self) -> int | None:
        """The main Chromium process (the one without a `--type=` switch)."""
        for process in browser_processes(browser_id=self.browser_id) if self.browser_id else []:
            if "--type=" not in process["cmdline"]:
                return process["pid"]
        return None

    def close(self) -> None:
        """Close the browser and the gateway and release the driver; kills what does not exit. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.driver.thread.is_alive() and self.driver.pid == os.getpid():
                self.call(self._shutdown(), timeout=30)
        except BaseException:
            pass
        kill_processes(self.pids())
        self.driver.release()

    # -- loop side ------------------------------------------------------------------------------

    async def new_page(self, on_page: Callable[[Any], Awaitable[None]] | None = None,
                       preload: str | None = None) -> Any:
        """The page for a new episode, with nothing of earlier episodes in it; relaunch a dead browser.

        With `reuse_page`, the previous episode's page comes back wiped (see `_wipe_page`) and
        `on_page` is not called again: what it set up on the page is still there. Otherwise the
        previous context closes and a new one opens. The next episode's context and page are then
        prepared in the background while this one runs, so a reset mostly costs loading the first
        page. With `preload`, that page also loads this URL ahead of time (for static pages only: it
        is served while the current episode runs); the caller checks `page.url` before navigating.
        """
        if self.reuse_page and self._page_reusable():
            try:
                await self._wipe_page()
                return self.page
            except Exception:  # a page that cannot be wiped is not reused: a fresh context follows
                pass
        await self.close_context(wait=False)
        if self.crashed or self._browser is None or not self._browser.is_connected():
            await self._relaunch()
        prepared = None
        if self._spare is not None:
            spare, self._spare = self._spare, None
            try:
                prepared = await spare
            except Exception:
                prepared = None
            if prepared is not None and (prepared[2] is not self._browser or prepared[1].is_closed()
                                         or getattr(prepared[1], "_trajalign_crashed", False)):
                await _close_context_quietly(prepared[0])
                prepared = None
        if prepared is None:
            try:
                prepared = await self._make_context(self._browser, None)
            except Exception as exc:
                self.crashed = f"{type(exc).__name__}: {_first_line(exc)}"
                await self._relaunch()
                prepared = await self._make_context(self._browser, None)
        self._context, self.page, _ = prepared
        self.page.on("crash", self._on_crash)
        if on_page is not None:
            await on_page(self.page)
        if self.reuse_page:
            self._origins = set()
            self.page.on("framenavigated", self._note_origin)
            self._devtools = await self._context.new_cdp_session(self.page)
        else:
            self._spare = asyncio.ensure_future(self._make_context(self._browser, preload))
        return self.page

    def _page_reusable(self) -> bool:
        return (self.page is not None and self._devtools is not None and not self.page.is_closed()
                and not self.crashed and self._browser is not None and self._browser.is_connected())

    async def _wipe_page(self) -> None:
        """Leave the page at about:blank with no cookies, storage, caches or history of earlier episodes.

        The old document is left first, so none of its scripts can write anything after the wipe.
        What is wiped, for every origin the page has shown: cookies (all of them), local and session
        storage, IndexedDB, Cache Storage and service workers; then the back/forward list.
        """
        await self.page.goto("about:blank")
        await self._context.clear_cookies()
        for origin in sorted(self._origins):
            await self._devtools.send("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"})
        self._origins.clear()
        await self._devtools.send("Page.resetNavigationHistory")

    def _note_origin(self, frame: Any) -> None:
        parts = urlsplit(frame.url)
        if parts.scheme in ("http", "https") and parts.netloc:
            self._origins.add(f"{parts.scheme}://{parts.netloc}")

    async def _make_context(self, browser: Any, preload: str | None) -> tuple[Any, Any, Any]:
        from trajalign.envs.accessibility import INIT_SCRIPT

        context = await browser.new_context(viewport={"width": self.viewport[0], "height": self.viewport[1]})
        try:
            await context.add_init_script(INIT_SCRIPT)
            context.on("page", self._on_extra_page)
            page = await context.new_page()
            page.on("dialog", _accept_dialog)
            page.on("crash", _mark_crashed)  # a spare page whose renderer died is not handed out
            if preload:
                try:
                    await page.goto(preload)
                except Exception:
                    await page.goto("about:blank")
        except BaseException:
            await _close_context_quietly(context)
            raise
        return context, page, browser

    async def close_context(self, wait: bool = True) -> None:
        context, self._context, self.page, self._devtools = self._context, None, None, None
        if context is not None:
            if wait:
                await _close_context_quietly(context)
            else:  # between episodes: the next one need not wait for the old context to go
                self._closing.add(task := asyncio.ensure_future(_close_context_quietly(context)))
                task.add_done_callback(self._closing.discard)

    async def _drop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is None:
            return
        if not spare.done():
            spare.cancel()
        try:
            context = (await spare)[0]
        except BaseException:
            return
        await _close_context_quietly(context)

    async def _relaunch(self) -> None:
        await self._drop_spare()
        await self._shutdown_browser()
        await self.gateway.start()
        playwright = await self.driver.playwright()
        self.browser_id = uuid.uuid4().hex
        environment = {**os.environ, TAG_VARIABLE: browser_tag(), ID_VARIABLE: self.browser_id}
        try:
            self._browser = await playwright.chromium.launch(
                executable_path=self.chromium,
                headless=True,
                args=[*CHROMIUM_ARGS, *self.extra_args],
                proxy={"server": f"http://127.0.0.1:{self.gateway.port}"},
                env=environment,
                timeout=self.launch_timeout_s * 1000,
            )
        except Exception as exc:
            raise BrowserError(f"Chromium ({self.chromium}) failed to start: {_first_line(exc)}") from None
        self._browser.on("disconnected", self._on_disconnected)
        self.crashed = None
        self.launches += 1

    async def _shutdown(self) -> None:
        await self._drop_spare()
        await self.close_context()
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=10)
        await self._shutdown_browser()
        await self.gateway.stop()

    async def _shutdown_browser(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            try:
                await asyncio.wait_for(browser.close(), 10)
            except Exception:
                pass
        if self.browser_id:
            kill_processes(self.pids())

    def _on_disconnected(self, browser: Any) -> None:
        if browser is self._browser:
            self.crashed = self.crashed or "the browser process exited"

    def _on_crash(self, page: Any) -> None:
        if page is self.page:
            self.crashed = "the page crashed"

    def _on_extra_page(self, page: Any) -> None:
        # Pop-ups and target=_blank links: one tab per episode keeps the observation unambiguous.
        asyncio.ensure_future(_close_popup(page))


async def _close_context_quietly(context: Any) -> None:
    try:
        await asyncio.wait_for(context.close(), 10)
    except BaseException:
        pass


async def _close_popup(page: Any) -> None:
    try:
        if await page.opener() is not None:
            await page.close()
    except Exception:
        pass


def _mark_crashed(page: Any) -> None:
    page._trajalign_crashed = True


async def _accept_dialog(dialog: Any) -> None:
    try:
        await dialog.accept()
    except Exception:
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "BrowserDriver",
    "BrowserError",
    "BrowserSession",
    "BrowserUnavailable",
    "browser_processes",
    "browser_tag",
    "find_chromium",
]
