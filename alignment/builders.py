"""Pair builders: whole-trajectory outcome pairs and branch pairs with per-state Monte-Carlo credit.

`outcome_pairs` (ETO, DMPO) pairs a successful or expert trajectory with a failed rollout of the
same task, anchored where the two episodes first differ (or right after the goal, k = 0, as the
papers build them). `branch_pairs` (IPR, step-wise DPO; DESIGN.md
§6 "Fix 2") restores states s_k visited by recorded rollouts, samples N continuations from each,
estimates Q̂(s_k, a) per first action a by the mean final reward of the continuations that start
with it, and pairs the best action's best continuation against the worst action's worst one when
the gap exceeds τ. Both sides of a branch pair share the recorded prefix, token ids included.

Both builders stream pairs and fill a `PairStats` with what they used and what they skipped, and
why. Pair ids and every random choice are functions of the inputs and the seed: the same data and
seed give the same pairs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import gymnasium as gym
from pydantic import ValidationError
from tqdm import tqdm

from trajalign.agents.base import Agent
from trajalign.agents.chat import scenario_system_prompt
from trajalign.agents.rollout import act_until_done
from trajalign.agents.scripted import OracleAgent
from trajalign.alignment.pairs import PreferencePair
from trajalign.envs import Scenario, ScenarioError, load_scenario, make_env
from trajalign.envs.actions import ActionError, ToolCall, parse_action
from trajalign.envs.trajectory import EpisodeTiming, Trajectory, Turn

if TYPE_CHECKING:
    from trajalign.agents.llm import LLMPolicy


@dataclass
class PairStats:
    """What a builder used and skipped. `skipped` maps a reason to a count (see each builder)."""

    trajectories: int = 0  # trajectories read
    pairs: int = 0  # pairs yielded
    states: int = 0  # branch: states whose continuations were played
    continuations: int = 0  # branch: continuations played
    skipped: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)  # used, with a remark (e.g. an unverifiable prompt)

    def summary(self) -> str:
        parts = [f"{self.pairs} pairs from {self.trajectories} trajectories"]
        if self.states:
            parts.append(f"{self.states} states, {self.continuations} continuations")
        text = ", ".join(parts)
        if self.skipped:
            text += "; skipped: " + ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items()))
        if self.notes:
            text += "; notes: " + ", ".join(f"{note} {count}" for note, count in sorted(self.notes.items()))
        return text


# ---- outcome pairs ----------------------------------------------------------------------------------

Anchor = Literal["divergence", "start"]
ANCHORS: tuple[str, ...] = get_args(Anchor)


def outcome_pairs(
    trajectories: Iterable[Trajectory],
    expert: Iterable[Trajectory] = (),
    max_pairs_per_task: int | None = None,
    seed: int = 0,
    stats: PairStats | None = None,
    anchor: Anchor = "divergence",
) -> Iterator[PreferencePair]:
    """Whole-episode pairs: a successful (or expert) trajectory against a failed rollout of its task.

    Per (scenario, task): every failed rollout (status other than success) becomes the rejected side
    of one pair; its chosen side is drawn (seeded) from the task's successful rollouts and `expert`
    trajectories (e.g. the oracle's) whose final reward is strictly higher and whose prompt is the
    same. `max_pairs_per_task` keeps a seeded sample of a task's pairs. `env_error` trajectories are
    never used: they say nothing about the agent.

    The prefix is the system turn (where recorded) and the goal. A side recorded without a system
    turn (scripted agents) is matched to one with a recorded system turn only if that text equals
    the scenario's rendered system prompt; when the scenario cannot be loaded to check, the pair is
    kept and counted in `stats.notes["system_prompt_unverified"]`. The recorded turns (with their
    token ids) are the prefix.

    `anchor="divergence"` (the default) moves the turns both episodes open with identically (the
    same actions, with the same token ids where both sides recorded them, and the same observations)
    into the prefix: `branch_turn` counts those shared actions and each side starts at its first
    differing action, as branch pairs do. (Where the episodes part at an observation, or one ends
    after the shared turns, both sides start with the last action they share instead.) The shared
    actions then carry no gradient under any preference loss (DESIGN.md §6, Fix 2). dpo's is the
    same either way, since identical actions cancel in its sum; dmpo's φ weights count from the
    divergence instead of from the goal, so shared actions are not pushed up or down by the two
    sides' different lengths. `anchor="start"` keeps every action in both sides (k = 0), the
    construction of the ETO and DMPO papers.

    Skip reasons in `stats.skipped`, each counting failed rollouts unless noted: `env_error`
    (trajectories of either input), `no_chosen` (no success or expert for the task), `goal_mismatch`,
    `system_mismatch`, `token_mismatch` (both sides recorded with different token ids for the same
    prompt: different tokenizers), `tie` (every compatible chosen candidate has the same reward),
    `not_lower` (the candidates' rewards are lower), `over_cap` (`max_pairs_per_task`),
    `invalid_pair` (a side without an action).
    """
    stats = stats if stats is not None else PairStats()
    if max_pairs_per_task is not None and max_pairs_per_task < 1:
        raise ValueError(f"max_pairs_per_task must be at least 1, got {max_pairs_per_task}")
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}")
    candidates: dict[tuple[str, str], list[tuple[Trajectory, bool]]] = defaultdict(list)
    failed: dict[tuple[str, str], list[Trajectory]] = defaultdict(list)
    for is_expert, source in ((True, expert), (False, trajectories)):
        for trajectory in source:
            stats.trajectories += 1
            key = (trajectory.scenario, trajectory.task_id)
            if trajectory.status == "env_error":
                stats.skipped["env_error"] += 1
            elif is_expert or trajectory.success:
                candidates[key].append((trajectory, is_expert))
            else:
                failed[key].append(trajectory)

    for key, rejected_list in failed.items():
        scenario, task_id = key
        rng = random.Random(f"{seed}/outcome/{scenario}/{task_id}")
        chosen_list = candidates.get(key, [])
        if not chosen_list:
            stats.skipped["no_chosen"] += len(rejected_list)
            continue
        planned: list[tuple[Trajectory, bool, Trajectory, list[Turn], str]] = []
        for rejected in rejected_list:
            compatible, reasons = [], Counter()
            for chosen, is_expert in chosen_list:
                prefix, remark = _shared_prompt(chosen, rejected)
                if prefix is None:
                    reasons[remark] += 1
                elif chosen.reward > rejected.reward:
                    compatible.append((chosen, is_expert, prefix, remark))
                else:
                    reasons["tie" if chosen.reward == rejected.reward else "not_lower"] += 1
            if not compatible:
                stats.skipped[reasons.most_common(1)[0][0]] += 1
                continue
            chosen, is_expert, prefix, remark = rng.choice(compatible)
            planned.append((chosen, is_expert, rejected, prefix, remark))
        if max_pairs_per_task is not None and len(planned) > max_pairs_per_task:
            keep = set(rng.sample(range(len(planned)), max_pairs_per_task))
            stats.skipped["over_cap"] += len(planned) - len(keep)
            planned = [item for index, item in enumerate(planned) if index in keep]
        for chosen, is_expert, rejected, prefix, remark in planned:
            pair = _outcome_pair(chosen, is_expert, rejected, prefix, anchor, stats)
            if pair is not None:
                stats.pairs += 1
                if remark == "unverified":
                    stats.notes["system_prompt_unverified"] += 1
                yield pair


def _prompt_turns(trajectory: Trajectory) -> tuple[Turn | None, Turn | None]:
    """The recorded system turn (or None) and the goal turn (or None if the trajectory is empty)."""
    turns = trajectory.turns
    if turns and turns[0].role == "system":
        return turns[0], turns[1] if len(turns) > 1 else None
    return None, turns[0] if turns else None


def _shared_prompt(a: Trajectory, b: Trajectory) -> tuple[list[Turn] | None, str]:
    """The prefix two trajectories share (system turn where recorded, then the goal), or None and why not.

    The reason is "" for a shared prompt, or "unverified" when a recorded system turn could not be
    compared with the scenario's rendered prompt (the scenario does not load).
    """
    system_a, goal_a = _prompt_turns(a)
    system_b, goal_b = _prompt_turns(b)
    if goal_a is None or goal_b is None or (goal_a.role, goal_a.text) != (goal_b.role, goal_b.text):
        return None, "goal_mismatch"
    if system_a is not None and system_b is not None:
        if system_a.text != system_b.text:
            return None, "system_mismatch"
        for x, y in ((system_a, system_b), (goal_a, goal_b)):
            if x.token_ids is not None and y.token_ids is not None and x.token_ids != y.token_ids:
                return None, "token_mismatch"
        return [system_a, goal_a], ""
    recorded, goal = (system_a, goal_a) if system_a is not None else (system_b, goal_b)
    if recorded is None:
        return [goal_a], ""
    rendered = _scenario_system_prompt(a.scenario)
    if rendered is not None and rendered != recorded.text:
        return None, "system_mismatch"
    return [recorded, goal], "unverified" if rendered is None else ""


@functools.lru_cache(maxsize=16)
def _scenario_system_prompt(name: str) -> str | None:
    """The system prompt text-only trajectories of a scenario were played under, or None if it cannot be loaded."""
    try:
        return scenario_system_prompt(load_scenario(name))
    except (ScenarioError, OSError):
        return None


def _outcome_pair(chosen: Trajectory, is_expert: bool, rejected: Trajectory, prefix: list[Turn], anchor: Anchor,
                  stats: PairStats) -> PreferencePair | None:
    chosen_turns = chosen.turns[len(_prompt_prefix(chosen)):]
    rejected_turns = rejected.turns[len(_prompt_prefix(rejected)):]
    shared = _shared_opening(chosen_turns, rejected_turns) if anchor == "divergence" else 0
    # Where only one side recorded token ids, keep them: they are what the policy saw.
    prefix = prefix + [x if x.token_ids is not None else y for x, y in zip(chosen_turns[:shared], rejected_turns)]
    branch_turn = sum(turn.role == "assistant" for turn in chosen_turns[:shared])
    try:
        return PreferencePair(
            # k joins the digest only past 0, so pairs anchored at the goal keep their ids across versions.
            id="outcome-" + _digest(_fingerprint(chosen), _fingerprint(rejected),
                                    *([branch_turn] if branch_turn else [])),
            scenario=chosen.scenario,
            task_id=chosen.task_id,
            prefix=prefix,
            chosen=chosen_turns[shared:],
            rejected=rejected_turns[shared:],
            branch_turn=branch_turn,
            value_chosen=chosen.reward,
            value_rejected=rejected.reward,
            source="outcome",
            metadata={"chosen": _describe(chosen) | {"expert": is_expert}, "rejected": _describe(rejected)},
        )
    except ValidationError:
        stats.skipped["invalid_pair"] += 1
        return None


def _shared_opening(a: list[Turn], b: list[Turn]) -> int:
    """How many leading turns two episodes' continuations share, cut back so that both still go on
    with an action of their own (a pair's sides start with the agent's action at the branch state)."""
    shared = 0
    for x, y in zip(a, b):
        same_tokens = x.token_ids is None or y.token_ids is None or x.token_ids == y.token_ids
        if (x.role, x.text) != (y.role, y.text) or not same_tokens:
            break
        shared += 1
    while shared > 0 and not (shared < len(a) and shared < len(b)
                              and a[shared].role == b[shared].role == "assistant"):
        shared -= 1
    return shared


def _prompt_prefix(trajectory: Trajectory) -> list[Turn]:
    system, goal = _prompt_turns(trajectory)
    return [turn for turn in (system, goal) if turn is not None]


def _describe(trajectory: Trajectory) -> dict[str, Any]:
    return {"agent": trajectory.agent, "seed": trajectory.seed, "status": trajectory.status,
            "reward": trajectory.reward, "split": trajectory.split}


def _fingerprint(trajectory: Trajectory) -> str:
    """Identifies a recorded episode by what happened in it (not by when: timings differ between reruns)."""
    content = [trajectory.scenario, trajectory.task_id, trajectory.agent, trajectory.seed, trajectory.status,
               [(turn.role, turn.text) for turn in trajectory.turns]]
    return _digest(json.dumps(content, ensure_ascii=False))


def _digest(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:16]


# ---- restoring a recorded state -----------------------------------------------------------------------


class ReplayMismatch(RuntimeError):
    """The environment did not reproduce a recorded episode."""

    def __init__(self, trajectory: Trajectory, action: int, problem: str):
        super().__init__(f"{trajectory.scenario}/{trajectory.task_id} (seed {trajectory.seed}): after action "
                         f"{action}, {problem}")
        self.action = action


def goal_index(trajectory: Trajectory) -> int:
    """The index of the goal turn: 1 after a recorded system turn, else 0."""
    return 1 if trajectory.turns and trajectory.turns[0].role == "system" else 0


def prefix_length(trajectory: Trajectory, k: int) -> int:
    """The number of turns before the (k+1)-th action: [system], goal, then k (action, observation) pairs."""
    return goal_index(trajectory) + 1 + 2 * k


def restore_state(env: gym.Env, trajectory: Trajectory, k: int) -> tuple[tuple[str, dict[str, Any]], list[dict[str, Any]]]:
    """Put `env` into state s_k of a recorded episode: reset with its task and seed, replay its first k actions.

    Returns what `reset` returned and the info of each replayed step. Raises `ReplayMismatch` when an
    observation, its role or a reward differs from the recording, or the episode ends early.
    """
    start = goal_index(trajectory)
    observation, info = env.reset(seed=trajectory.seed, options={"task_id": trajectory.task_id})
    goal = trajectory.turns[start]
    if observation != goal.text:
        raise ReplayMismatch(trajectory, 0, "the goal differs from the recorded one")
    infos = []
    for action in range(k):
        sent, seen = trajectory.turns[start + 1 + 2 * action], trajectory.turns[start + 2 + 2 * action]
        observation, reward, terminated, truncated, step_info = env.step(sent.text)
        if observation != seen.text or step_info.get("observation_role") != seen.role:
            raise ReplayMismatch(trajectory, action + 1, "the observation differs from the recorded one")
        if action < len(trajectory.rewards) and float(reward) != trajectory.rewards[action]:
            raise ReplayMismatch(trajectory, action + 1, f"the reward is {reward}, recorded {trajectory.rewards[action]}")
        if (terminated or truncated) and action + 1 < len(trajectory.rewards):
            raise ReplayMismatch(trajectory, action + 1, "the episode ended here; the recording goes on")
        infos.append(step_info)
    return (goal.text, info), infos


def _well_formed(trajectory: Trajectory) -> bool:
    """[system], goal (non-assistant), then strictly alternating (assistant, non-assistant) turns."""
    start = goal_index(trajectory)
    rest = trajectory.turns[start + 1:]
    if len(trajectory.turns) <= start or trajectory.turns[start].role == "assistant" or len(rest) % 2:
        return False
    return all(rest[i].role == "assistant" and rest[i + 1].role != "assistant" for i in range(0, len(rest), 2))


def _replayable_actions(env: gym.Env, trajectory: Trajectory) -> int:
    """How many leading actions of the trajectory the environment reproduces (-1: not even the goal)."""
    try:
        restore_state(env, trajectory, trajectory.num_actions)
    except ReplayMismatch as exc:
        return exc.action - 1
    return trajectory.num_actions


# ---- scripted agents resumed mid-episode -------------------------------------------------------------


def resume_agent(agent: Agent, trajectory: Trajectory, k: int, reset: tuple[str, dict[str, Any]],
                 infos: Sequence[dict[str, Any]], seed: int | None) -> None:
    """Start `agent` at state s_k of a recorded episode, as if it had taken the recorded actions.

    The agent is reset with the episode's first observation. Then: an agent with a
    `resume(actions, observations, infos)` method is handed the recorded prefix; an `OracleAgent`
    (and so a `NoisyOracleAgent`) is put on its plan by matching the recorded actions against it,
    advancing one plan step per recorded action equal to the next step, which is how the noisy
    oracle tracks its own progress through mistakes; any other agent is fed the recorded
    observations through `act`, its answers discarded (right for agents that only remember what
    they saw, like `RandomAgent`).
    """
    observation, info = reset
    agent.reset(observation, info, seed)
    start = goal_index(trajectory)
    actions = [trajectory.turns[start + 1 + 2 * i].text for i in range(k)]
    observations = [trajectory.turns[start + 2 + 2 * i].text for i in range(k)]
    if hasattr(agent, "resume"):
        agent.resume(actions, observations, list(infos))
    elif isinstance(agent, OracleAgent):
        plan, done, previous = agent._plan, 0, None
        for text in actions:
            previous = _parsed(text)
            if done < len(plan) and previous is not None and _same_call(previous, plan[done]):
                done += 1
        agent._next = done
        if hasattr(agent, "_previous"):
            agent._previous = previous
    else:
        seen, seen_info = observation, info
        for action_observation, action_info in zip(observations, infos):
            agent.act(seen, seen_info)
            seen, seen_info = action_observation, action_info


def _parsed(text: str) -> ToolCall | None:
    try:
        return parse_action(text)
    except ActionError:
        return None


def _same_call(a: ToolCall, b: ToolCall) -> bool:
    return a.name == b.name and a.arguments == b.arguments and a.positional == b.positional


# ---- branch pairs -----------------------------------------------------------------------------------


@dataclass
class _State:
    """A branching state s_k of a recorded trajectory and the continuations played from it."""

    trajectory: Trajectory
    k: int
    seeds: list[int]
    results: dict[int, Trajectory] = field(default_factory=dict)

    @property
    def prefix(self) -> list[Turn]:
        return self.trajectory.turns[:prefix_length(self.trajectory, self.k)]


def continuation_seed(seed: int, trajectory: Trajectory, k: int, j: int) -> int:
    """The seed of continuation j from state s_k of a recorded trajectory: a hash of all of them."""
    key = f"{seed}/{trajectory.scenario}/{trajectory.task_id}/{trajectory.agent}/{trajectory.seed}/{k}/{j}"
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big")


def branch_pairs(
    trajectories: Iterable[Trajectory],
    scenario: Scenario,
    *,
    samples: int,
    tau: float = 0.0,
    policy: LLMPolicy | None = None,
    agent_factory: Callable[[int], Agent] | None = None,
    max_states_per_trajectory: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    against_recorded: bool = False,
    stats: PairStats | None = None,
    progress: bool = False,
) -> Iterator[PreferencePair]:
    """Step-wise pairs from branching at recorded states, credited by Monte-Carlo returns.

    For each recorded trajectory of `scenario` and each chosen state s_k (k = actions taken so far;
    all k < T, or a seeded sample of `max_states_per_trajectory` of them), the environment is
    restored (reset with the trajectory's task and seed, then its first k actions replayed; states
    whose observations do not replay are skipped) and `samples` continuations are played to the end,
    continuation j with seed `continuation_seed(seed, trajectory, k, j)`:

    - with an LLM `policy`: token-in-token-out from the recorded prefix's token ids, all
      continuations batched through `batch_size` generation slots (`continue_llm_episodes`);
    - with `agent_factory(seed) -> Agent` (scripted agents): sequentially, each agent resumed at
      s_k by `resume_agent`.

    Continuations are grouped by their first action's text; Q̂(s_k, a) is the mean final reward of
    group a. If Q̂_w − Q̂_l > tau for the best and worst groups, the best group's best continuation
    (chosen) is paired with the worst group's worst continuation (rejected), anchored at branch turn
    k with value_chosen = Q̂_w and value_rejected = Q̂_l. The prefix is the recorded first turns,
    token ids included.

    `against_recorded=True` makes the recorded trajectory's own continuation from s_k the rejected
    side: it joins its first action's group (with its final reward, and counted in `num_samples`),
    and a pair is made only where another action's Q̂ beats that group's by more than τ. Branching a greedy episode this way
    contrasts what greedy decoding did at s_k with a sampled action that does better.

    Skip reasons in `stats.skipped`: `other_scenario`, `env_error`, `malformed` (trajectories);
    `replay_mismatch` (states); `continuation_env_error`, `continuation_without_action`
    (continuations); `too_few_continuations`, `single_action`, `below_tau`, `recorded_is_best`
    (against_recorded), `invalid_pair` (states that gave no pair).
    """
    if (policy is None) == (agent_factory is None):
        raise ValueError("pass exactly one of `policy` (an LLMPolicy) and `agent_factory` (scripted agents)")
    if samples < 2:
        raise ValueError(f"samples must be at least 2 to compare continuations, got {samples}")
    if tau < 0:
        raise ValueError(f"tau must be non-negative, got {tau}")
    if max_states_per_trajectory is not None and max_states_per_trajectory < 1:
        raise ValueError(f"max_states_per_trajectory must be at least 1, got {max_states_per_trajectory}")
    stats = stats if stats is not None else PairStats()
    states_by_split = _branch_states(trajectories, scenario, samples, max_states_per_trajectory, seed, stats)
    total = sum(len(states) * samples for states in states_by_split.values())
    behaviour = policy.name if policy is not None else None
    with tqdm(total=total, disable=not progress, desc=f"{scenario.name} branches", unit="cont") as bar:
        for split, states in states_by_split.items():
            if policy is not None:
                finished = _play_llm(policy, scenario, split, states, batch_size)
            else:
                finished = _play_scripted(agent_factory, scenario, split, states)
            for state, j, continuation in finished:
                bar.update()
                stats.continuations += 1
                state.results[j] = continuation
                if len(state.results) == samples:
                    stats.states += 1
                    pair = _branch_pair(state, samples, tau, seed, behaviour or continuation.agent, stats,
                                        against_recorded)
                    state.results.clear()
                    if pair is not None:
                        stats.pairs += 1
                        bar.set_postfix(pairs=stats.pairs, refresh=False)
                        yield pair


def _branch_states(trajectories: Iterable[Trajectory], scenario: Scenario, samples: int,
                   max_states: int | None, seed: int, stats: PairStats) -> dict[str, list[_State]]:
    """The states to branch from, grouped by split, after checking that each one replays."""
    envs: dict[str, gym.Env] = {}
    states: dict[str, list[_State]] = defaultdict(list)
    try:
        for trajectory in trajectories:
            stats.trajectories += 1
            if trajectory.scenario != scenario.name:
                stats.skipped["other_scenario"] += 1
                continue
            if trajectory.status == "env_error":
                stats.skipped["env_error"] += 1
                continue
            if not _well_formed(trajectory):
                stats.skipped["malformed"] += 1
                continue
            ks = list(range(trajectory.num_actions))
            if max_states is not None and len(ks) > max_states:
                rng = random.Random(f"{seed}/states/{_fingerprint(trajectory)}")
                ks = sorted(rng.sample(ks, max_states))
            if trajectory.split not in envs:
                envs[trajectory.split] = make_env(scenario, trajectory.split)
            replayable = _replayable_actions(envs[trajectory.split], trajectory)
            for k in ks:
                if k > replayable:
                    stats.skipped["replay_mismatch"] += 1
                    continue
                seeds = [continuation_seed(seed, trajectory, k, j) for j in range(samples)]
                states[trajectory.split].append(_State(trajectory, k, seeds))
    finally:
        for env in envs.values():
            env.close()
    return states


def _play_scripted(agent_factory: Callable[[int], Agent], scenario: Scenario, split: str,
                   states: list[_State]) -> Iterator[tuple[_State, int, Trajectory]]:
    env = make_env(scenario, split)
    try:
        for state in states:
            for j, sample_seed in enumerate(state.seeds):
                yield state, j, _continue_scripted(env, agent_factory(sample_seed), state, j)
    finally:
        env.close()


def _continue_scripted(env: gym.Env, agent: Agent, state: _State, j: int) -> Trajectory:
    """Play agent from s_k to the end of the episode; the trajectory holds the recorded prefix, then the new turns."""
    trajectory, k = state.trajectory, state.k
    turns, rewards = list(state.prefix), list(trajectory.rewards[:k])
    status, metadata = "env_error", {"prefix_turns": len(turns), "sample": j, "continuation_seed": state.seeds[j]}
    started_at, started, env_s = time.time(), time.perf_counter(), 0.0
    try:
        reset, infos = restore_state(env, trajectory, k)
        resume_agent(agent, trajectory, k, reset, infos, state.seeds[j])
        observation, info = (turns[-1].text, infos[-1]) if k else reset
        status, env_s = act_until_done(env, agent, observation, info, turns, rewards)
    except Exception as exc:  # noqa: BLE001 -- recorded, not raised: one broken continuation must not lose the rest
        metadata["error"] = f"{type(exc).__name__}: {exc}"
    return trajectory.model_copy(update={
        "agent": agent.name, "turns": turns, "rewards": rewards, "status": status,
        "timing": EpisodeTiming(started_at=started_at, duration_s=time.perf_counter() - started, env_s=env_s),
        "reward": rewards[-1] if rewards and status != "env_error" else 0.0, "metadata": metadata})


def _play_llm(policy: LLMPolicy, scenario: Scenario, split: str, states: list[_State],
              batch_size: int) -> Iterator[tuple[_State, int, Trajectory]]:
    # Imported here: torch and transformers take seconds to import and scripted branching does not need them.
    from trajalign.agents.llm_rollout import Continuation, continue_llm_episodes

    continuations = []
    for index, state in enumerate(states):
        trajectory, k = state.trajectory, state.k
        restore = functools.partial(_restore_for_llm, trajectory=trajectory, k=k)
        for j, sample_seed in enumerate(state.seeds):
            continuations.append(Continuation(
                task_id=trajectory.task_id, seed=trajectory.seed, turns=state.prefix,
                rewards=trajectory.rewards[:k], restore=restore,
                sample_key=f"branch/{trajectory.scenario}/{trajectory.task_id}/{sample_seed}",
                metadata={"branch": index, "sample": j, "continuation_seed": sample_seed}))
    for continuation in continue_llm_episodes(policy, scenario, split, continuations, batch_size):
        yield states[continuation.metadata["branch"]], continuation.metadata["sample"], continuation


def _restore_for_llm(env: gym.Env, trajectory: Trajectory, k: int) -> tuple[str, dict[str, Any]]:
    return restore_state(env, trajectory, k)[0]


RECORDED = -1  # the member index of the recorded trajectory's own continuation (against_recorded)


def _branch_pair(state: _State, samples: int, tau: float, seed: int, behaviour: str,
                 stats: PairStats, against_recorded: bool = False) -> PreferencePair | None:
    """Group the continuations of one state by first action and pair the best group against the worst
    (or, against_recorded, against the group of the recorded trajectory's own action)."""
    groups: dict[str, list[tuple[int, Trajectory, int]]] = {}
    if against_recorded:
        start = prefix_length(state.trajectory, state.k)
        groups[state.trajectory.turns[start].text] = [(RECORDED, state.trajectory, start)]
    for j in range(samples):
        continuation = state.results[j]
        if continuation.status == "env_error":
            stats.skipped["continuation_env_error"] += 1
            continue
        start = continuation.metadata["prefix_turns"]
        if len(continuation.turns) <= start:
            stats.skipped["continuation_without_action"] += 1
            continue
        groups.setdefault(continuation.turns[start].text, []).append((j, continuation, start))
    used = sum(len(members) for members in groups.values())
    if used < 2:
        stats.skipped["too_few_continuations"] += 1
        return None
    if len(groups) == 1:
        stats.skipped["single_action"] += 1
        return None
    values = {action: sum(c.reward for _, c, _ in members) / len(members) for action, members in groups.items()}
    order = list(groups)  # first-seen order breaks ties, so the choice is deterministic
    best = max(order, key=lambda action: values[action])
    worst = order[0] if against_recorded else min(reversed(order), key=lambda action: values[action])
    if against_recorded and best == worst:
        stats.skipped["recorded_is_best"] += 1
        return None
    gap = values[best] - values[worst]
    if gap <= tau:
        stats.skipped["below_tau"] += 1
        return None
    j_w, chosen, start_w = max(groups[best], key=lambda member: (member[1].reward, -member[0]))
    if against_recorded:
        j_l, rejected, start_l = groups[worst][0]  # the recorded continuation, placed first in its group
    else:
        j_l, rejected, start_l = min(groups[worst], key=lambda member: (member[1].reward, member[0]))
    trajectory = state.trajectory
    try:
        return PreferencePair(
            id="branch_mc-" + _digest(_fingerprint(trajectory), state.k, seed, samples, behaviour, j_w, j_l),
            scenario=trajectory.scenario,
            task_id=trajectory.task_id,
            prefix=state.prefix,
            chosen=chosen.turns[start_w:],
            rejected=rejected.turns[start_l:],
            branch_turn=state.k,
            value_chosen=values[best],
            value_rejected=values[worst],
            num_samples=used,
            source="branch_mc",
            metadata={
                "trajectory": _describe(trajectory),
                "policy": behaviour,
                "tau": tau,
                "groups": [{"action": action, "size": len(members), "value": values[action]}
                           for action, members in groups.items()],
                "chosen_group_size": len(groups[best]),
                "rejected_group_size": len(groups[worst]),
                "chosen": {"sample": j_w, "seed": state.seeds[j_w], "reward": chosen.reward, "status": chosen.status},
                "rejected": {"sample": "recorded" if j_l == RECORDED else j_l,
                             "seed": None if j_l == RECORDED else state.seeds[j_l], "reward": rejected.reward,
                             "status": rejected.status},
            },
        )
    except ValidationError:
        stats.skipped["invalid_pair"] += 1
        return None


__all__ = [
    "ANCHORS",
    "Anchor",
    "PairStats",
    "ReplayMismatch",
    "branch_pairs",
    "continuation_seed",
    "outcome_pairs",
    "prefix_length",
    "restore_state",
    "resume_agent",
]
