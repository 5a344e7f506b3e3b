"""Pair builders: outcome pairs (ETO/DMPO) and branch pairs with Monte-Carlo credit (IPR), and `trajalign pairs`."""

import argparse
from dataclasses import dataclass

import pytest

from trajalign.agents import NoiseRates, NoisyOracleAgent, OracleAgent, RandomAgent
from trajalign.agents.chat import ChatFormat, scenario_system_prompt, system_prompt
from trajalign.agents.llm import LLMPolicy, SamplingConfig
from trajalign.agents.llm_rollout import (
    Continuation,
    continue_llm_episodes,
    play_llm_episodes,
)
from trajalign.agents.rollout import MISTAKES, run_episode
from trajalign.alignment.builders import (
    PairStats,
    ReplayMismatch,
    branch_pairs,
    outcome_pairs,
    prefix_length,
    restore_state,
    resume_agent,
)
from trajalign.alignment.pairs import PreferencePair
from trajalign.envs import Turn, load_scenario, make_env
from trajalign.envs.trajectory import EpisodeTiming, Trajectory
from trajalign.envs.jsonl import JsonlWriter, read_jsonl
from trajalign.pairs_cli import add_pairs_commands

RATES = NoiseRates(wrong_tool=0.05, wrong_argument=0.2, premature_answer=0.02, repeated_call=0.05)
TASKS = 6
NOISY_SEEDS = (0, 1, 2)
# Branch-level reasons: each state that gives no pair is counted under exactly one of them.
STATE_REASONS = ("too_few_continuations", "single_action", "below_tau", "invalid_pair")


@pytest.fixture(scope="module")
def retail():
    return load_scenario("retail")


@pytest.fixture(scope="module")
def tasks(retail):
    return retail.tasks_in("train")[:TASKS]


@pytest.fixture(scope="module")
def oracle(retail, tasks):
    env = make_env(retail)
    return [run_episode(env, OracleAgent(retail), seed=0, task_id=task.id) for task in tasks]


@pytest.fixture(scope="module")
def noisy(retail, tasks):
    env = make_env(retail)
    return [run_episode(env, NoisyOracleAgent(retail, RATES, seed=1), seed=seed, task_id=task.id)
            for task in tasks for seed in NOISY_SEEDS]


def _source(pair, trajectories):
    """The recorded trajectory a branch pair was built from."""
    described = pair.metadata["trajectory"]
    (match,) = [t for t in trajectories if (t.task_id, t.agent, t.seed) == (pair.task_id, described["agent"],
                                                                               described["seed"])]
    return match


# ---- outcome pairs -----------------------------------------------------------------------------------


def test_the_data_mixes_successes_and_failures(oracle, noisy):
    assert all(t.success for t in oracle)
    failed = [t for t in noisy if not t.success]
    assert 5 <= len(failed) <= len(noisy) - 5  # both kinds, so the pairs below are not vacuous


def test_outcome_pairs_put_a_success_against_a_failure_of_the_same_task(oracle, noisy, tasks):
    broken = noisy[0].model_copy(update={"status": "env_error", "reward": 0.0, "seed": 99})
    stats = PairStats()
    pairs = list(outcome_pairs([*noisy, broken], expert=oracle, stats=stats))
    failed = [t for t in noisy if not t.success]
    assert len(pairs) == len(failed) == stats.pairs  # each failed rollout is rejected once
    assert dict(stats.skipped) == {"env_error": 1}
    assert stats.trajectories == len(noisy) + 1 + len(oracle)
    goals = {task.id: task.goal for task in tasks}
    rejected_seeds = []
    for pair in pairs:
        assert pair.source == "outcome"
        assert pair.metadata["chosen"]["status"] == "success"
        assert pair.metadata["rejected"]["status"] != "success"
        assert pair.metadata["rejected"]["seed"] != 99  # the env_error trajectory is never used
        assert pair.prefix[0] == Turn(role="user", text=goals[pair.task_id])
        assert (pair.value_chosen, pair.value_rejected) == (1.0, 0.0)
        # Anchored where the episodes first differ: the shared opening is the prefix, its actions counted by k.
        shared = pair.prefix[1:]
        assert pair.branch_turn == sum(turn.role == "assistant" for turn in shared)
        assert pair.chosen[0].role == pair.rejected[0].role == "assistant"
        assert pair.chosen[0].text != pair.rejected[0].text
        (rejected,) = [t for t in failed if t.task_id == pair.task_id and t.seed == pair.metadata["rejected"]["seed"]]
        assert shared + pair.rejected == rejected.turns[1:]
        chosen_pool = [t for t in [*oracle, *noisy] if t.task_id == pair.task_id and t.success]
        assert shared + pair.chosen in [t.turns[1:] for t in chosen_pool]
        rejected_seeds.append((pair.task_id, rejected.seed))
    assert len(set(rejected_seeds)) == len(pairs)
    assert len({pair.id for pair in pairs}) == len(pairs)
    assert any(pair.branch_turn > 0 for pair in pairs)  # the noisy agent often errs after a correct opening


