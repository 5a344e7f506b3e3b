"""Full oracle sweep: play every task of every split of every built-in scenario with the oracle.

Every oracle must succeed; the script exits 1 and lists the failures otherwise.

    python benchmarks/oracle_sweep.py [--scenario NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import markdown_table, write_results

from trajalign.agents import OracleAgent, run_episode
from trajalign.envs import builtin_scenarios, load_scenario, make_env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", help="sweep only these scenarios (default: all built-in)")
    args = parser.parse_args()
    rows, failures, payload = [], [], {}
    for name in args.scenario or builtin_scenarios():
        scenario = load_scenario(name)
        agent = OracleAgent(scenario)
        for split in ("train", "test"):
            env = make_env(scenario, split)
            started = time.perf_counter()
            tasks = scenario.tasks_in(split)
            successes = 0
            for task in tasks:
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
    print(f"results: {write_results('oracle_sweep', {'results': payload, 'failures': failures}, table)}")
    for failure in failures:
        print("FAILED", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
