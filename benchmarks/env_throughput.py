"""Environment throughput: env steps per second per domain, in one process (one core).

Tool use: two figures per agent: `env steps/s` counts only time inside `reset` and `step` (what the
environment costs), `end-to-end steps/s` also counts the agent and the trajectory bookkeeping
of `run_episode`. The target is >= 5,000 env steps/s per core.

Web and MiniWoB++ (real Chromium, one browser per env): steps/s over browser actions only (every
action reaches the page), resets timed separately, and steps/s with resets included. Each
environment runs twice: with the default reused page (wiped clean between episodes) and with a
fresh browser context per episode (`reuse_page=False`), the baseline for the ratio. Web scenarios
are played by their oracles; MiniWoB++ tasks by an agent that clicks a random element of the page
(the episode ends when the page says so).

    python benchmarks/env_throughput.py [--steps 20000] [--kinds tool_use,web,miniwob] [--web-episodes 30]

Tool-use results go to results/env_throughput.*, web and MiniWoB++ to results/env_throughput_web.*.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import gymnasium as gym

from _common import markdown_table, write_results

from trajalign.agents import OracleAgent, RandomAgent, run_episode
from trajalign.envs import builtin_scenarios, load_scenario, make_env

TARGET = 5000


def measure(env, agent, steps: int) -> dict:
    """Play whole episodes until `steps` env steps are done; time env calls and the whole loop."""
    env_seconds, done, episode = 0.0, 0, 0
    started = time.perf_counter()
    while done < steps:
        t0 = time.perf_counter()
        observation, info = env.reset(seed=episode)
        env_seconds += time.perf_counter() - t0
        agent.reset(observation, info, seed=episode)
        while True:
            action = agent.act(observation, info).text
            t0 = time.perf_counter()
            observation, _, terminated, truncated, info = env.step(action)
            env_seconds += time.perf_counter() - t0
            done += 1
            if terminated or truncated:
                break
        episode += 1
    loop_seconds = time.perf_counter() - started
    # run_episode adds the Trajectory records a rollout keeps; time it separately on the same count.
    started = time.perf_counter()
    recorded = 0
    while recorded < steps:
        recorded += len(run_episode(env, agent, seed=episode).rewards)
        episode += 1
    rollout_seconds = time.perf_counter() - started
    return {"steps": done, "env_steps_per_s": done / env_seconds, "loop_steps_per_s": done / loop_seconds,
            "rollout_steps_per_s": recorded / rollout_seconds}


MINIWOB_TASKS = ["click-test", "click-button", "enter-text", "login-user", "focus-text", "click-checkboxes",
                 "click-link", "click-tab"]


class RandomClicker:
    """Clicks a random element of the page: every action is valid and reaches the browser."""

    name = "random-click"

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def reset(self, observation, info, seed=None) -> None:
        self.rng = random.Random(seed)

    def act(self, observation, info):
        from trajalign.agents import AgentAction

        return AgentAction(f'click("{self.rng.choice(info["element_ids"])}")')


def measure_browser(env, agent, episodes: int, task_ids: list[str] | None = None) -> dict:
    """Play `episodes` episodes; time resets and steps separately."""
    reset_seconds, step_seconds, steps = 0.0, 0.0, 0
    started = time.perf_counter()
    for episode in range(episodes):
        options = {"task_id": task_ids[episode % len(task_ids)]} if task_ids else None
        t0 = time.perf_counter()
        observation, info = env.reset(seed=episode, options=options)
        reset_seconds += time.perf_counter() - t0
        agent.reset(observation, info, seed=episode)
        while True:
            action = agent.act(observation, info).text
            t0 = time.perf_counter()
            observation, _, terminated, truncated, info = env.step(action)
            step_seconds += time.perf_counter() - t0
            steps += 1
            assert info["status"] != "env_error", info
            if terminated or truncated:
                break
    total = time.perf_counter() - started
    return {"episodes": episodes, "steps": steps, "steps_per_s": steps / step_seconds,
            "mean_step_ms": 1000 * step_seconds / steps, "mean_reset_ms": 1000 * reset_seconds / episodes,
            "episodes_per_s": episodes / total, "steps_per_s_with_resets": steps / total}


# How each episode gets its page: the previous one wiped clean (the default), or a fresh browser context.
PAGE_MODES = {"reused": {"reuse_page": True}, "fresh context": {"reuse_page": False}}


def browser_rows(episodes: int) -> tuple[list[list], dict]:
    rows, payload = [], {}
    for name in builtin_scenarios():
        scenario = load_scenario(name)
        if scenario.kind != "web":
            continue
        tasks = scenario.tasks_in("train")
        task_ids = [task.id for task in tasks[:: max(1, len(tasks) // episodes)]][:episodes]
        results = _in_each_mode(lambda options: make_env(scenario, **options).unwrapped, OracleAgent(scenario),
                                episodes, task_ids)
        rows += _mode_rows(name, "oracle", results, payload)
    task_ids = [f"{task}/{seed}" for seed in range(episodes) for task in MINIWOB_TASKS][: episodes * 2]
    results = _in_each_mode(
        lambda options: gym.make("trajalign/MiniWoB-v0", task=MINIWOB_TASKS[0], **options).unwrapped,
        RandomClicker(), len(task_ids), task_ids)
    rows += _mode_rows(f"miniwob ({len(MINIWOB_TASKS)} tasks)", "random-click", results, payload)
    return rows, payload


def _in_each_mode(make, agent, episodes: int, task_ids: list[str]) -> dict[str, dict]:
    """`measure_browser` in an env made by `make(options)`, once for each page mode."""
    results = {}
    for mode, options in PAGE_MODES.items():
        env = make(options)
        env.reset(seed=0)  # start the browser outside the timing
        results[mode] = measure_browser(env, agent, episodes, task_ids)
        env.close()
    return results


def _mode_rows(name: str, agent: str, results: dict[str, dict], payload: dict) -> list[list]:
    """One row per page mode; the reused page's row carries its ratio to the fresh-context baseline."""
    baseline = results["fresh context"]
    for mode, result in results.items():
        payload[f"{name.split()[0]}/{agent}/{mode}"] = result
    return [_browser_row(name, agent, mode, result, baseline if mode != "fresh context" else None)
            for mode, result in results.items()]