def test_outcome_pairs_anchored_at_the_start_keep_every_action(oracle, noisy):
    """anchor="start" is the ETO/DMPO construction: k = 0, the same pairs with the shared opening in both sides."""
    divergent = {(p.task_id, p.metadata["rejected"]["seed"]): p for p in outcome_pairs(noisy, expert=oracle)}
    start = list(outcome_pairs(noisy, expert=oracle, anchor="start"))
    assert len(start) == len(divergent)
    for pair in start:
        twin = divergent[(pair.task_id, pair.metadata["rejected"]["seed"])]
        assert pair.branch_turn == 0 and len(pair.prefix) == 1
        shared = twin.prefix[1:]
        assert pair.chosen == shared + twin.chosen and pair.rejected == shared + twin.rejected
        assert (pair.id == twin.id) == (twin.branch_turn == 0)  # ids name k past 0
    with pytest.raises(ValueError, match="anchor must be one of divergence, start"):
        list(outcome_pairs(noisy, expert=oracle, anchor="goal"))


def test_episodes_that_part_at_an_observation_or_end_together_share_up_to_their_last_common_action():
    goal = Turn(role="user", text="rename the report")

    def episode(*texts, reward=0.0):
        turns = [goal] + [Turn(role="assistant" if i % 2 == 0 else "tool", text=text, trainable=i % 2 == 0)
                          for i, text in enumerate(texts)]
        actions = sum(turn.role == "assistant" for turn in turns)
        return Trajectory(scenario="filesystem", task_id="t", split="train", seed=int(reward), agent="model",
                          turns=turns, rewards=[0.0] * (actions - 1) + [reward], reward=reward,
                          status="success" if reward else "failure",
                          timing=EpisodeTiming(started_at=0.0, duration_s=0.0, env_s=0.0))

    # The same action met two observations (the environment is not deterministic): that action is
    # the last state both share, so both sides start with it.
    (pair,) = outcome_pairs([episode("look", "A", "answer x", reward=0.0)],
                            expert=[episode("look", "B", "answer y", reward=1.0)])
    assert pair.branch_turn == 0 and pair.chosen[0].text == pair.rejected[0].text == "look"
    # One episode continues the other: the sides keep their last shared action as well.
    (pair,) = outcome_pairs([episode("look", "A", "answer x", "done", "answer x", reward=0.0)],
                            expert=[episode("look", "A", "answer x", reward=1.0)])
    assert pair.branch_turn == 1 and [t.text for t in pair.prefix] == ["rename the report", "look", "A"]
    assert [t.text for t in pair.chosen] == ["answer x"] and [t.text for t in pair.rejected][:1] == ["answer x"]


def test_the_shared_opening_needs_the_same_tokens_where_both_sides_recorded_them(oracle, noisy):
    rejected = next(t for t in noisy if not t.success)
    (expert,) = [t for t in oracle if t.task_id == rejected.task_id]
    first = rejected.turns[1]
    assert first.role == "assistant" and first == expert.turns[1]

    def with_tokens(trajectory, token_ids):
        turns = list(trajectory.turns)
        turns[1] = turns[1].model_copy(update={"token_ids": token_ids})
        return trajectory.model_copy(update={"turns": turns})

    # The same text sampled as different tokens is a different action for the policy: no shared opening.
    (pair,) = outcome_pairs([with_tokens(rejected, [5, 6])], expert=[with_tokens(expert, [5, 7])])
    assert pair.branch_turn == 0 and pair.rejected[0].token_ids == [5, 6]
    # Recorded on one side only, the text decides, and the prefix keeps the recorded tokens.
    (pair,) = outcome_pairs([with_tokens(rejected, [5, 6])], expert=[expert])
    assert pair.branch_turn >= 1 and pair.prefix[1].token_ids == [5, 6]


