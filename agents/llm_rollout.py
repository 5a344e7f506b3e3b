"""Batched LLM rollouts: N environments stepped together, one batched generation per turn.

Each of `batch_size` slots holds an environment and a conversation. Every turn, the policy
generates one action for every live slot in a single batch; a slot whose episode ends takes the
next planned episode right away, so the batch stays full. With the policy's `reuse_cache`, a
conversation keeps its KV cache across turns and each turn feeds only the tokens the model has
not seen (the previous action's stop token, the observation, the generation prompt).

Context policy: before each action the conversation must have room for `max_new_tokens` more
tokens within the model's context. If it does not, the episode ends with status `truncated` and
`metadata["truncated_by"] = "context_limit"`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

from trajalign.agents.chat import system_prompt
from trajalign.agents.llm import LLMPolicy, Row
from trajalign.agents.rollout import Episodes
from trajalign.envs import Scenario, make_env
from trajalign.envs.trajectory import EpisodeTiming, Trajectory, Turn


@dataclass
class _Episode:
    task_id: str
    seed: int
    info: dict
    row: Row
    turns: list[Turn]
    rewards: list[float] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    env_s: float = 0.0


def play_llm_episodes(policy: LLMPolicy, scenario: Scenario, split: str, episodes: Episodes,
                      batch_size: int = 8) -> Iterator[Trajectory]:
    """Play the (task id, seed) episodes with up to `batch_size` at once; yield each as it ends."""
    queue = deque(episodes)
    envs = [make_env(scenario, split) for _ in range(min(batch_size, len(queue)) or 1)]
    slots: list[_Episode | None] = [None] * len(envs)
    try:
        while queue or any(slots):
            for index, slot in enumerate(slots):
                if slot is None and queue:
                    slots[index] = _start(policy, envs[index], *queue.popleft())
            live = []
            for index, slot in enumerate(slots):
                if slot is not None and not policy.fits(slot.row):
                    yield _finish(policy, slot, "truncated", {"truncated_by": "context_limit"})
                    slots[index] = None
                elif slot is not None:
                    live.append(index)
            if not live:
                continue
            generations = policy.generate([slots[i].row for i in live])
            for index, generation in zip(live, generations):
                slot, env = slots[index], envs[index]
                text = policy.action_text(generation)
                slot.turns.append(Turn(role="assistant", text=text, token_ids=generation.token_ids,
                                       logprobs=generation.logprobs, trainable=True))
                step_started = time.perf_counter()
                try:
                    observation, reward, terminated, truncated, info = env.step(text)
                except Exception as exc:  # an infrastructure failure ends this episode only
                    yield _finish(policy, slot, "env_error", {"error": f"{type(exc).__name__}: {exc}"})
                    slots[index] = None
                    continue
                slot.env_s += time.perf_counter() - step_started
                slot.rewards.append(float(reward))
                # An action cut at max_new_tokens gets its stop token as context, so the template stays well formed.
                context = ([] if generation.stopped else [policy.stop_id]) + policy.format.observation_segment(
                    info["observation_role"], observation)
                slot.turns.append(Turn(role=info["observation_role"], text=observation, token_ids=context))
                slot.row = Row(slot.row.ids + generation.token_ids + context, generation.cache, slot.row.sample_key)
                if terminated or truncated:
                    yield _finish(policy, slot, info["status"], {})
                    slots[index] = None
    finally:
        for env in envs:
            env.close()


def _start(policy: LLMPolicy, env, task_id: str, seed: int) -> _Episode:
    started_at, started = time.time(), time.perf_counter()
    observation, info = env.reset(seed=seed, options={"task_id": task_id})
    system = system_prompt(info)
    system_ids, goal_ids = policy.format.prompt_segments(system, observation)
    turns = [Turn(role="system", text=system, token_ids=system_ids),
             Turn(role="user", text=observation, token_ids=goal_ids)]
    row = Row(system_ids + goal_ids, policy.prefix_cache(system_ids), sample_key=f"{info['scenario']}/{task_id}/{seed}")
    return _Episode(task_id, seed, info, row, turns, started_at=started_at, started=started,
                    env_s=time.perf_counter() - started)


def _finish(policy: LLMPolicy, slot: _Episode, status: str, metadata: dict) -> Trajectory:
    return Trajectory(
        scenario=slot.info["scenario"],
        task_id=slot.task_id,
        split=slot.info["split"],
        seed=slot.seed,
        agent=policy.name,
        turns=slot.turns,
        rewards=slot.rewards,
        reward=slot.rewards[-1] if slot.rewards and status != "env_error" else 0.0,
        status=status,
        timing=EpisodeTiming(started_at=slot.started_at, duration_s=time.perf_counter() - slot.started,
                             env_s=slot.env_s),
        metadata={**metadata, "context_tokens": len(slot.row.ids)},
    )
