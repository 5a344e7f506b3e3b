"""Name-swap augmentation of SFT data: copies of trajectories with the task's names replaced.

A small model trained on a few hundred tasks learns which names come with which requests and
recalls them, instead of copying the name the user wrote or the path the tool returned. Copies in
which every name is consistently replaced by a fresh one keep each trajectory correct (the names
only ever come from the task) but make recall useless. The scenario lists its names and fresh
replacements (`name_swaps` in scenario.yaml, `NameSwaps`).

The same swap applied to tasks (`name_swapped_scenario`) gives a policy train tasks whose names it
never trained on, for exploration that meets the situations of held-out tasks.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from trajalign.envs.jsonl import JsonlReader, atomic_jsonl
from trajalign.envs.scenario import NameSwaps, Scenario, Task, name_forms, name_word_count
from trajalign.envs.trajectory import Trajectory, Turn

# Where copies record what was swapped, {name: replacement}.
NAME_SWAP = "name_swap"


class AugmentError(ValueError):
    """The data or the swaps cannot produce the requested copies."""


class AugmentCounts(BaseModel):
    records: int = 0
    written: int = 0
    swapped: int = 0  # copies written with at least one name replaced
    without_names: int = 0  # records that mention none of the names; written once, not copied
    bad_lines: int = 0


class NameSwapper:
    """Replaces the names of a scenario in trajectories, consistently across all their turns."""

    def __init__(self, swaps: NameSwaps):
        self.swaps = swaps
        self._name_of_form = {form: name for name in swaps.names for form in name_forms(name)}
        alternation = "|".join(map(re.escape, sorted(self._name_of_form, key=len, reverse=True)))
        # Not inside a longer word: 'garden' matches in 'garden_notes_v2.txt' and '/garden/', but not
        # in 'gardening'. Only letters bound a word, because '_', digits and '/' separate path parts.
        # (So of names 'book' and 'book_club', 'book_clubs' matches 'book'.)
        self._pattern = re.compile(rf"(?<![A-Za-z])({alternation})(?![A-Za-z])")
        self._pool: dict[int, list[str]] = {}
        for replacement in dict.fromkeys(swaps.replacements):  # listed twice is still one name
            self._pool.setdefault(name_word_count(replacement), []).append(replacement)

    def names_in(self, trajectory: Trajectory) -> list[str]:
        """The names the trajectory mentions, in order of first mention."""
        found: dict[str, None] = {}
        for turn in filter(_swappable, trajectory.turns):
            for match in self._pattern.finditer(turn.text):
                found.setdefault(self._name_of_form[match.group(1)])
        return list(found)

    def pick(self, names: list[str], rng: random.Random) -> dict[str, str]:
        """A distinct fresh replacement for each name, with as many words, so the copy reads the same."""
        mapping: dict[str, str] = {}
        for words in sorted({name_word_count(name) for name in names}):
            wanted = [name for name in names if name_word_count(name) == words]
            # NameSwaps guarantees enough replacements of each length for all the names at once.
            mapping.update(zip(wanted, rng.sample(self._pool[words], len(wanted))))
        return mapping

    def swap(self, trajectory: Trajectory, mapping: dict[str, str]) -> Trajectory:
        """A copy with each name replaced in all its forms.

        Recorded token ids and log-probs belonged to the original text, so the copy drops them; the
        turns keep their roles and trainable flags, so mistake markers (by turn index) still apply.
        """
        replace = self._replacer(mapping)
        turns = [turn.model_copy(update={"text": replace(turn.text), "token_ids": None, "logprobs": None})
                 if _swappable(turn) else turn for turn in trajectory.turns]
        metadata = {**trajectory.metadata, NAME_SWAP: dict(mapping)}
        return trajectory.model_copy(update={"turns": turns, "metadata": metadata})

    def names_in_task(self, task: Task) -> list[str]:
        """The names a task mentions anywhere (goal, files, replies, oracle), in order of first mention."""
        found: dict[str, None] = {}

        def note(text: str) -> str:
            for match in self._pattern.finditer(text):
                found.setdefault(self._name_of_form[match.group(1)])
            return text

        _map_strings(_task_text(task), note)
        return list(found)

    def swap_task(self, task: Task, mapping: dict[str, str], copy_id: str) -> Task:
        """A copy of the task, with id `copy_id`, in which each name is replaced wherever it appears:
        the goal, the initial state (file paths included), the user's hidden replies, the required
        outputs and the oracle's arguments. Tool names are kept."""
        swapped = _map_strings(_task_text(task), self._replacer(mapping))
        swapped["oracle"] = [{**call, "name": original.name} for call, original in zip(swapped["oracle"], task.oracle)]
        return Task.model_validate({**task.model_dump(mode="json"), **swapped, "id": copy_id})

    def _replacer(self, mapping: dict[str, str]) -> Callable[[str], str]:
        by_form = {form: new_form for name, replacement in mapping.items()
                   for form, new_form in zip(name_forms(name), name_forms(replacement))}

        def replace(match: re.Match[str]) -> str:
            return by_form.get(match.group(1), match.group(1))

        return lambda text: self._pattern.sub(replace, text)


