"""Rollout scaling on Ray: env steps per second with 1 and 2 rollout actors, in one run.

The same planned episodes are played by an LLM policy (batched generation, KV reuse) through
`RolloutPool` with 1 actor and then with 2, each actor reserving one CPU (torch then uses one
thread per actor), so on a 2-core machine the second actor gets the second core. Actor start-up and
model loading are excluded (a warm-up call first); the driver's work (receiving, parsing and
counting each trajectory) is included. The two runs must give the same trajectories (turns,
rewards, statuses), which the script checks. A scripted-agent row shows the other regime: the
tool-use envs step at ~10^4 steps/s, so Ray's per-trajectory transport, not the environment,
bounds it. Target: LLM 2 actors >= 1.6x 1 actor on 2 cores.

    python benchmarks/rollout_scaling.py [--model DIR] [--scenario retail] [--episodes 384] [--workers 1 2]
                                         [--repeats 2]

Without --model, a tiny model is built offline. The machine's load average is recorded before and
after: on a shared machine other jobs take cores away and lower the speed-up, so the worker counts
are measured in turns (1, 2, 1, 2, ...) and each row reports the median of `--repeats` runs. See
docs/ray.md for the plan beyond one machine (many GPUs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import markdown_table, write_results

from trajalign.agents.rollout import episode_plan
from trajalign.agents.tiny import build_tiny_model
from trajalign.envs import load_scenario
from trajalign.ray_cluster import init_ray
from trajalign.ray_rollouts import AgentSpec, RolloutPool, WorkerSettings


def _content(trajectories):
    return {(t.task_id, t.seed): ([(turn.role, turn.text) for turn in t.turns], t.rewards, t.status)
            for t in trajectories}


def measure(scenario, spec: AgentSpec, plan, workers: int, cpus: float, warm_plan) -> tuple[dict, list]:
    settings = WorkerSettings(workers=workers, cpus_per_worker=cpus)
    with RolloutPool(scenario, spec, settings) as pool:
        list(pool.play("train", warm_plan))  # start the actors, load the policy, warm the caches
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        trajectories = list(pool.play("train", plan))
        seconds = time.perf_counter() - started
        load_after = os.getloadavg()[0]
    steps = sum(len(t.rewards) for t in trajectories)
    return {"agent": spec.name, "workers": workers, "cpus_per_worker": cpus, "episodes": len(trajectories),
            "env_steps": steps, "seconds": round(seconds, 3), "steps_per_s": steps / seconds,
            "load_average_before": load_before, "load_average_after": load_after}, trajectories


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: build a tiny one)")
    parser.add_argument("--scenario", default="retail")
    parser.add_argument("--episodes", type=int, default=384)
    parser.add_argument("--scripted-episodes", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per worker count (the median is reported)")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    model = args.model or build_tiny_model([args.scenario], Path(tempfile.mkdtemp()) / "tiny",
                                           max_tasks_per_scenario=100)
    cpus = os.cpu_count() or 1
    init_ray(num_cpus=cpus)
    tasks = scenario.tasks_in("train")
    warm = episode_plan(tasks, 2 * max(args.workers), seed=999)
    llm = AgentSpec(agent=str(model), batch_size=args.batch_size,
                    sampling={"temperature": 1.0, "max_new_tokens": args.max_new_tokens, "seed": 0})
    noisy = AgentSpec(agent="noisy", seed=0)

    results, contents = [], {}
    for spec, episodes in ((llm, args.episodes), (noisy, args.scripted_episodes)):
        plan = episode_plan(tasks, episodes, seed=0)
        runs: dict[int, list[dict]] = {workers: [] for workers in args.workers}
        for _ in range(args.repeats):
            for workers in args.workers:
                per_worker = max(1.0, cpus / max(args.workers)) if spec is llm else 1.0
                result, trajectories = measure(scenario, spec, plan, workers, per_worker, warm)
                contents.setdefault(spec.name, []).append(_content(trajectories))
                runs[workers].append(result)
                print(f"{spec.name} x{workers}: {result['steps_per_s']:.1f} steps/s "
                      f"(load {result['load_average_before']:.1f})", file=sys.stderr)
        for workers, measured in runs.items():
            ordered = sorted(measured, key=lambda r: r["steps_per_s"])
            median = dict(ordered[(len(ordered) - 1) // 2])
            median["all_steps_per_s"] = [round(r["steps_per_s"], 2) for r in measured]
            results.append(median)
    same = {name: all(content == versions[0] for content in versions) for name, versions in contents.items()}
    for name, agrees in same.items():
        if not agrees:
            print(f"error: {name}: trajectories differ between worker counts", file=sys.stderr)

    rows = []
    for result in results:
        base = next(r["steps_per_s"] for r in results if r["agent"] == result["agent"])
        result["speedup"] = result["steps_per_s"] / base
        rows.append([result["agent"], result["workers"], result["episodes"], result["env_steps"], result["seconds"],
                     f"{result['steps_per_s']:.1f} ({', '.join(f'{x:.1f}' for x in result['all_steps_per_s'])})",
                     f"{result['speedup']:.2f}x",
                     f"{result['load_average_before']:.1f}"])
    table = markdown_table(["agent", "ray workers", "episodes", "env steps", "seconds", "env steps/s (median)",
                            "vs 1 worker", "load avg"], rows)
    llm_rows = [r for r in results if r["agent"] == llm.name]
    speedup = llm_rows[-1]["speedup"] if len(llm_rows) > 1 else 1.0
    table += (f"\n\nLLM policy ({llm.name}, batch {args.batch_size}, {args.max_new_tokens} new tokens max): "
              f"{max(args.workers)} workers = {speedup:.2f}x 1 worker (target >= 1.6x on 2 cores). "
              f"Same trajectories at every worker count: {'yes' if all(same.values()) else 'NO'}. "
              "`load avg` is the machine's 1-minute load average when the timed run started (other jobs included). "
              "The scripted row is bound by Ray's per-trajectory transport and the driver, not by the environment. "
              "Scaling to many GPUs: docs/ray.md.")
    path = write_results("rollout_scaling", {"results": results, "same_trajectories": same,
                                             "llm_speedup": speedup}, table)
    print(table)
    print(f"written: {path}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
