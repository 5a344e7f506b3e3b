"""Full oracle sweep: play every task of every split of every built-in scenario with the oracle.

Every oracle must succeed; the script exits 1 and lists the failures otherwise. Web scenarios
(shop, accounts, wiki) are played in Chromium, one browser per scenario and split (about a
second per task on a 2-core machine).

    python benchmarks/oracle_sweep.py [--scenario NAME ...] [--kind tool_use|web]
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import markdown_table, write_results
from tqdm import tqdm

from trajalign.agents import OracleAgent, run_episode
from trajalign.envs import builtin_scenarios, load_scenario, make_env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", help="sweep only these scenarios (default: all built-in)")
    parser.add_argument("--kind", help="sweep only built-in scenarios of this kind")
    args = parser.parse_args()
    rows, failures, payload = [], [], {}
    for name in args.scenario or builtin_scenarios():
        scenario = load_scenario(name)
        if args.kind and scenario.kind != args.kind:
            continue
        agent = OracleAgent(scenario)
        for split in ("train", "test"):
            env = make_env(scenario, split)
            started = time.perf_counter()
            tasks = scenario.tasks_in(split)
            successes = 0
            for task in tqdm(tasks, desc=f"{name}/{split}", unit="task", disable=scenario.kind == "tool_use"):
                trajectory = run_episode(env, agent, seed=0, task_id=task.id)
                successes += trajectory.success
                if not trajectory.success:
                    failures.append(f"{name}/{split}/{task.id}: {trajectory.status} {trajectory.metadata}")
            seconds = time.perf_counter() - started
            env.close()
            payload[f"{name}/{split}"] = {"tasks": len(tasks), "successes": successes, "seconds": round(seconds, 3)}
            rows.append([name, split, len(tasks), successes, f"{successes / len(tasks):.1%}", f"{seconds:.2f}"])
    table = markdown_table(["scenario", "split", "tasks", "oracle successes", "rate", "seconds"], rows)
    print(table)
    # A partial sweep gets its own results file, so it does not replace the full one.
    name = "oracle_sweep" if not (args.scenario or args.kind) else "oracle_sweep_" + (args.kind or "-".join(args.scenario))
    print(f"results: {write_results(name, {'results': payload, 'failures': failures}, table)}")
    for failure in failures:
        print("FAILED", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