def _browser_row(name: str, agent: str, mode: str, result: dict, baseline: dict | None = None) -> list:
    print(f"{name:<24}{agent:<14}{mode:<15}{result['steps_per_s']:>8.1f} steps/s", file=sys.stderr)
    ratio = f"{result['steps_per_s_with_resets'] / baseline['steps_per_s_with_resets']:.2f}x" if baseline else ""
    return [name, agent, mode, result["episodes"], result["steps"], f"{result['steps_per_s']:.1f}",
            f"{result['mean_step_ms']:.0f}", f"{result['mean_reset_ms']:.0f}", f"{result['episodes_per_s']:.2f}",
            f"{result['steps_per_s_with_resets']:.1f}", ratio]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000, help="tool use: env steps per (domain, agent)")
    parser.add_argument("--kinds", default="tool_use,web,miniwob", help="which environments to measure")
    parser.add_argument("--web-episodes", type=int, default=30, help="web: episodes per scenario (MiniWoB++: twice)")
    args = parser.parse_args()
    kinds = set(args.kinds.split(","))
    if kinds & {"web", "miniwob"}:
        rows, payload = browser_rows(args.web_episodes)
        table = markdown_table(["environment", "agent", "episode page", "episodes", "steps", "steps/s", "ms/step",
                                "ms/reset", "episodes/s", "steps/s with resets", "with resets vs fresh context"], rows)
        print(table)
        load = os.getloadavg()
        print(f"results: {write_results('env_throughput_web', {'results': payload, 'load_average': load}, table)}")
    if "tool_use" not in kinds:
        return 0
    rows, payload = [], {}
    for name in builtin_scenarios():
        scenario = load_scenario(name)
        if scenario.kind != "tool_use":
            continue
        env = make_env(scenario).unwrapped  # the bare env: what a vectorized or Ray worker steps
        for agent in (RandomAgent(seed=0), OracleAgent(scenario)):
            result = measure(env, agent, args.steps)
            payload[f"{name}/{agent.name}"] = result
            rows.append([name, agent.name, f"{result['env_steps_per_s']:,.0f}", f"{result['loop_steps_per_s']:,.0f}",
                         f"{result['rollout_steps_per_s']:,.0f}",
                         f"{result['env_steps_per_s'] / TARGET:.1f}x"])
            print(f"{name:<12}{agent.name:<8}{result['env_steps_per_s']:>10,.0f} env steps/s", file=sys.stderr)
    table = markdown_table(["scenario", "agent", "env steps/s", "env+agent steps/s", "run_episode steps/s",
                            f"env vs target {TARGET:,}/s"], rows)
    print(table)
    print(f"results: {write_results('env_throughput', {'target_steps_per_s': TARGET, 'results': payload}, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