def test_outcome_pairs_drop_ties_and_unshared_prompts(oracle, noisy, retail):
    failed = [t for t in noisy if not t.success]
    by_task = {}
    for trajectory in failed:
        by_task.setdefault(trajectory.task_id, []).append(trajectory)
    task_failures = next(group for group in by_task.values() if len(group) >= 2)
    # A failed "expert" has the same reward as the failures: every candidate pair is a tie.
    stats = PairStats()
    assert list(outcome_pairs(task_failures[1:], expert=task_failures[:1], stats=stats)) == []
    assert stats.skipped == {"tie": len(task_failures) - 1}

    target = failed[0]
    (expert,) = [t for t in oracle if t.task_id == target.task_id]
    other_goal = target.model_copy(update={"turns": [Turn(role="user", text="a different request"),
                                                     *target.turns[1:]]})
    stats = PairStats()
    assert list(outcome_pairs([other_goal], expert=[expert], stats=stats)) == []
    assert stats.skipped == {"goal_mismatch": 1}

    # One side recorded with a system turn (an LLM), the other text-only: the prompts match when the
    # recorded system text is the scenario's rendered prompt, and the recorded turns become the prefix.
    system = Turn(role="system", text=scenario_system_prompt(retail), token_ids=[1, 2, 3])
    with_system = expert.model_copy(update={"turns": [system, *expert.turns]})
    (pair,) = outcome_pairs([target], expert=[with_system])
    assert pair.prefix[:2] == [system, expert.turns[0]] and expert.turns[0].text == target.turns[0].text
    shared = pair.prefix[2:]
    assert shared + pair.chosen == expert.turns[1:] and shared + pair.rejected == target.turns[1:]
    wrong = with_system.model_copy(update={"turns": [Turn(role="system", text="other rules"), *expert.turns]})
    stats = PairStats()
    assert list(outcome_pairs([target], expert=[wrong], stats=stats)) == []
    assert stats.skipped == {"system_mismatch": 1}


def test_outcome_pairs_cap_per_task_and_depend_only_on_the_seed(oracle, noisy):
    stats = PairStats()
    capped = list(outcome_pairs(noisy, oracle, max_pairs_per_task=1, seed=3, stats=stats))
    failed_tasks = {t.task_id for t in noisy if not t.success}
    assert len(capped) == len(failed_tasks)
    assert stats.skipped["over_cap"] == sum(not t.success for t in noisy) - len(failed_tasks)
    again = list(outcome_pairs(noisy, oracle, max_pairs_per_task=1, seed=3))
    assert [p.model_dump() for p in again] == [p.model_dump() for p in capped]
    selections = {tuple(p.id for p in outcome_pairs(noisy, oracle, max_pairs_per_task=1, seed=s)) for s in range(6)}
    assert len(selections) > 1  # the seed chooses among the candidates


# ---- branch pairs, scripted -------------------------------------------------------------------------


def _noisy_factory(retail):
    return lambda seed: NoisyOracleAgent(retail, RATES, seed=seed)


def _branch(retail, trajectories, seed=0, **options):
    stats = PairStats()
    settings = {"samples": 6, "tau": 0.2, "max_states_per_trajectory": 2, "agent_factory": _noisy_factory(retail),
                **options}
    pairs = list(branch_pairs(trajectories, retail, seed=seed, stats=stats, **settings))
    return pairs, stats


def _play_actions(env, trajectory, k, turns):
    """Restore s_k and send a continuation's actions; return the final (reward, status)."""
    restore_state(env, trajectory, k)
    reward, info = 0.0, {}
    for turn in turns:
        if turn.role == "assistant":
            _, reward, _, _, info = env.step(turn.text)
    return reward, info["status"]


