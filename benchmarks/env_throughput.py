"""Tool-use environment throughput: env steps per second per domain, in one process (one core).

Two figures per agent: `env steps/s` counts only time inside `reset` and `step` (what the
environment costs), `end-to-end steps/s` also counts the agent and the trajectory bookkeeping
of `run_episode`. The target is >= 5,000 env steps/s per core.

    python benchmarks/env_throughput.py [--steps 20000]
"""

from __future__ import annotations

import argparse
import sys
import time

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000, help="env steps per (domain, agent)")
    args = parser.parse_args()
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
