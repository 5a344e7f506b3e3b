"""`MiniWoBEnv` (`trajalign/MiniWoB-v0`): the MiniWoB++ task pages in Chromium, with the web action interface.

    env = gym.make("trajalign/MiniWoB-v0", task="click-button")
    observation, info = env.reset(seed=0)

The pages come from the installed `miniwob` package (`pip install --no-deps miniwob==1.1.0`). Only
its HTML is used: the package is located on disk and never imported (it needs a newer
Gymnasium than this project pins). Its own JavaScript runs the task: each reset loads the task
page in a fresh browser context, seeds it (`Math.seedrandom(seed)`), sets the data mode to the
split, lifts the 10-second episode limit (a language model needs longer than that to think) and
starts the episode (`core.startEpisodeReal()`). After each action the env reads core.js's globals:
`WOB_DONE_GLOBAL` ends the episode and `WOB_RAW_REWARD_GLOBAL` (in [-1, 1]) is the reward, or
`WOB_REWARD_GLOBAL` (discounted by time) with `time_penalty=True`. Status is `success` when the
reward is positive. `answer(text)` ends an episode the page has not ended, as a failure.

Episodes are addressed as task ids `<task>/<seed>` (`reset(options={"task_id": "click-button/3"})`,
which may also switch the env to another task in the same browser); `miniwob_scenario(task)` lists seeds as the
tasks of a train and a test split, which is what `trajalign rollout --scenario miniwob --task NAME` plays.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import mimetypes
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from trajalign.envs.browser import BrowserError, find_chromium
from trajalign.envs.browser_env import BrowserEnv
from trajalign.envs.gateway import HttpRequest, HttpResponse
from trajalign.envs.scenario import Limits, Scenario, Task
from trajalign.envs.web_actions import WEB_TOOLS

HOST = "miniwob.test"
HTML_VARIABLE = "TRAJALIGN_MINIWOB_HTML"
TRAIN_SEEDS = 1000
TEST_SEEDS = 200
TEST_SEED_START = 1_000_000
# No episode limit by default: setTimeout stores at most 2**31 - 1 ms, so this is "about 12 days".
NO_TIME_LIMIT_MS = 10**9
# Parts of every task page that are not the task: the reward display, the click canvas, the start
# cover and the instruction (shown as the goal instead).
_NOT_THE_TASK = ["reward-display", "click-canvas", "sync-task-cover", "query", "attention-canvas"]
_GLOBALS = ["WOB_DONE_GLOBAL", "WOB_REWARD_GLOBAL", "WOB_RAW_REWARD_GLOBAL", "WOB_REWARD_REASON", "WOB_TASK_READY"]
_START_SCRIPT = """async (o) => {
  if (typeof core === 'undefined' || typeof genProblem === 'undefined') return 'this page is not a MiniWoB++ task';
  Math.seedrandom(o.seed);
  core.setDataMode(o.mode);
  core.EPISODE_MAX_TIME = o.maxTimeMs;
  core.startEpisodeReal();
  const start = performance.now();
  while (!WOB_TASK_READY) {
    if (performance.now() - start > o.readyTimeoutMs) return 'the task did not become ready';
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return null;
}"""


class MiniWoBUnavailable(RuntimeError):
    """The miniwob package (its HTML files) is not installed."""


def miniwob_html_dir() -> Path:
    """The `html/` folder of the installed miniwob package, found without importing it."""
    if os.environ.get(HTML_VARIABLE):
        path = Path(os.environ[HTML_VARIABLE])
        if (path / "miniwob").is_dir():
            return path
        raise MiniWoBUnavailable(f"${HTML_VARIABLE}={path} has no miniwob/ folder of task pages.")
    spec = importlib.util.find_spec("miniwob")  # a top-level find_spec locates, it does not import
    candidates = [Path(location) / "html" for location in (spec.submodule_search_locations or [])] if spec else []
    try:
        candidates.append(Path(str(importlib.metadata.distribution("miniwob").locate_file("miniwob/html"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for candidate in candidates:
        if (candidate / "miniwob").is_dir() and (candidate / "core" / "core.js").is_file():
            return candidate
    raise MiniWoBUnavailable("MiniWoB++ is not installed: pip install --no-deps miniwob==1.1.0 "
                             "(only its HTML task pages are used).")


def miniwob_tasks() -> list[str]:
    """Every task page the installed package has (not all of them work with text actions)."""
    return sorted(path.stem for path in (miniwob_html_dir() / "miniwob").glob("*.html"))


def miniwob_version() -> str:
    try:
        return importlib.metadata.version("miniwob")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def task_seed(task_id: str) -> tuple[str, int]:
    """Split `<task>/<seed>` into its parts."""
    name, _, seed = task_id.rpartition("/")
    if not name or not seed.isdigit():
        raise ValueError(f"MiniWoB++ task ids look like 'click-test/17', got {task_id!r}")
    return name, int(seed)


def miniwob_scenario(task: str, train_seeds: int = TRAIN_SEEDS, test_seeds: int = TEST_SEEDS) -> Scenario:
    """A MiniWoB++ task as a scenario whose tasks are seeds: `<task>/0`... in train, `<task>/1000000`... in test.

    MiniWoB++ has no oracle solutions, so the tasks' `oracle` lists are empty.
    """
    if task not in miniwob_tasks():
        raise ValueError(f"no MiniWoB++ task {task!r}; see `trajalign scenarios list --kind miniwob`")
    seeds = [("train", seed) for seed in range(train_seeds)]
    seeds += [("test", TEST_SEED_START + seed) for seed in range(test_seeds)]
    tasks = [Task.model_construct(id=f"{task}/{seed}", goal="(the page states the task)", split=split, group=None,
                                  initial_state={}, hidden=[], required_outputs=[], expected_state=None, oracle=[])
             for split, seed in seeds]
    return Scenario(name=f"miniwob/{task}", kind="miniwob", description=f"MiniWoB++ task {task}",
                    instructions="Do what the instruction on the page says; the page scores the result.",
                    path=miniwob_html_dir() / "miniwob", tools=dict(WEB_TOOLS), tasks=tasks,
                    limits=Limits(max_turns=30, max_invalid_actions=5), user_simulator={})


class MiniWoBEnv(BrowserEnv):
    """One MiniWoB++ task; each reset seeds a new instance of it.

    Args:
        task: the task's name, e.g. "click-test" (the file name in miniwob/html/miniwob/).
        split: "train" or "test": the data mode the page generates problems from, and which seeds
            `reset()` draws when no task id is given.
        scenario: alternatively, a scenario from `miniwob_scenario()` (how `make_env` passes it).
        time_penalty: reward the time-discounted `WOB_REWARD_GLOBAL` instead of the raw reward.
        episode_time_limit_s: the page's own time limit (default none; MiniWoB++'s is 10 s).
        max_turns, max_invalid_actions, action_timeout_s, chromium: as for `WebEnv`.
    """

    def __init__(
        self,
        task: str | None = None,
        split: str = "train",
        scenario: Scenario | None = None,
        max_turns: int = 30,
        max_invalid_actions: int = 5,
        time_penalty: bool = False,
        episode_time_limit_s: float | None = None,
        render_mode: str | None = None,
        **browser_options: Any,
    ):
        if scenario is not None:
            task = task or scenario.name.removeprefix("miniwob/")
        if not task:
            raise ValueError("MiniWoBEnv needs task=<name>, e.g. task='click-test'")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.html_dir = miniwob_html_dir()
        if not (self.html_dir / "miniwob" / f"{task}.html").is_file():
            raise ValueError(f"no MiniWoB++ task {task!r} in {self.html_dir / 'miniwob'}")
        self.task_name = task
        self.split = split
        self.time_penalty = time_penalty
        self.episode_time_limit_ms = NO_TIME_LIMIT_MS if episode_time_limit_s is None else int(episode_time_limit_s * 1000)
        super().__init__(host=HOST, max_turns=max_turns, max_invalid_actions=max_invalid_actions,
                         max_action_chars=4096, max_observation_chars=16000, render_mode=render_mode,
                         **browser_options)
        self.seed_value = 0
        self.wob: dict[str, Any] = {}

    def _choose_task(self, options: dict[str, Any]) -> None:
        task_id = options.get("task_id")
        if task_id is not None:
            name, self.seed_value = task_seed(str(task_id))
            if name != self.task_name:  # another task in the same browser: the env now serves that one
                if not (self.html_dir / "miniwob" / f"{name}.html").is_file():
                    raise ValueError(f"no MiniWoB++ task {name!r} in {self.html_dir / 'miniwob'}")
                self.task_name = name
        elif self.split == "train":
            self.seed_value = int(self.np_random.integers(TRAIN_SEEDS))
        else:
            self.seed_value = TEST_SEED_START + int(self.np_random.integers(TEST_SEEDS))
        self.wob = {}

    def _task_id(self) -> str:
        return f"{self.task_name}/{self.seed_value}"

    def _goal(self) -> str:
        return self.snapshot.goal or ""

    def _reset_info(self) -> dict[str, Any]:
        return {"task_id": self._task_id(), "scenario": f"miniwob/{self.task_name}", "split": self.split,
                "instructions": "Do what the instruction on the page says; the page scores the result."}

    def _snapshot_options(self) -> dict[str, Any]:
        return {"skipIds": _NOT_THE_TASK, "goalSelector": "#query", "globals": _GLOBALS}

    async def _serve(self, request: HttpRequest) -> HttpResponse:
        path = unquote(urlsplit(request.url).path).lstrip("/")
        target = (self.html_dir / path).resolve()
        if not target.is_relative_to(self.html_dir.resolve()) or not target.is_file():
            return HttpResponse(404, b"not found", "text/plain")
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type in ("application/javascript", "application/json"):
            content_type += "; charset=utf-8"
        return HttpResponse(200, target.read_bytes(), content_type)

    def _preload_url(self) -> str | None:
        return self._page_url()  # the task pages are static files: the next episode's page loads it early

    def _page_url(self) -> str:
        return f"http://{HOST}/miniwob/{self.task_name}.html"

    async def _open(self, page: Any) -> None:
        if page.url != self._page_url():
            await page.goto(self._page_url())
        problem = await page.evaluate(_START_SCRIPT, {
            "seed": self.seed_value, "mode": self.split, "maxTimeMs": self.episode_time_limit_ms,
            "readyTimeoutMs": self.navigation_timeout_s * 1000})
        if problem:
            raise BrowserError(f"MiniWoB++ task {self.task_name}: {problem}")

    def _after_action(self) -> tuple[float, str] | None:
        self.wob = dict(self.snapshot.globals)
        if not self.wob.get("WOB_DONE_GLOBAL"):
            return None
        raw = float(self.wob.get("WOB_RAW_REWARD_GLOBAL") or 0.0)
        reward = float(self.wob.get("WOB_REWARD_GLOBAL") or 0.0) if self.time_penalty else raw
        return reward, "success" if raw > 0 else "failure"

    def _score_answer(self, text: str) -> tuple[float, str]:
        return 0.0, "failure"  # the page did not end the episode: giving an answer gives up

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = super().step(action)
        info["miniwob"] = {"done": bool(self.wob.get("WOB_DONE_GLOBAL")),
                           "raw_reward": float(self.wob.get("WOB_RAW_REWARD_GLOBAL") or 0.0),
                           "reward": float(self.wob.get("WOB_REWARD_GLOBAL") or 0.0),
                           "reason": self.wob.get("WOB_REWARD_REASON")}
        return observation, reward, terminated, truncated, info


def _cache_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trajalign"
    html = miniwob_html_dir()
    key = json.dumps([miniwob_version(), str(html), (html / "miniwob").stat().st_mtime_ns, find_chromium(), 1])
    return root / f"miniwob-tasks-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"


def probe_tasks(names: list[str] | None = None, seed: int = 0, env: MiniWoBEnv | None = None,
                **browser_options: Any) -> dict[str, str | None]:
    """Load and reset each task in one browser; {task: None if it works, else why not}.

    A task works when its page loads, its problem starts, and the observation has an instruction
    and at least one element to act on. Uses `env` if given (and leaves it open), else its own.
    """
    names = list(names if names is not None else miniwob_tasks())
    results: dict[str, str | None] = {}
    available = set(miniwob_tasks())
    owned = env is None
    try:
        for name in names:
            if name not in available:
                results[name] = "no such task page"
                continue
            if env is None:
                env = MiniWoBEnv(task=name, **browser_options)
            try:
                _, info = env.reset(options={"task_id": f"{name}/{seed}"})
                if not env.goal:
                    results[name] = "the page shows no instruction"
                elif not info["element_ids"]:
                    results[name] = "the page has nothing to act on"
                else:
                    results[name] = None
            except Exception as exc:
                results[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        if owned and env is not None:
            env.close()
    return results


def loadable_tasks(use_cache: bool = True) -> list[str]:
    """The tasks that load and reset (`probe_tasks` over all of them), cached per miniwob/Chromium install."""
    path = _cache_path()
    if use_cache and path.is_file():
        try:
            return json.loads(path.read_text())["loadable"]
        except (ValueError, KeyError):
            pass
    results = probe_tasks()
    loadable = sorted(name for name, problem in results.items() if problem is None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"loadable": loadable, "problems": {k: v for k, v in results.items() if v}}, indent=1))
    return loadable
