"""Where a policy fails on the filesystem scenario: success by task kind and by one- or two-word topic.

Filesystem task groups are `kind:topic` (move, rename, config, delete, question), and seven of the
26 topics are two words (`bike_trip`, written "bike trip" in goals). Reads the trajectories an
evaluation wrote (`trajalign eval ... --out FILE`, or a benchmark's `eval.jsonl`):

    python benchmarks/filesystem_failures.py --eval runs/bench-sft/filesystem-tiny-noisy/eval.jsonl \
        --scenario runs/bench-sft/scenarios/filesystem-3000

Prints a markdown table; nothing is written. "train topics" counts the topics the train split asks
about in that kind (for `all`, the train groups with topics of that length). A line after it says
how many move tasks began by searching for the contact the goal names; of the others, how many kept
the contact's first name, and which last names the policy wrote instead.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from _common import markdown_table

from trajalign.envs import Scenario, Trajectory, load_scenario
from trajalign.envs.jsonl import read_jsonl


def breakdown(trajectories: list[Trajectory], scenario: Scenario) -> list[list[str]]:
    """Rows of kind, topic words, the train split's topics of that kind and length, successes / episodes
    and success rate, plus a total per topic length."""
    groups = {task.id: task.group for task in scenario.tasks}
    train_topics, wins, counts = Counter(), Counter(), Counter()
    for group in {task.group for task in scenario.tasks_in("train")}:
        kind, topic = group.split(":", 1)
        for key in ((kind, _words(topic)), ("all", _words(topic))):
            train_topics[key] += 1
    for trajectory in trajectories:
        group = groups.get(trajectory.task_id)
        if group is None or ":" not in group:
            raise SystemExit(f"task {trajectory.task_id!r} has no kind:topic group in this scenario; "
                             "is --scenario the one the evaluation ran on?")
        kind, topic = group.split(":", 1)
        for key in ((kind, _words(topic)), ("all", _words(topic))):
            counts[key] += 1
            wins[key] += trajectory.status == "success"
    return [[*key, str(train_topics[key]), f"{wins[key]} / {counts[key]}", f"{wins[key] / counts[key]:.1%}"]
            for key in sorted(counts, key=lambda key: (key[0] == "all", key))]


# Move goals name the contact: "Please move the notes file that lists Sara Muller as the contact ..."
_CONTACT = re.compile(r"lists (\S+) (\S+) as the contact")


def contact_lookups(trajectories: list[Trajectory], scenario: Scenario) -> str:
    """Move tasks whose first action names the goal's contact; of the others, how many kept the first
    name and the last names written in its place (the last word of the first action's `query`)."""
    goals = {task.id: task.goal for task in scenario.tasks}
    right = moves = kept_first = 0
    other_last: Counter[str] = Counter()
    for trajectory in trajectories:
        contact = _CONTACT.search(goals.get(trajectory.task_id, ""))
        if contact is None:
            continue
        moves += 1
        first, last = contact.groups()
        action = next((turn.text for turn in trajectory.turns if turn.role == "assistant"), "")
        if f"{first} {last}" in action:
            right += 1
            continue
        words = _query(action).split()
        kept_first += bool(words) and words[0] == first
        if words and words[-1] != last:
            other_last[words[-1]] += 1
    written = ", ".join(f"{name} {count}" for name, count in other_last.most_common()) or "none"
    return (f"move tasks whose first action names the goal's contact: {right} / {moves}; of the other "
            f"{moves - right}, {kept_first} kept the first name; last names written instead: {written}")


def _query(action: str) -> str:
    try:
        query = json.loads(action).get("arguments", {}).get("query", "")
    except (ValueError, AttributeError):
        return ""
    return query if isinstance(query, str) else ""


def _words(topic: str) -> str:
    return "two" if "_" in topic else "one"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="trajectories JSONL written by an evaluation")
    parser.add_argument("--scenario", default="filesystem", help="the scenario (folder) the evaluation ran on")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    trajectories = read_jsonl(args.eval, Trajectory)
    if not trajectories:
        raise SystemExit(f"{args.eval} holds no trajectories")
    print(markdown_table(["kind", "topic words", "train topics", "successes / episodes", "success"],
                         breakdown(trajectories, scenario)))
    print()
    print(contact_lookups(trajectories, scenario))
    return 0


if __name__ == "__main__":
    sys.exit(main())