def test_branch_pairs_credit_the_branch_state(retail, noisy):
    pairs, stats = _branch(retail, noisy)
    assert len(pairs) >= 5
    assert stats.trajectories == len(noisy)
    assert stats.continuations == 6 * stats.states
    assert stats.states == stats.pairs + sum(stats.skipped[reason] for reason in STATE_REASONS)
    env = make_env(retail)
    for pair in pairs:
        source = _source(pair, noisy)
        assert pair.source == "branch_mc" and pair.num_samples == 6
        assert pair.value_chosen > pair.value_rejected + 0.2
        assert pair.prefix == source.turns[:len(pair.prefix)]
        assert len(pair.prefix) == prefix_length(source, pair.branch_turn)
        assert sum(turn.role == "assistant" for turn in pair.prefix) == pair.branch_turn
        assert pair.chosen[0].text != pair.rejected[0].text  # the two sides differ at the branch state
        groups = pair.metadata["groups"]
        assert sum(group["size"] for group in groups) == 6
        assert pair.value_chosen == max(g["value"] for g in groups)
        assert pair.value_rejected == min(g["value"] for g in groups)
        (chosen_group,) = [g for g in groups if g["action"] == pair.chosen[0].text]
        assert chosen_group["value"] == pair.value_chosen
        # The continuations are real: replayed from the restored state they end as recorded.
        assert _play_actions(env, source, pair.branch_turn, pair.chosen) == (
            pair.metadata["chosen"]["reward"], pair.metadata["chosen"]["status"])
        assert _play_actions(env, source, pair.branch_turn, pair.rejected) == (
            pair.metadata["rejected"]["reward"], pair.metadata["rejected"]["status"])
        assert pair.metadata["chosen"]["reward"] > pair.metadata["rejected"]["reward"]


def test_branch_pairs_against_the_recorded_continuation_reject_what_the_episode_did(retail, noisy):
    failed = [t for t in noisy if not t.success]
    pairs, stats = _branch(retail, failed, against_recorded=True, tau=0.0)
    assert pairs and stats.skipped["recorded_is_best"] > 0
    assert stats.states == stats.pairs + sum(stats.skipped[reason] for reason in (*STATE_REASONS, "recorded_is_best"))
    for pair in pairs:
        source = _source(pair, failed)
        # The rejected side is the recorded episode from the branch state on, its group valued with it.
        assert pair.rejected == source.turns[len(pair.prefix):]
        assert pair.metadata["rejected"] == {"sample": "recorded", "seed": None, "reward": source.reward,
                                             "status": source.status}
        groups = {group["action"]: group for group in pair.metadata["groups"]}
        recorded = groups[pair.rejected[0].text]
        assert pair.value_rejected == recorded["value"] and pair.num_samples == 7  # 6 continuations + the episode
        assert pair.value_chosen == max(group["value"] for group in groups.values()) > recorded["value"]
        assert pair.chosen[0].text != pair.rejected[0].text


def test_branch_pairs_are_reproducible_from_the_seed(retail, noisy):
    first, _ = _branch(retail, noisy[:9])
    second, _ = _branch(retail, noisy[:9])
    assert first and [p.model_dump() for p in first] == [p.model_dump() for p in second]
    other, _ = _branch(retail, noisy[:9], seed=1)
    assert {p.id for p in other}.isdisjoint(p.id for p in first)
    # A higher threshold keeps a subset of the states.
    strict, _ = _branch(retail, noisy[:9], tau=0.6)
    assert {p.id for p in strict} <= {p.id for p in first}
    assert all(p.value_chosen - p.value_rejected > 0.6 for p in strict)


def test_states_that_do_not_replay_are_skipped(retail, noisy):
    trajectory = max(noisy, key=lambda t: t.num_actions)
    turns = list(trajectory.turns)
    observation = prefix_length(trajectory, 2) - 1  # the observation after the second action
    turns[observation] = turns[observation].model_copy(update={"text": "something else"})
    tampered = trajectory.model_copy(update={"turns": turns})
    env = make_env(retail)
    restore_state(env, tampered, 1)
    with pytest.raises(ReplayMismatch, match="after action 2"):
        restore_state(env, tampered, 2)
    pairs, stats = _branch(retail, [tampered], samples=2, tau=0.0, max_states_per_trajectory=None)
    assert stats.skipped["replay_mismatch"] == trajectory.num_actions - 2
    assert stats.states == 2 and all(pair.branch_turn < 2 for pair in pairs)