def name_swapped_scenario(scenario: Scenario, split: str, seed: int = 0) -> tuple[Scenario, int]:
    """The scenario with one copy of each task of `split`, names swapped; (scenario, tasks dropped).

    For exploration: a policy trained on the split meets names it never saw, as on held-out tasks.
    Tasks that mention none of the names are kept as they are. A copy whose oracle no longer
    succeeds (a replacement that collides with other text) is dropped and counted. Copies keep the
    original's split; the same seed gives the same copies.
    """
    if scenario.name_swaps is None:
        raise AugmentError(f"scenario '{scenario.name}' has no name_swaps (scenario.yaml) to swap names with")
    swapper = NameSwapper(scenario.name_swaps)
    rng = random.Random(seed)
    tasks = []
    for task in scenario.tasks_in(split):
        names = swapper.names_in_task(task)
        tasks.append(swapper.swap_task(task, swapper.pick(names, rng), f"{task.id}-swapped") if names else task)
    swapped = scenario.with_tasks(tasks, drop_failing=True)
    return swapped, len(tasks) - len(swapped.tasks)


def _task_text(task: Task) -> dict[str, Any]:
    """The parts of a task that may mention names, as JSON; tool names and ids are left out."""
    data = task.model_dump(mode="json", include={"goal", "group", "initial_state", "hidden", "required_outputs",
                                                 "expected_state"})
    data["oracle"] = [call.model_dump(mode="json", exclude={"name"}) for call in task.oracle]
    return data


def _map_strings(value: Any, function: Callable[[str], str]) -> Any:
    """`value` with `function` applied to every string in it, dictionary keys included (file paths)."""
    if isinstance(value, str):
        return function(value)
    if isinstance(value, dict):
        return {(function(k) if isinstance(k, str) else k): _map_strings(v, function) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, function) for v in value]
    return value


def augment_file(src: str | Path, dst: str | Path, swaps: NameSwaps, copies: int, seed: int = 0) -> AugmentCounts:
    """Write every trajectory of `src` to `dst` as recorded, followed by `copies` name-swapped copies.

    Records that mention none of the names are written once. `dst` appears only when complete, so an
    interrupted run never leaves half a dataset that looks whole. The same seed gives the same file.
    """
    src, dst = Path(src), Path(dst)
    if copies < 1:
        raise AugmentError(f"copies must be at least 1, got {copies}")
    if not src.is_file():
        raise AugmentError(f"no trajectory file {src}")
    if dst.resolve() == src.resolve():
        raise AugmentError(f"the output {dst} is the input; write the augmented data to a new file")
    swapper = NameSwapper(swaps)
    rng = random.Random(seed)
    counts = AugmentCounts()
    reader = JsonlReader(src, Trajectory)
    with atomic_jsonl(dst) as writer:
        for trajectory in reader:
            counts.records += 1
            writer.write(trajectory)
            names = swapper.names_in(trajectory)
            if not names:
                counts.without_names += 1
                continue
            for _ in range(copies):
                writer.write(swapper.swap(trajectory, swapper.pick(names, rng)))
                counts.swapped += 1
        counts.written = writer.written
        counts.bad_lines = len(reader.bad_lines)
        if counts.records == 0:
            raise AugmentError(f"{src} holds no valid trajectories ({counts.bad_lines} bad lines)")
    return counts


def _swappable(turn: Turn) -> bool:
    # The system prompt describes the tools, not the task; its words are never the task's names.
    return turn.role != "system"


__all__ = ["AugmentCounts", "AugmentError", "NAME_SWAP", "NameSwapper", "augment_file", "name_swapped_scenario"]
