"""Evaluate an agent on held-out tasks: success rate, mean reward and pass^k.

pass^k is the chance that k independent attempts at a task all succeed (the reliability measure
of tau-bench). With n attempts per task of which c succeed, C(c, k) / C(n, k) estimates it without
bias; the reported value is the mean over tasks.
"""

from __future__ import annotations

import random
from collections import defaultdict
from math import comb

from pathlib import Path
from typing import Any

from trajalign.agents.rollout import RolloutSummary, record_rollouts
from trajalign.envs.scenario import Scenario, Task
from trajalign.envs.trajectory import Trajectory


class EvalSummary(RolloutSummary):
    tasks: int
    samples: int
    pass_hat_k: dict[int, float]

    def rows(self) -> list[tuple[str, str]]:
        return super().rows() + [(f"pass^{k}", f"{value:.3f}") for k, value in self.pass_hat_k.items()]


def eval_plan(tasks: list[Task], episodes: int, samples: int, seed: int) -> list[tuple[str, int]]:
    """`samples` attempts at each of `episodes` tasks (a seeded choice), each with its own seed."""
    order = [task.id for task in tasks]
    random.Random(seed).shuffle(order)
    chosen = order[: min(episodes, len(order))]
    return [(task_id, seed + 1000 * attempt + index) for index, task_id in enumerate(chosen) for attempt in range(samples)]


def pass_hat_k(trajectories: list[Trajectory], k: int) -> float:
    """Mean over tasks of C(successes, k) / C(attempts, k); tasks with fewer than k attempts are skipped."""
    by_task: dict[str, list[bool]] = defaultdict(list)
    for trajectory in trajectories:
        by_task[trajectory.task_id].append(trajectory.success)
    estimates = [comb(sum(results), k) / comb(len(results), k) for results in by_task.values() if len(results) >= k]
    return sum(estimates) / len(estimates) if estimates else 0.0


def summarize_eval(summary: RolloutSummary, trajectories: list[Trajectory], samples: int) -> EvalSummary:
    return EvalSummary(
        **summary.model_dump(),
        tasks=len({t.task_id for t in trajectories}),
        samples=samples,
        pass_hat_k={k: pass_hat_k(trajectories, k) for k in range(1, samples + 1)},
    )


def evaluate_policy(policy: Any, scenario: Scenario, split: str = "test", episodes: int = 50, samples: int = 1,
                    seed: int = 0, out: str | Path | None = None, batch_size: int = 8,
                    progress: bool = True) -> tuple[EvalSummary, list[Trajectory]]:
    """Roll out an `LLMPolicy` on `samples` attempts at each of `episodes` tasks of `split`, batched.

    With `out`, trajectories are appended there as they finish and episodes it already holds are kept.
    """
    from trajalign.agents.llm_rollout import play_llm_episodes

    plan = eval_plan(scenario.tasks_in(split), episodes, samples, seed)
    summary, trajectories = record_rollouts(
        scenario, split, plan, out, policy.name,
        lambda todo: play_llm_episodes(policy, scenario, split, todo, batch_size), progress=progress)
    return summarize_eval(summary, trajectories, samples), trajectories
