"""Where a policy's held-out gap comes from: greedy success on four sets of tasks, in one run.

- the train tasks it was fine-tuned on;
- fresh instances of the same train groups: the scenario's generator with another seed gives new
  files, people and values, but only (kind, topic) groups of the train split are kept;
- the train tasks with every name swapped for a fresh one (`name_swapped_scenario`);
- the test split, whose groups the policy never trained on.

A policy that memorized instances drops from the first row to the second; one that memorized which
names go with which requests drops on the third and the last. Preference pairs come from the tasks
the policy explores, so this says which of them can show it its held-out mistakes.

    python benchmarks/generalization_gap.py --model runs/bench-sft/filesystem-tiny-noisy/sft/model \
        --scenario runs/bench-sft/scenarios/filesystem-3000 [--episodes 300] [--fresh-seed 1]

Results: benchmarks/results/generalization_gap_<scenario>.json/.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import markdown_table, write_results

from trajalign.agents.augment import name_swapped_scenario
from trajalign.agents.evaluate import evaluate_policy
from trajalign.agents.llm import LLMPolicy, SamplingConfig
from trajalign.envs import Scenario, ScenarioError, load_scenario
from trajalign.envs.scenario import fresh_instances


def task_sets(scenario: Scenario, fresh_seed: int) -> list[tuple[str, Scenario | str, str]]:
    """(name, tasks, split) of each set; a set that cannot be built has the reason as its tasks."""
    swapped: Scenario | str = (name_swapped_scenario(scenario, "train", seed=fresh_seed)[0] if scenario.name_swaps
                               else "the scenario has no name_swaps")
    try:
        fresh: Scenario | str = fresh_instances(scenario, fresh_seed)
    except ScenarioError as exc:
        fresh = str(exc)
    return [("train tasks (fine-tuned on)", scenario, "train"),
            ("fresh instances of train groups", fresh, "train"),
            ("train tasks, names swapped", swapped, "train"),
            ("test tasks (unseen groups)", scenario, "test")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a Hugging Face model directory")
    parser.add_argument("--scenario", required=True, help="the scenario the model was fine-tuned on")
    parser.add_argument("--episodes", type=int, default=300, help="tasks per set (a seeded sample)")
    parser.add_argument("--fresh-seed", type=int, default=1, help="seed of the fresh instances and name swaps")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    scenario = load_scenario(args.scenario)
    policy = LLMPolicy.from_pretrained(args.model, SamplingConfig(temperature=0.0))
    rows, payload_rows = [], []
    for name, tasks, split in task_sets(scenario, args.fresh_seed):
        if isinstance(tasks, str):
            rows.append([name, f"n/a ({tasks})", "", ""])
            continue
        started = time.perf_counter()
        summary, _ = evaluate_policy(policy, tasks, split, episodes=args.episodes, batch_size=args.batch_size,
                                     progress=False)
        statuses = ", ".join(f"{status} {count}" for status, count in summary.status_counts.items())
        rows.append([name, f"{summary.success_rate:.1%}", summary.episodes, statuses])
        payload_rows.append({"set": name, "success_rate": summary.success_rate, "episodes": summary.episodes,
                             "status_counts": summary.status_counts,
                             "seconds": round(time.perf_counter() - started, 1)})
        print(" | ".join(map(str, rows[-1])), flush=True)
    table = markdown_table(["tasks", "greedy success", "episodes", "statuses"], rows)
    print(table)
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": payload_rows}
    print(f"results: {write_results(f'generalization_gap_{scenario.name}', payload, table)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
