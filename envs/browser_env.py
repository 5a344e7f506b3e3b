"""`BrowserEnv`: what the web and MiniWoB++ environments share.

One Chromium process per environment, kept across episodes. Each episode starts on a page with
nothing of earlier episodes in it: the same page wiped clean (`reuse_page=True`, the default) or a
fresh browser context (`reuse_page=False`); see `BrowserSession`.
The observation is the page as an accessibility tree (envs/accessibility.py) under the goal, the
URL and the last action's error. Actions are the web actions of envs/web_actions.py.

Bad actions are handled as in the tool-use environments: they are checked against the latest
snapshot before anything reaches the browser, rejected with a reason, counted toward the
invalid-action limit, and leave the page untouched. An action the browser cannot carry out
(a click on a covered element, a timeout) is rejected the same way. A browser or page crash, or a
browser that stops answering, ends the step with status `env_error` (never a reward of 0 read as a
failure); the next `reset` starts a fresh browser.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import gymnasium as gym
from trajalign.envs.accessibility import (
    PREPARE_SCRIPT,
    PREPARE_SCRIPT_FULL,
    SNAPSHOT_SCRIPT,
    SNAPSHOT_SCRIPT_FULL,
    PageSnapshot,
    render_observation,
)
from trajalign.envs.actions import ActionError, action_text
from trajalign.envs.browser import HANG_MARGIN_S, BrowserError, BrowserSession
from trajalign.envs.gateway import HttpRequest, HttpResponse
from trajalign.envs.spaces import UnicodeText
from trajalign.envs.tool_use import RUNNING, StepTiming
from trajalign.envs.web_actions import (WEB_TOOL_SCHEMAS, WebAction, available_web_actions, bind_web_action,
                                        parse_web_action)

ENV_ERROR = "env_error"
# The current entry's position in the tab's history (the Navigation API), or null where it is missing.
_HISTORY_INDEX = "() => window.navigation && navigation.currentEntry ? navigation.currentEntry.index : null"
_CLOSED_MARKERS = ("Target page, context or browser has been closed", "Target closed", "Browser has been closed",
                   "browser has disconnected", "Connection closed", "Page crashed", "Target crashed",
                   "has been closed")


class BrowserEnv(gym.Env[str, str]):
    """Base class: subclasses choose the task, serve the site and decide how an episode ends."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        *,
        host: str,
        max_turns: int,
        max_invalid_actions: int,
        max_action_chars: int,
        max_observation_chars: int,
        action_timeout_s: float = 5.0,
        navigation_timeout_s: float = 15.0,
        idle_quiet_ms: int = 25,
        idle_max_ms: int = 2000,
        chromium: str | None = None,
        viewport: tuple[int, int] = (1024, 768),
        reuse_page: bool = True,
        render_mode: str | None = None,
    ):
        self.host = host
        self.max_turns = max_turns
        self.max_invalid_actions = max_invalid_actions
        self.max_action_chars = max_action_chars
        self.max_observation_chars = max_observation_chars
        self.action_timeout_s = action_timeout_s
        self.navigation_timeout_s = navigation_timeout_s
        self.idle_quiet_ms = idle_quiet_ms
        self.idle_max_ms = idle_max_ms
        self.chromium = chromium
        self.viewport = tuple(viewport)
        self.reuse_page = reuse_page
        self.render_mode = render_mode
        self.action_space = UnicodeText(max_action_chars)
        self.observation_space = UnicodeText(max_observation_chars)
        self.tool_schemas = WEB_TOOL_SCHEMAS

        self.session: BrowserSession | None = None
        self.snapshot: PageSnapshot | None = None
        self.status = RUNNING
        self.turn = 0
        self.invalid_actions = 0
        self.answer: str | None = None
        self.goal = ""
        self._blocked: list[str] = []
        self._blocked_lock = threading.Lock()  # appended to on the browser's loop thread
        self._last_observation = ""
        self._finalizer: weakref.finalize | None = None
        self._first_entry: int | None = None

    # -- hooks for subclasses -------------------------------------------------------------------

    def _choose_task(self, options: dict[str, Any]) -> None:
        """Pick the episode's task (seeded by `self.np_random`)."""
        raise NotImplementedError

    async def _serve(self, request: HttpRequest) -> HttpResponse:
        """Answer a request for `self.host`."""
        raise NotImplementedError

    async def _open(self, page: Any) -> None:
        """Load the episode's first page (and seed it, for MiniWoB++)."""
        raise NotImplementedError

    def _snapshot_options(self) -> dict[str, Any]:
        return {}

    def _preload_url(self) -> str | None:
        """A static first page the next episode's spare browser page may load ahead of time."""
        return None

    def _goal(self) -> str:
        raise NotImplementedError

    def _reset_info(self) -> dict[str, Any]:
        return {}

    def _after_action(self) -> tuple[float, str] | None:
        """(reward, status) if the page itself ended the episode (MiniWoB++), else None."""
        return None

    def _score_answer(self, text: str) -> tuple[float, str]:
        """(reward, status) for `answer(text)`."""
        raise NotImplementedError

    # -- gymnasium API ----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self._choose_task(dict(options or {}))
        self.status, self.turn, self.invalid_actions, self.answer = RUNNING, 0, 0, None
        self.snapshot = None  # until the first page is read, step() refuses to run
        self._take_blocked()
        session = self._session()
        timeout = self.navigation_timeout_s * 2 + session.launch_timeout_s + HANG_MARGIN_S
        for attempt in range(2):
            try:
                self.snapshot = session.call(self._a_open(), timeout=timeout)
                break
            except Exception as exc:  # a dead or hung browser: relaunch once, then give up loudly
                session.crashed = session.crashed or f"{type(exc).__name__}: {exc}"
                if attempt == 1:
                    raise BrowserError(f"could not open the episode's first page: {_first_line(exc)}") from None
        self.goal = self._goal()
        observation = self._observe(None)
        info = {
            **self._reset_info(),
            "goal": self.goal,
            "tools": self.tool_schemas,
            "max_turns": self.max_turns,
            "status": RUNNING,
            "action_error": None,
            "observation_role": "user",
            "url": self.snapshot.url,
            "blocked_requests": self._take_blocked(),
            "element_ids": list(self.snapshot.elements),
            "available_actions": available_web_actions(self.snapshot.elements, self.goal, self.snapshot.tree),
        }
        return observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.snapshot is None or self.status != RUNNING:
            raise RuntimeError("The episode is over (or never started): call reset() before step().")
        started = time.perf_counter()
        self.turn += 1
        action_error, env_error, browser_s = None, None, 0.0
        reward, terminated, truncated = 0.0, False, False
        try:
            text = action_text(action, self.max_action_chars)
            web_action = bind_web_action(parse_web_action(text), self.snapshot.elements)
            if web_action.name == "answer":
                self.answer = web_action.text
                reward, self.status = self._score_answer(web_action.text)
                terminated = True
            else:
                browser_started = time.perf_counter()
                self.snapshot, failure = self._session().call(
                    self._a_act(web_action), timeout=self.action_timeout_s + self.navigation_timeout_s * 2
                    + self.idle_max_ms / 1000 + HANG_MARGIN_S)
                browser_s = time.perf_counter() - browser_started
                if failure:
                    raise ActionError(failure)
        except ActionError as exc:
            action_error = str(exc)
            self.invalid_actions += 1
        except BrowserError as exc:
            env_error = str(exc)
        except Exception as exc:  # anything unexpected from the browser stack is infrastructure, not the agent
            env_error = f"{type(exc).__name__}: {_first_line(exc)}"

        if env_error is not None:
            if self.session is not None:
                self.session.crashed = self.session.crashed or env_error
            self.status, reward, terminated = ENV_ERROR, 0.0, True
        elif not terminated:
            outcome = self._after_action() if action_error is None else None
            if outcome is not None:
                (reward, self.status), terminated = outcome, True
            elif self.invalid_actions >= self.max_invalid_actions:
                terminated, self.status = True, "invalid_action_limit"
            elif self.turn >= self.max_turns:
                truncated, self.status = True, "truncated"

        if env_error is not None:
            observation = _cut(f"Environment error: the browser failed ({env_error}). This is not the agent's "
                               "fault; the episode is over.", self.max_observation_chars)
        else:
            observation = self._observe(action_error)
        info = {
            "task_id": self._task_id(),
            "status": self.status,
            "action_error": action_error,
            "observation_role": "observation",
            "turn": self.turn,
            "invalid_actions": self.invalid_actions,
            "url": self.snapshot.url if self.snapshot else None,
            "blocked_requests": self._take_blocked(),
            "element_ids": list(self.snapshot.elements) if self.snapshot and env_error is None else [],
            "available_actions": (available_web_actions(self.snapshot.elements, self.goal, self.snapshot.tree)
                                  if self.snapshot and env_error is None else []),
            "timing": StepTiming(step_s=time.perf_counter() - started, tool_s=browser_s),
        }
        if env_error is not None:
            info["env_error"] = env_error
        if self.session is not None and self.session.gateway.errors:  # the site's own code raised
            info["site_errors"] = list(self.session.gateway.errors)
            self.session.gateway.errors.clear()
        return observation, float(reward), terminated, truncated, info

    def render(self) -> str | None:
        return self._last_observation if self.render_mode == "ansi" else None

    def close(self) -> None:
        """Close the browser, its gateway and driver reference. Safe to call twice."""
        session, self.session = self.session, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if session is not None:
            session.close()
        super().close()

    # -- internals ------------------------------------------------------------------------------

    def _task_id(self) -> str:
        raise NotImplementedError

    def _session(self) -> BrowserSession:
        if self.session is None:
            self.session = BrowserSession(self.chromium, viewport=self.viewport, reuse_page=self.reuse_page)
            # An env dropped without close() still releases its browser.
            self._finalizer = weakref.finalize(self, self.session.close)
        return self.session

    def _observe(self, error: str | None) -> str:
        if error is not None and len(error) > 2000:
            error = error[:2000] + " ..."
        self._last_observation = render_observation(self.snapshot, self.goal, error, self.max_observation_chars)
        return self._last_observation

    def _take_blocked(self) -> list[str]:
        with self._blocked_lock:
            blocked, self._blocked = self._blocked, []
        return blocked

    def _record_blocked(self, url: str) -> None:
        with self._blocked_lock:
            self._blocked.append(url)


    # -- loop side ------------------------------------------------------------------------------

    async def _a_open(self) -> PageSnapshot:
        session = self.session
        session.gateway.hosts = {self.host: self._serve}
        session.gateway.clear()  # the gateway's log covers the current episode
        page = await session.new_page(self._watch_page, self._preload_url())
        page.set_default_timeout(self.action_timeout_s * 1000)
        page.set_default_navigation_timeout(self.navigation_timeout_s * 1000)
        await self._open(page)
        # The episode's first page is the start of its history: go_back() never leaves it (the blank
        # page a browser tab starts on stays out of reach).
        self._first_entry = await page.evaluate(_HISTORY_INDEX)
        snapshot = await self._a_snapshot(page)
        if session.crashed:
            raise BrowserError(session.crashed)
        return snapshot

    async def _watch_page(self, page: Any) -> None:
        origin = f"http://{self.host}/"

        def on_request(request: Any) -> None:
            url = request.url
            if url.startswith(("http:", "https:")) and not url.startswith(origin):
                self._record_blocked(url)

        page.on("request", on_request)
        page.on("websocket", lambda socket: self._record_blocked(socket.url))

    async def _a_act(self, action: WebAction) -> tuple[PageSnapshot, str | None]:
        """Carry out an action and observe the page; (snapshot, why the action failed or None)."""
        session = self.session
        page = session.page
        if page is None or session.crashed:
            raise BrowserError(session.crashed or "no page is open")
        failure = None
        try:
            if action.name in ("click", "type", "select"):
                text = action.text[:-1] if action.press_enter else action.text
                arguments = {"id": action.id, "mode": action.name, "timeoutMs": self.action_timeout_s * 1000,
                             "optionIndex": action.option_index, "text": text}
                ready = await page.evaluate(PREPARE_SCRIPT, arguments)
                if ready is None:
                    ready = await page.evaluate(PREPARE_SCRIPT_FULL, arguments)
                if not ready["ok"]:
                    failure = (f"{action.describe()} timed out after {self.action_timeout_s:g} s: {ready['reason']}. "
                               "Look at the page again and try another action." if ready.get("timeout")
                               else f"{action.describe()} failed: {ready['reason']}.")
                elif action.name == "click":
                    await page.mouse.click(ready["x"], ready["y"])  # trusted events, as a user's click
                elif action.name == "type" and not ready["direct"]:
                    if text:
                        await page.keyboard.insert_text(text)
                    else:
                        await page.keyboard.press("Delete")
                if ready["ok"] and action.press_enter:
                    await page.keyboard.press("Enter")
            elif action.name == "scroll":
                await page.evaluate("(sign) => window.scrollBy(0, sign * Math.round(window.innerHeight * 0.8))",
                                    1 if action.direction == "down" else -1)
            elif action.name == "go_back":
                index = await page.evaluate(_HISTORY_INDEX)
                if index is not None and self._first_entry is not None and index <= self._first_entry:
                    failure = "There is no previous page to go back to."
                elif await page.go_back(timeout=self.navigation_timeout_s * 1000) is None:
                    failure = "There is no previous page to go back to."
        except Exception as exc:
            failure = self._describe_failure(action, exc)
        snapshot = await self._a_snapshot(page)
        if session.crashed:
            raise BrowserError(session.crashed)
        return snapshot, failure

    def _describe_failure(self, action: WebAction, exc: Exception) -> str:
        """Why an action failed, for the agent; raises `BrowserError` when the browser itself broke."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        message = str(exc)
        if self.session.crashed or any(marker in message for marker in _CLOSED_MARKERS):
            raise BrowserError(self.session.crashed or _first_line(exc))
        if isinstance(exc, PlaywrightTimeout):
            reason = _call_log_reason(message)
            return (f"{action.describe()} timed out after {self.action_timeout_s:g} s"
                    + (f": {reason}" if reason else "") + ". The element may be hidden, covered or not ready; "
                    "look at the page again and try another action.")
        return f"{action.describe()} failed: {_first_line(exc)[:300]}"

    async def _a_snapshot(self, page: Any) -> PageSnapshot:
        options = {"quietMs": self.idle_quiet_ms, "maxIdleMs": self.idle_max_ms,
                   "maxNavigationMs": self.navigation_timeout_s * 1000, **self._snapshot_options()}
        last_error: Exception | None = None
        # A navigation may replace the document while the script waits in it: the evaluation then
        # fails and runs again in the new document, where the script itself waits for the load.
        for _ in range(6):
            try:
                data = await page.evaluate(SNAPSHOT_SCRIPT, options)
                if data is None:  # a document without the helpers (an error page): install them
                    data = await page.evaluate(SNAPSHOT_SCRIPT_FULL, options)
                return PageSnapshot.from_script(data)
            except Exception as exc:
                if self.session.crashed or any(marker in str(exc) for marker in _CLOSED_MARKERS):
                    raise BrowserError(self.session.crashed or _first_line(exc)) from None
                last_error = exc
        raise BrowserError(f"could not read the page: {_first_line(last_error)}")


def _call_log_reason(message: str) -> str:
    """The most telling line of a Playwright call log (e.g. which element intercepts the click)."""
    lines = [line.strip(" -") for line in message.splitlines()[1:] if line.strip()]
    for line in reversed(lines):
        if "intercepts pointer events" in line or "not visible" in line or "not enabled" in line \
                or "not stable" in line or "outside of the viewport" in line or "not editable" in line:
            return line[:300]
    return lines[-1][:300] if lines else ""


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 4] + " ..."