def test_oracle_resumes_its_plan_after_recorded_mistakes(retail, noisy):
    # A noisy run that succeeded despite mistakes: every state on it can still be won.
    trajectory = next(t for t in noisy if t.success and t.num_actions > len(retail.task(t.task_id).oracle))
    env = make_env(retail)
    for k in range(trajectory.num_actions):
        agent = OracleAgent(retail)
        reset, infos = restore_state(env, trajectory, k)
        resume_agent(agent, trajectory, k, reset, infos, seed=0)
        observation, info = (trajectory.turns[prefix_length(trajectory, k) - 1].text, infos[-1]) if k else reset
        for _ in range(20):
            observation, _, terminated, truncated, info = env.step(agent.act(observation, info).text)
            if terminated or truncated:
                break
        assert info["status"] == "success", f"state {k}"


def test_the_noisy_oracle_marks_its_mistakes_and_its_other_actions_are_the_oracles(oracle, noisy):
    oracle_actions = {t.task_id: [turn.text for turn in t.turns if turn.role == "assistant"] for t in oracle}
    kinds = set()
    for trajectory in noisy:
        mistakes = {int(index): kind for index, kind in trajectory.metadata.get(MISTAKES, {}).items()}
        assert all(trajectory.turns[index].role == "assistant" for index in mistakes)
        kinds |= set(mistakes.values())
        if trajectory.success:
            actions = [index for index, turn in enumerate(trajectory.turns) if turn.role == "assistant"]
            kept = [trajectory.turns[index].text for index in actions if index not in mistakes]
            expected = oracle_actions[trajectory.task_id]
            # A harmless mistake in the final answer ("...cancelled.x") can end the episode early.
            assert kept == expected or (actions[-1] in mistakes and kept == expected[:len(kept)])
    assert {"wrong_argument", "wrong_tool"} <= kinds <= {"wrong_tool", "wrong_argument", "premature_answer",
                                                          "repeated_call"}
    assert any(t.success and t.metadata.get(MISTAKES) for t in noisy)  # recoveries exist, so the check above bites


def test_random_agents_branch_too(retail, noisy):
    _, stats = _branch(retail, noisy[:3], samples=3, agent_factory=lambda seed: RandomAgent(seed=seed))
    assert stats.states == 6 and stats.continuations == 18
    assert stats.states == stats.pairs + sum(stats.skipped[reason] for reason in STATE_REASONS)


def test_branch_pairs_reject_bad_settings(retail, noisy):
    with pytest.raises(ValueError, match="exactly one"):
        list(branch_pairs(noisy, retail, samples=4))
    with pytest.raises(ValueError, match="samples must be at least 2"):
        list(branch_pairs(noisy, retail, samples=1, agent_factory=_noisy_factory(retail)))
    with pytest.raises(ValueError, match="tau"):
        list(branch_pairs(noisy, retail, samples=2, tau=-0.1, agent_factory=_noisy_factory(retail)))


# ---- branch pairs, tiny LLM -------------------------------------------------------------------------


@dataclass
class _Steer:
    generator: object
    script: list[int] | None


class OracleSteeredPolicy(LLMPolicy):
    """The real batched generation path; rows marked good emit the oracle's next action, the others sample.

    The model computes every logit and log-prob as usual: only which token is taken is dictated for
    the good rows, so the data has successes and failures without training a model.
    """

    def __init__(self, *args, scenario, good, **kwargs):
        super().__init__(*args, **kwargs)
        self.scenario, self.good = scenario, good
        self.assistant_id = self.tokenizer.convert_tokens_to_ids("<|assistant|>")

    def _generator(self, row, position):
        generator = super()._generator(row, position)
        if not self.good(row.sample_key):
            return _Steer(generator, None)
        plan = self.scenario.task(row.sample_key.split("/")[-2]).oracle
        step = row.ids.count(self.assistant_id) - 1
        script = self.format.encode(plan[step].to_text()) if step < len(plan) else []
        return _Steer(generator, [*script, self.stop_id])

    def _choose(self, logits, steer):
        if steer.script is None:
            return super()._choose(logits, steer.generator)
        return steer.script.pop(0) if steer.script else self.stop_id


def _steered(retail_model, retail, good, max_new_tokens=48):
    base = LLMPolicy.from_pretrained(retail_model)
    return OracleSteeredPolicy(base.model, base.tokenizer, SamplingConfig(max_new_tokens=max_new_tokens, seed=0),
                               scenario=retail, good=good)


