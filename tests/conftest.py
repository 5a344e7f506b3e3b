import gc
import os

import gymnasium as gym
import pytest
import yaml
from trajalign.envs import builtin_scenarios, load_scenario
from trajalign.envs.browser import TAG_VARIABLE, browser_processes
from trajalign.envs.scenario import resolve_scenario_path

# Every Chromium the tests start (in this process or in CLI subprocesses) carries this tag in its
# environment, so the session can check at the end that none is left running.
BROWSER_TAG = os.environ[TAG_VARIABLE] = f"pytest-{os.getpid()}"


def _kind(name: str) -> str:
    """A built-in scenario's kind, read from its YAML without loading (web scenarios replay oracles on load)."""
    return yaml.safe_load(resolve_scenario_path(name).read_text()).get("kind", "tool_use")


TOOL_USE_SCENARIOS = [name for name in builtin_scenarios() if _kind(name) == "tool_use"]
WEB_SCENARIOS = [name for name in builtin_scenarios() if _kind(name) == "web"]


@pytest.fixture(params=TOOL_USE_SCENARIOS)
def tool_use_scenario(request):
    return load_scenario(request.param)


@pytest.fixture(scope="session")
def shared_env():
    """Browser environments shared by the session's tests, one Chromium each (starting one takes seconds).

    `shared_env("wiki")` is a `Web-v0` env of that scenario (train split); `shared_env("miniwob")` a
    `MiniWoB-v0` env (reset it with options={"task_id": "<task>/<seed>"}). Tests that change an env's
    settings put them back.
    """
    envs = {}

    def get(name: str):
        if name not in envs:
            if name == "miniwob":
                envs[name] = gym.make("trajalign/MiniWoB-v0", task="click-test").unwrapped
            else:
                envs[name] = gym.make("trajalign/Web-v0", scenario=name).unwrapped
        return envs[name]

    yield get
    for env in envs.values():
        env.close()


def leftover_browsers() -> list[dict]:
    """Chromium processes started by this test session that are still running."""
    gc.collect()  # environments dropped without close() release their browser when collected
    return browser_processes(tag=BROWSER_TAG)


@pytest.fixture(scope="session", autouse=True)
def no_browser_left_running():
    """After the whole suite, no Chromium process started by the tests may still be running."""
    yield
    leftover = leftover_browsers()
    assert not leftover, f"{len(leftover)} Chromium process(es) started by the tests are still running: " + \
        "; ".join(f"{p['pid']}: {p['cmdline'][:120]}" for p in leftover)
