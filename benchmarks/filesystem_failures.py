"""Where a policy fails on the filesystem scenario: success by task kind and by one- or two-word topic.

Filesystem task groups are `kind:topic` (move, rename, config, delete, question), and seven of the
26 topics are two words (`bike_trip`, written "bike trip" in goals). Reads the trajectories an
evaluation wrote (`trajalign eval ... --out FILE`, or a benchmark's `eval.jsonl`):

    python benchmarks/filesystem_failures.py --eval runs/bench-sft/filesystem-tiny-noisy/eval.jsonl \
        --scenario runs/bench-sft/scenarios/filesystem-3000

Prints a markdown table; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from _common import markdown_table

from trajalign.envs import Trajectory, load_scenario
from trajalign.envs.jsonl import read_jsonl


def breakdown(trajectories: list[Trajectory], groups: dict[str, str]) -> list[list[str]]:
    """Rows of kind, topic words, successes / episodes and success rate, plus a total per topic length."""
    wins, counts = Counter(), Counter()
    for trajectory in trajectories:
        group = groups.get(trajectory.task_id)
        if group is None or ":" not in group:
            raise SystemExit(f"task {trajectory.task_id!r} has no kind:topic group in this scenario; "
                             "is --scenario the one the evaluation ran on?")
        kind, topic = group.split(":", 1)
        words = "two" if "_" in topic else "one"
        for key in ((kind, words), ("all", words)):
            counts[key] += 1
            wins[key] += trajectory.status == "success"
    return [[*key, f"{wins[key]} / {counts[key]}", f"{wins[key] / counts[key]:.1%}"]
            for key in sorted(counts, key=lambda key: (key[0] == "all", key))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="trajectories JSONL written by an evaluation")
    parser.add_argument("--scenario", default="filesystem", help="the scenario (folder) the evaluation ran on")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    groups = {task.id: task.group for task in scenario.tasks}
    trajectories = read_jsonl(args.eval, Trajectory)
    if not trajectories:
        raise SystemExit(f"{args.eval} holds no trajectories")
    print(markdown_table(["kind", "topic words", "successes / episodes", "success"], breakdown(trajectories, groups)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
