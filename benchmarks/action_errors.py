"""What a policy's actions did: each action's outcome as the environment reported it, by kind.

When every episode of a model ends at the invalid-action limit, its success rate says nothing about
what it got wrong. This reads episode files (a run directory's `rollouts.jsonl` or `eval-<model>.jsonl`,
or `trajalign eval ... --out FILE`) and sorts every action by the error the environment answered it
with: the observation after the action starts with `Error: ...` (tool-use environments) or carries
a `Last action error: ...` line (web and MiniWoB++ environments).

    python benchmarks/action_errors.py runs/bench-table/full/shop/seed-0/eval-sft.jsonl \
        runs/bench-table/full/shop/seed-0/eval-dpo.jsonl

Prints a markdown table, one column per file, and the most common message of each kind; with
`--actions N`, also each file's N most common actions and how the environment took them. Nothing is
written.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from pathlib import Path

from _common import markdown_table

from trajalign.envs import Trajectory
from trajalign.envs.jsonl import read_jsonl

ACCEPTED = "accepted"
NO_OBSERVATION = "no observation after it"
# The environments' own ActionError messages (envs/actions.py, tools.py, tool_use.py, web_actions.py,
# browser_env.py), first match wins. tests/test_action_errors.py provokes each kind in real environments.
KINDS = [
    ("not one tool call", re.compile(
        r"^(Invalid JSON|Empty action|Expected (a JSON object|exactly one|a single call)|The tool call has no|"
        r"'arguments' |Could not parse|\*args|The value of |The action is \d+ characters|An action must be)")),
    ("unknown tool", re.compile(r"^Unknown (tool|action) ")),
    ("wrong arguments", re.compile(r"^(Invalid arguments for |\w+\(\) (takes|got argument))")),
    ("no element with that id", re.compile(r"^There is no element with id ")),
    ("wrong element or option", re.compile(r"^(Element \S+ (is a|\(.*\) is disabled)|Drop-down \S+ has no option)")),
    ("the tool or page action failed", re.compile(r"^\S.* (failed: |raised )")),
]
OTHER = "other error"
ORDER = [ACCEPTED] + [kind for kind, _ in KINDS] + [OTHER, NO_OBSERVATION]

_WEB_ERROR = re.compile(r"^Last action error: (.*)$", re.MULTILINE)
_TOOL_ERROR = "Error: "


def reported_error(observation: str) -> str | None:
    """The error message an observation reports about the action before it, or None if it was accepted."""
    web = _WEB_ERROR.search(observation)
    if web:
        return None if web.group(1) == "none" else web.group(1)
    return observation[len(_TOOL_ERROR):] if observation.startswith(_TOOL_ERROR) else None


def kind_of(message: str | None) -> str:
    if message is None:
        return ACCEPTED
    return next((kind for kind, pattern in KINDS if pattern.search(message)), OTHER)


def action_outcomes(trajectories: list[Trajectory], actions: Counter[tuple[str, str]] | None = None
                    ) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """Actions per kind, and per kind the messages (ids and quoted values kept) with their counts.
    `actions`, when given, counts each (action text, kind)."""
    kinds: Counter[str] = Counter()
    messages: dict[str, Counter[str]] = {}
    for trajectory in trajectories:
        turns = trajectory.turns
        for index, turn in enumerate(turns):
            if turn.role != "assistant":
                continue
            after = turns[index + 1] if index + 1 < len(turns) else None
            if after is None or after.role == "assistant":
                kinds[NO_OBSERVATION] += 1
                continue
            message = reported_error(after.text)
            kind = kind_of(message)
            kinds[kind] += 1
            if actions is not None:
                actions[(turn.text, kind)] += 1
            if message is not None:
                messages.setdefault(kind, Counter())[message] += 1
    return kinds, messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("episodes", type=Path, nargs="+", help="episode JSONL files (rollouts or evaluations)")
    parser.add_argument("--actions", type=int, default=0, metavar="N", help="list each file's N most common actions")
    args = parser.parse_args()
    columns, all_messages, common_actions = [], {}, {}
    for path in args.episodes:
        if not path.is_file():
            raise SystemExit(f"{path}: no such file")
        trajectories = read_jsonl(path, Trajectory)
        if not trajectories:
            raise SystemExit(f"{path} holds no episodes")
        if args.actions > 0:
            common_actions[path] = Counter()
        kinds, messages = action_outcomes(trajectories, common_actions.get(path))
        statuses = Counter(trajectory.status for trajectory in trajectories)
        columns.append((path, len(trajectories), statuses, kinds))
        for kind, counter in messages.items():
            all_messages.setdefault(kind, Counter()).update(counter)

    shown = [kind for kind in ORDER if any(kinds[kind] for *_, kinds in columns)]
    rows = []
    for kind in shown:
        row = [kind]
        for *_, kinds in columns:
            total = sum(kinds.values())
            row.append(f"{kinds[kind]} ({kinds[kind] / total:.0%})" if total else "0")
        rows.append(row)
    rows.append(["episodes"] + [str(count) for _, count, _, _ in columns])
    rows.append(["episodes by status"] + [", ".join(f"{status} {n}" for status, n in statuses.most_common())
                                           for _, _, statuses, _ in columns])
    # Columns are named relative to the folder the files share (a run directory, usually).
    folder = Path(os.path.commonpath([path.resolve().parent for path in args.episodes]))
    print(f"episode files in {os.path.relpath(folder)}:\n")
    print(markdown_table(["action outcome"] + [str(path.resolve().relative_to(folder)) for path, *_ in columns], rows))
    print()
    for kind in shown:
        if kind in all_messages:
            message, count = all_messages[kind].most_common(1)[0]
            print(f"- {kind}, most common ({count} of {sum(all_messages[kind].values())}): {message[:160]}")
    for path, counter in common_actions.items():
        print(f"\n{path.resolve().relative_to(folder)}, most common actions:")
        for (text, kind), count in counter.most_common(args.actions):
            print(f"- {count} x {text[:120]} ({kind})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