def _every_other_seed(key):
    return not key.startswith("branch/") or int(key.rsplit("/", 1)[1]) % 2 == 0


@pytest.fixture(scope="module")
def llm_recorded(retail_model, retail, tasks):
    policy = _steered(retail_model, retail, good=lambda key: True)
    trajectories = list(play_llm_episodes(policy, retail, "train", [(task.id, 0) for task in tasks[:2]], batch_size=2))
    assert all(t.success and t.turns[0].role == "system" for t in trajectories)
    assert all(turn.token_ids for t in trajectories for turn in t.turns)
    return trajectories


def test_llm_branch_pairs_continue_from_the_recorded_tokens(retail_model, retail, llm_recorded):
    policy = _steered(retail_model, retail, good=_every_other_seed)
    stats = PairStats()
    pairs = list(branch_pairs(llm_recorded, retail, samples=4, tau=0.3, policy=policy, max_states_per_trajectory=2,
                              batch_size=4, stats=stats))
    assert stats.states == 4 and stats.continuations == 16
    assert len(pairs) >= 2
    for pair in pairs:
        source = _source(pair, llm_recorded)
        assert pair.prefix == source.turns[:prefix_length(source, pair.branch_turn)]  # token ids included
        assert pair.metadata["chosen"]["status"] == "success"
        assert pair.metadata["rejected"]["status"] != "success"
        assert pair.value_chosen == 1.0 and pair.value_rejected == 0.0
        assert all(turn.token_ids for turn in pair.chosen + pair.rejected)
        # The continuation was generated from exactly the recorded prefix ids: re-scoring the
        # concatenation reproduces the log-probs recorded while sampling.
        for side in (pair.chosen, pair.rejected):
            ids = [token for turn in pair.prefix + side for token in turn.token_ids]
            scored = policy.token_logprobs(ids)
            position = sum(len(turn.token_ids) for turn in pair.prefix)
            for turn in side:
                if turn.role == "assistant":
                    recorded = sum(turn.logprobs)
                    assert abs(sum(scored[position - 1: position - 1 + len(turn.token_ids)]) - recorded) < 1e-4
                position += len(turn.token_ids)
    again = list(branch_pairs(llm_recorded, retail, samples=4, tau=0.3, policy=policy, max_states_per_trajectory=2,
                              batch_size=4))
    assert [(p.id, p.chosen, p.rejected) for p in again] == [(p.id, p.chosen, p.rejected) for p in pairs]


def test_llm_sampling_branches_end_to_end(retail_model, retail, llm_recorded):
    policy = LLMPolicy.from_pretrained(retail_model, SamplingConfig(max_new_tokens=8, seed=0))
    stats = PairStats()
    pairs = list(branch_pairs(llm_recorded[:1], retail, samples=2, policy=policy, max_states_per_trajectory=2,
                              batch_size=4, stats=stats))
    assert stats.states == 2 and stats.continuations == 4
    assert stats.states == len(pairs) + sum(stats.skipped[reason] for reason in STATE_REASONS)


def test_llm_continues_a_text_only_prefix_in_the_rendered_layout(retail_model, retail, oracle):
    policy = LLMPolicy.from_pretrained(retail_model, SamplingConfig(max_new_tokens=8, seed=0))
    trajectory, k = oracle[0], 2
    prefix = trajectory.turns[:prefix_length(trajectory, k)]
    continuation = Continuation(task_id=trajectory.task_id, seed=trajectory.seed, turns=prefix,
                                rewards=trajectory.rewards[:k], sample_key="test",
                                restore=lambda env: restore_state(env, trajectory, k)[0], metadata={"mine": 1})
    (played,) = continue_llm_episodes(policy, retail, "train", [continuation], batch_size=1)
    start = played.metadata["prefix_turns"]
    assert start == len(prefix) + 1 and played.metadata["mine"] == 1
    fmt = ChatFormat(policy.tokenizer)
    expected = fmt.turn_segments(prefix, scenario_system_prompt(retail))
    assert [(turn.role, turn.text, turn.token_ids) for turn in played.turns[:start]] == [
        (turn.role, turn.text, ids) for turn, ids in expected]
    assert played.turns[0].text == system_prompt(make_env(retail).reset(options={"task_id": trajectory.task_id})[1])
    assert played.turns[start].role == "assistant" and played.turns[start].token_ids
    assert played.rewards[:k] == trajectory.rewards[:k] and played.seed == trajectory.seed

    broken = Continuation(task_id=trajectory.task_id, seed=trajectory.seed, turns=prefix, rewards=[], sample_key="x",
                          restore=lambda env: restore_state(env, trajectory.model_copy(update={"turns": [
                              Turn(role="user", text="not the goal"), *trajectory.turns[1:]]}), k)[0])
    (failed,) = continue_llm_episodes(policy, retail, "train", [broken])
    assert failed.status == "env_error" and "goal differs" in failed.metadata["error"]


