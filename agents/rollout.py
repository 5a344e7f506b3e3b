"""Run agents in environments and record trajectories.

`run_episode` plays one episode. `run_rollouts` plays many, appends each finished trajectory to a
JSONL file as soon as it ends, and skips episodes the file already holds, so an interrupted
rollout resumes where it stopped when run again with the same arguments.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import gymnasium as gym
from pydantic import BaseModel
from tqdm import tqdm

from trajalign.agents.base import Agent
from trajalign.envs import make_env
from trajalign.envs.jsonl import JsonlReader, JsonlWriter
from trajalign.envs.scenario import Scenario, Task
from trajalign.envs.trajectory import STATUSES, EpisodeTiming, Trajectory, Turn


# Trajectory metadata key: {turn index: kind} of the turns a scripted agent got wrong on purpose.
MISTAKES = "mistakes"


def run_episode(env: gym.Env, agent: Agent, seed: int | None = None, task_id: str | None = None) -> Trajectory:
    """Play one episode. A crash in the environment or the agent ends it with status `env_error`."""
    started_at, started = time.time(), time.perf_counter()
    observation, info = env.reset(seed=seed, options={"task_id": task_id} if task_id else None)
    first_info = info
    turns = [Turn(role=info.get("observation_role", "user"), text=observation)]
    rewards: list[float] = []
    env_s, status, error = 0.0, "env_error", None
    mistakes: dict[str, str] = {}
    try:
        agent.reset(observation, info, seed)
        status, env_s = act_until_done(env, agent, observation, info, turns, rewards, mistakes)
    except Exception as exc:  # recorded, not raised: one broken episode must not lose the rest
        error = f"{type(exc).__name__}: {exc}"
    metadata: dict[str, Any] = {"error": error} if error else {}
    if mistakes:
        metadata[MISTAKES] = mistakes
    return Trajectory(
        scenario=first_info["scenario"],
        task_id=first_info["task_id"],
        split=first_info["split"],
        seed=seed,
        agent=agent.name,
        turns=turns,
        rewards=rewards,
        reward=rewards[-1] if rewards and status != "env_error" else 0.0,
        status=status,
        timing=EpisodeTiming(started_at=started_at, duration_s=time.perf_counter() - started, env_s=env_s),
        metadata=metadata,
    )


def act_until_done(env: gym.Env, agent: Agent, observation: str, info: dict[str, Any], turns: list[Turn],
                   rewards: list[float], mistakes: dict[str, str] | None = None) -> tuple[str, float]:
    """Let `agent` act from the current state until the episode ends, appending to `turns` and `rewards`.

    Actions the agent marks as deliberate mistakes go into `mistakes` (turn index -> kind) when given.
    Returns the final status and the seconds spent in `env.step`. Exceptions propagate: callers
    record them as `env_error`.
    """
    env_s = 0.0
    while True:
        action = agent.act(observation, info)
        if action.mistake and mistakes is not None:
            mistakes[str(len(turns))] = action.mistake  # a string key: the metadata is stored as JSON
        turns.append(Turn(role="assistant", text=action.text, token_ids=action.token_ids,
                          logprobs=action.logprobs, trainable=True))
        step_started = time.perf_counter()
        observation, reward, terminated, truncated, info = env.step(action.text)
        env_s += time.perf_counter() - step_started
        rewards.append(float(reward))
        turns.append(Turn(role=info.get("observation_role", "observation"), text=observation))
        if terminated or truncated:
            return info["status"], env_s


class RolloutSummary(BaseModel):
    scenario: str
    split: str
    agent: str
    episodes: int
    success_rate: float
    mean_reward: float
    mean_turns: float
    status_counts: dict[str, int]
    env_steps: int
    seconds: float
    resumed_episodes: int = 0

    def table(self) -> str:
        rows = self.rows()
        width = max(len(key) for key, _ in rows)
        return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("scenario", f"{self.scenario} ({self.split})"),
            ("agent", self.agent),
            ("episodes", str(self.episodes)),
            ("success rate", f"{self.success_rate:.3f}"),
            ("mean reward", f"{self.mean_reward:.3f}"),
            ("mean turns", f"{self.mean_turns:.2f}"),
            *((f"status {name}", str(count)) for name, count in self.status_counts.items()),
        ]


def summarize(trajectories: list[Trajectory], scenario: str, split: str, agent: str, seconds: float = 0.0,
              resumed_episodes: int = 0) -> RolloutSummary:
    count = len(trajectories)
    statuses = Counter(t.status for t in trajectories)
    return RolloutSummary(
        scenario=scenario,
        split=split,
        agent=agent,
        episodes=count,
        success_rate=statuses["success"] / count if count else 0.0,
        mean_reward=sum(t.reward for t in trajectories) / count if count else 0.0,
        mean_turns=sum(t.num_actions for t in trajectories) / count if count else 0.0,
        status_counts={status: statuses[status] for status in STATUSES if statuses[status]},
        env_steps=sum(len(t.rewards) for t in trajectories),
        seconds=seconds,
        resumed_episodes=resumed_episodes,
    )


def episode_plan(tasks: list[Task], episodes: int, seed: int) -> list[tuple[str, int]]:
    """(task id, episode seed) for each episode: a seeded shuffle of the tasks, cycled if needed."""
    order = [task.id for task in tasks]
    random.Random(seed).shuffle(order)
    return [(order[i % len(order)], seed + i) for i in range(episodes)]


Episodes = list[tuple[str, int]]
# Plays the given (task id, seed) episodes and yields each trajectory as it finishes, in any order.
Player = Callable[[Episodes], Iterator[Trajectory]]


def record_rollouts(scenario: Scenario, split: str, plan: Episodes, out: str | Path | None, agent_name: str,
                    play: Player, progress: bool = True) -> tuple[RolloutSummary, list[Trajectory]]:
    """Play the planned episodes, appending each to `out` as it ends; episodes `out` already holds are kept."""
    done: dict[tuple[str, int | None], Trajectory] = {}
    if out is not None and Path(out).exists():
        done = {(t.task_id, t.seed): t for t in JsonlReader(out, Trajectory)
                if t.scenario == scenario.name and t.split == split and t.agent == agent_name}
    trajectories = [done[key] for key in plan if key in done]
    resumed = len(trajectories)
    todo = [key for key in plan if key not in done]
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(JsonlWriter(out)) if out is not None else None
        bar = stack.enter_context(tqdm(total=len(plan), initial=resumed, disable=not progress,
                                       desc=f"{scenario.name}/{split} {agent_name}", unit="ep"))
        for trajectory in play(todo):
            if writer is not None:
                writer.write(trajectory)
            trajectories.append(trajectory)
            bar.update()
            bar.set_postfix(success=f"{sum(t.success for t in trajectories) / len(trajectories):.2f}", refresh=False)
    summary = summarize(trajectories, scenario.name, split, agent_name, time.perf_counter() - started, resumed)
    return summary, trajectories


def run_rollouts(
    scenario: Scenario,
    make_agent: Callable[[], Agent],
    split: str,
    episodes: int,
    seed: int,
    out: str | Path,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> RolloutSummary:
    """Play `episodes` episodes of a scripted agent and append their trajectories to `out`."""
    agent = make_agent()
    plan = episode_plan(scenario.tasks_in(split), episodes, seed)
    return record_rollouts(scenario, split, plan, out, agent.name, agent_player(scenario, agent, split, env_kwargs),
                           progress)[0]


def agent_player(scenario: Scenario, agent: Agent, split: str, env_kwargs: dict[str, Any] | None = None) -> Player:
    """A `Player` that runs `agent` one episode at a time in one environment."""
    def play(todo: Episodes) -> Iterator[Trajectory]:
        env = make_env(scenario, split, **(env_kwargs or {}))
        try:
            for task_id, episode_seed in todo:
                yield run_episode(env, agent, seed=episode_seed, task_id=task_id)
        finally:
            env.close()

    return play
