"""Batched LLM rollouts: N environments stepped together, one batched generation per turn.

Each of `batch_size` slots holds an environment and a conversation. Every turn, the policy
generates one action for every live slot in a single batch; a slot whose episode ends takes the
next planned episode right away, so the batch stays full. With the policy's `reuse_cache`, a
conversation keeps its KV cache across turns and each turn feeds only the tokens the model has
not seen (the previous action's stop token, the observation, the generation prompt).

Episodes start fresh (`play_llm_episodes`) or continue a recorded prefix (`continue_llm_episodes`,
used to branch from the states of earlier rollouts): the environment is put back into the
prefix's state and the policy continues from the prefix's token ids. Both run the same loop.

Context policy: before each action the conversation must have room for `max_new_tokens` more
tokens within the model's context. If it does not, the episode ends with status `truncated` and
`metadata["truncated_by"] = "context_limit"`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch
from transformers import DynamicCache

from trajalign.agents.chat import system_prompt
from trajalign.agents.llm import KVCache, LLMPolicy, Row, cache_argument, output_cache
from trajalign.agents.rollout import Episodes
from trajalign.envs import Scenario, make_env
from trajalign.envs.trajectory import EpisodeTiming, Trajectory, Turn


@dataclass
class _Episode:
    task_id: str
    seed: int | None
    info: dict
    row: Row
    turns: list[Turn]
    rewards: list[float] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    env_s: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Continuation:
    """An episode that continues a recorded prefix instead of starting from a reset.

    `restore` puts a fresh environment into the prefix's state (typically: reset with the recorded
    task id and seed, then replay the prefix's actions) and returns what `reset` returned; it
    raises if the environment cannot reproduce the recording, which ends this episode with status
    `env_error`. The policy continues from the prefix's token ids: recorded ids are kept as they
    are, and turns recorded as text only (scripted agents) are rendered with the chat format, as
    training renders them (a missing system turn gets the scenario's system prompt).
    """

    task_id: str
    seed: int | None  # the recorded episode's environment seed
    turns: Sequence[Turn]  # [system], goal, then (action, observation) pairs; ends before an action
    rewards: Sequence[float]  # the rewards of the prefix's actions
    restore: Callable[[gym.Env], tuple[str, dict[str, Any]]]
    sample_key: str  # seeds the sampling; give each continuation of one state its own
    metadata: dict[str, Any] = field(default_factory=dict)  # copied into the trajectory's metadata


# Fills a slot: prepares a queued item's episode in the given environment, or returns it already finished.
_Starter = Callable[[gym.Env, Any], "_Episode | Trajectory"]


def play_llm_episodes(policy: LLMPolicy, scenario: Scenario, split: str, episodes: Episodes | deque,
                      batch_size: int = 8) -> Iterator[Trajectory]:
    """Play the (task id, seed) episodes with up to `batch_size` at once; yield each as it ends.

    `episodes` may be a deque that the caller keeps filling while it iterates: a slot that frees up
    takes the next episode from its left, so a long-lived caller (a Ray actor the driver feeds) keeps
    its batch full. The iterator ends when the deque is empty and no episode is live; one that has
    yielded its last trajectory but not yet ended carries on with episodes appended after that.
    """
    queue = episodes if isinstance(episodes, deque) else deque(episodes)
    return _play(policy, scenario, split, queue, lambda env, episode: _start(policy, env, *episode), batch_size)


def continue_llm_episodes(policy: LLMPolicy, scenario: Scenario, split: str, continuations: Sequence[Continuation],
                          batch_size: int = 8) -> Iterator[Trajectory]:
    """Continue recorded prefixes with up to `batch_size` at once; yield each trajectory as it ends.

    A trajectory holds the prefix turns (with the token ids the policy was fed; a system turn is
    added first where the prefix had none) followed by the new turns; `metadata["prefix_turns"]`
    says where the new turns start. Continuations of one prefix that follow each other in
    `continuations` share one forward pass over it when the policy reuses its cache.
    """
    shared: dict[tuple[int, ...], KVCache] = {}
    return _play(policy, scenario, split, deque(continuations),
                 lambda env, continuation: _resume(policy, env, continuation, scenario.name, split, shared),
                 batch_size)


def _play(policy: LLMPolicy, scenario: Scenario, split: str, queue: deque, start: _Starter,
          batch_size: int) -> Iterator[Trajectory]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    envs: list[gym.Env] = []  # made as slots first fill
    slots: list[_Episode | None] = [None] * batch_size
    try:
        while queue or any(slots):
            for index in range(len(slots)):
                while slots[index] is None and queue:
                    while len(envs) <= index:
                        envs.append(make_env(scenario, split))
                    started = start(envs[index], queue.popleft())
                    if isinstance(started, Trajectory):  # it could not start (a prefix that did not replay)
                        yield started
                    else:
                        slots[index] = started
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
                except Exception as exc:  # noqa: BLE001 -- an infrastructure failure ends this episode only
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


def _resume(policy: LLMPolicy, env, continuation: Continuation, scenario: str, split: str,
            shared: dict[tuple[int, ...], KVCache]) -> _Episode | Trajectory:
    started_at, started = time.time(), time.perf_counter()
    metadata = dict(continuation.metadata)
    try:
        _, info = continuation.restore(env)
    except Exception as exc:  # noqa: BLE001 -- the environment did not reproduce the prefix
        slot = _Episode(continuation.task_id, continuation.seed, {"scenario": scenario, "split": split},
                        Row([]), list(continuation.turns), started_at=started_at, started=started, metadata=metadata)
        return _finish(policy, slot, "env_error", {"error": f"{type(exc).__name__}: {exc}", "prefix_turns": 0})
    segments = policy.format.turn_segments(list(continuation.turns), system_prompt(info))
    turns = [turn if turn.token_ids is not None else turn.model_copy(update={"token_ids": ids})
             for turn, ids in segments]
    ids = [token for _, segment in segments for token in segment]
    metadata["prefix_turns"] = len(turns)
    row = Row(ids, _shared_cache(policy, ids[:-1], shared), sample_key=continuation.sample_key)
    return _Episode(continuation.task_id, continuation.seed, info, row, turns, list(continuation.rewards),
                    started_at=started_at, started=started, env_s=time.perf_counter() - started, metadata=metadata)


@torch.no_grad()
def _shared_cache(policy: LLMPolicy, ids: list[int], shared: dict[tuple[int, ...], KVCache]) -> KVCache | None:
    """The KV cache of a prefix that consecutive continuations share, computed once.

    Only the latest prefix is kept, so memory stays bounded by one prefix whatever the number of states.
    """
    if not policy.reuse_cache or not ids:
        return None
    key = tuple(ids)
    if key not in shared:
        shared.clear()
        model = policy.model
        output = model(input_ids=torch.tensor([ids], device=policy.device), use_cache=True, logits_to_keep=1,
                       **{cache_argument(model): DynamicCache()})
        shared[key] = KVCache([(layer.keys, layer.values) for layer in output_cache(output).layers])
    return shared[key]


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
        metadata={**slot.metadata, **metadata, "context_tokens": len(slot.row.ids)},
    )