# ---- CLI --------------------------------------------------------------------------------------------


def _cli(argv):
    parser = argparse.ArgumentParser(prog="trajalign")
    add_pairs_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def _write(path, records, bad_line=False):
    with JsonlWriter(path) as writer:
        for record in records:
            writer.write(record)
    if bad_line:
        with open(path, "a") as file:
            file.write('{"scenario": "retail", "cut short\n')


def test_cli_outcome_writes_pairs_once_and_reports_bad_lines(tmp_path, capsys, oracle, noisy):
    data, expert, out = tmp_path / "noisy.jsonl", tmp_path / "oracle.jsonl", tmp_path / "pairs.jsonl"
    _write(data, noisy, bad_line=True)
    _write(expert, oracle)
    argv = ["pairs", "outcome", "--data", str(data), "--expert", str(expert), "--out", str(out)]
    assert _cli(argv) == 0
    printed = capsys.readouterr().out
    failed = sum(not t.success for t in noisy)
    assert f"{failed} pairs from {len(noisy) + len(oracle)} trajectories" in printed
    assert f"written: {failed} pairs to {out}" in printed
    assert f"{data}:{len(noisy) + 1}: not valid JSON" in printed
    pairs = read_jsonl(out, PreferencePair)
    assert len(pairs) == failed and all(p.source == "outcome" for p in pairs)
    assert _cli(argv) == 0  # a rerun adds nothing
    assert f"written: 0 pairs to {out} ({failed} already there)" in capsys.readouterr().out
    assert len(read_jsonl(out, PreferencePair)) == failed
    assert any(p.branch_turn > 0 for p in pairs)
    at_start = tmp_path / "pairs-start.jsonl"
    assert _cli([*argv[:-1], str(at_start), "--anchor", "start"]) == 0
    assert {p.branch_turn for p in read_jsonl(at_start, PreferencePair)} == {0}
    assert _cli(["pairs", "outcome", "--data", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2


def test_cli_branch_with_a_scripted_agent(tmp_path, capsys, retail, noisy):
    data, out = tmp_path / "noisy.jsonl", tmp_path / "branch.jsonl"
    _write(data, noisy[:6])
    argv = ["pairs", "branch", "--scenario", "retail", "--data", str(data), "--agent", "noisy", "--samples", "6",
            "--tau", "0.2", "--states-per-trajectory", "2", "--out", str(out), "--seed", "0", "--no-progress",
            "--noise", RATES.model_dump_json()]
    assert _cli(argv) == 0
    printed = capsys.readouterr().out
    expected, stats = _branch(retail, noisy[:6])
    assert f"{stats.pairs} pairs from 6 trajectories, {stats.states} states" in printed
    assert [p.id for p in read_jsonl(out, PreferencePair)] == [p.id for p in expected]
    assert _cli([*argv[:argv.index("--samples")], "--samples", "1", "--out", str(out)]) == 2
    assert "--samples must be at least 2" in capsys.readouterr().err


def test_cli_branch_with_a_model(tmp_path, capsys, retail_model, llm_recorded):
    data, out = tmp_path / "llm.jsonl", tmp_path / "branch.jsonl"
    _write(data, llm_recorded)
    assert _cli(["pairs", "branch", "--scenario", "retail", "--data", str(data), "--model", str(retail_model),
                 "--samples", "2", "--states-per-trajectory", "1", "--max-new-tokens", "8", "--batch-size", "4",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "from 2 trajectories, 2 states, 4 continuations" in printed
    assert out.exists() and f"pairs to {out}" in printed
