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


@pytest.fixture(scope="module")
def local_ray():
    """An embedded Ray for one test module (2 CPUs), shut down after it."""
    import ray

    from trajalign.ray_cluster import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def retail_model(tmp_path_factory):
    """A tiny random-weight model over the retail corpus (20 tasks), shared by the training tests."""
    from trajalign.agents.tiny import build_tiny_model

    return build_tiny_model(["retail"], tmp_path_factory.mktemp("retail_model") / "tiny", max_tasks_per_scenario=20)


@pytest.fixture(scope="session")
def oracle_file(tmp_path_factory):
    """Oracle episodes of 12 retail train tasks, the SFT tests' data."""
    from trajalign.agents import OracleAgent, run_rollouts

    scenario = load_scenario("retail")
    path = tmp_path_factory.mktemp("data") / "oracle.jsonl"
    run_rollouts(scenario, lambda: OracleAgent(scenario), "train", 12, 0, path, progress=False)
    return path


@pytest.fixture(scope="session")
def retail_pairs(tmp_path_factory):
    """Outcome pairs: oracle successes against noisy-oracle failures of the same 24 retail train tasks."""
    from trajalign.agents import NoiseRates, NoisyOracleAgent, OracleAgent, run_rollouts
    from trajalign.alignment.builders import outcome_pairs
    from trajalign.envs import Trajectory
    from trajalign.envs.jsonl import JsonlWriter, read_jsonl

    scenario = load_scenario("retail")
    root = tmp_path_factory.mktemp("retail_pairs")
    run_rollouts(scenario, lambda: OracleAgent(scenario), "train", 24, 0, root / "oracle.jsonl", progress=False)
    rates = NoiseRates(wrong_tool=0.3, wrong_argument=0.3, premature_answer=0.2)
    run_rollouts(scenario, lambda: NoisyOracleAgent(scenario, rates, seed=1), "train", 24, 0, root / "noisy.jsonl",
                 progress=False)
    pairs = list(outcome_pairs(read_jsonl(root / "noisy.jsonl", Trajectory),
                               expert=read_jsonl(root / "oracle.jsonl", Trajectory), seed=0))
    assert len(pairs) >= 8, "the noisy agent should fail often enough to give pairs"
    path = root / "pairs.jsonl"
    with JsonlWriter(path) as writer:
        for pair in pairs:
            writer.write(pair)
    return path


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
