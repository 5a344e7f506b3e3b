"""LLMPolicy: token-in-token-out batched rollouts with real (randomly initialized) HF models."""

from collections import deque

import pytest
import torch

import trajalign  # noqa: F401
from trajalign.agents.chat import ChatFormat, scenario_system_prompt, trajectory_tokens
from trajalign.agents.evaluate import pass_hat_k
from trajalign.agents.llm import LLMPolicy, SamplingConfig
from trajalign.agents.llm_rollout import play_llm_episodes
from trajalign.agents.rollout import episode_plan
from trajalign.agents.tiny import build_tiny_model
from trajalign.envs import Trajectory, load_scenario

ARCHITECTURES = ["llama", "qwen2", "gpt2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {arch: build_tiny_model(["retail"], root / arch, architecture=arch, max_tasks_per_scenario=20)
            for arch in ARCHITECTURES}


@pytest.fixture(scope="module")
def retail():
    return load_scenario("retail")


def _policy(path, **sampling):
    return LLMPolicy.from_pretrained(path, SamplingConfig(**{"max_new_tokens": 12, **sampling}))


def _play(policy, scenario, episodes, batch_size, seed=0):
    plan = episode_plan(scenario.tasks_in("train"), episodes, seed)
    return list(play_llm_episodes(policy, scenario, "train", plan, batch_size))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_architecture_runs_a_rollout_end_to_end(models, retail, architecture):
    policy = _policy(models[architecture])
    trajectories = _play(policy, retail, episodes=3, batch_size=2)
    assert len(trajectories) == 3
    for trajectory in trajectories:
        assert trajectory.status in ("failure", "invalid_action_limit", "truncated", "success")
        assert trajectory.turns[0].role == "system" and trajectory.turns[1].role == "user"
        assert all(turn.token_ids for turn in trajectory.turns)
        assistant = [turn for turn in trajectory.turns if turn.role == "assistant"]
        assert assistant and all(turn.trainable and len(turn.logprobs) == len(turn.token_ids) for turn in assistant)
        Trajectory.model_validate_json(trajectory.model_dump_json())  # survives the JSONL round trip


def test_a_batch_of_no_environments_is_refused_rather_than_looping_forever(models, retail):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        _play(_policy(models["llama"]), retail, episodes=1, batch_size=0)


def _rescore_error(policy, trajectory):
    """Largest difference between recorded and re-scored per-turn log-probs."""
    ids = [token for turn in trajectory.turns for token in turn.token_ids]
    scored = policy.token_logprobs(ids)
    worst, position = 0.0, 0
    for turn in trajectory.turns:
        if turn.role == "assistant":
            recomputed = sum(scored[position - 1: position - 1 + len(turn.token_ids)])
            worst = max(worst, abs(recomputed - sum(turn.logprobs)))
        position += len(turn.token_ids)
    return worst


@pytest.mark.parametrize("batch_size, reuse_cache", [(1, True), (4, True), (4, False)])
def test_rescoring_reproduces_recorded_logprobs(models, retail, batch_size, reuse_cache):
    policy = _policy(models["llama"])
    policy.reuse_cache = reuse_cache
    trajectories = _play(policy, retail, episodes=4, batch_size=batch_size)
    assert max(_rescore_error(policy, t) for t in trajectories) < 1e-4


def test_recorded_tokens_are_the_trained_layout(models, retail):
    """The chat format rebuilds exactly the sequence the policy saw, and assistant text is the decoded tokens."""
    policy = _policy(models["qwen2"])
    trajectory = _play(policy, retail, episodes=1, batch_size=1)[0]
    ids, turn_index = trajectory_tokens(ChatFormat(policy.tokenizer), trajectory, system="unused")
    assert ids == [token for turn in trajectory.turns for token in turn.token_ids]
    trained = {index for index in turn_index if index >= 0}
    assert trained == {i for i, turn in enumerate(trajectory.turns) if turn.role == "assistant"}
    for turn in trajectory.turns:
        if turn.role == "assistant":
            stop = turn.token_ids[-1] == policy.stop_id
            assert policy.tokenizer.decode(turn.token_ids[:-1] if stop else turn.token_ids) == turn.text


def test_sampling_is_reproducible_and_greedy_is_deterministic(models, retail):
    first = _play(_policy(models["llama"], temperature=1.0, top_p=0.9, seed=3), retail, 3, 2)
    second = _play(_policy(models["llama"], temperature=1.0, top_p=0.9, seed=3), retail, 3, 2)
    assert [t.turns for t in first] == [t.turns for t in second]
    greedy = _policy(models["llama"], temperature=0.0)
    trajectory = _play(greedy, retail, 1, 1)[0]
    ids = torch.tensor([[token for turn in trajectory.turns for token in turn.token_ids]])
    with torch.no_grad():
        best = greedy.model(input_ids=ids).logits[0].argmax(-1)
    position = 0
    for turn in trajectory.turns:
        if turn.role == "assistant":  # every greedy token is the argmax of the plain forward
            assert turn.token_ids == best[position - 1: position - 1 + len(turn.token_ids)].tolist()
        position += len(turn.token_ids)


class ScriptedOutputPolicy(LLMPolicy):
    """The real batched generation path, with each turn's tokens dictated by a script."""

    def __init__(self, *args, script, **kwargs):
        super().__init__(*args, **kwargs)
        self.script = deque(script)
        self._turn: deque[int] = deque()

    def generate(self, rows):
        self._turn = deque(self.script.popleft() if self.script else [])
        return super().generate(rows)

    def _choose(self, logits, generator):
        return self._turn.popleft() if self._turn else self.stop_id


def test_bad_model_output_flows_into_the_env_error_path(models, retail):
    base = _policy(models["llama"])
    encode = lambda text: base.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    script = [
        [],                                                      # empty action
        encode("step " * 60),                                    # endless: cut at max_new_tokens
        encode('{"name": "get_order", "argume'),               # invalid JSON
        encode('{"name": "launch_rockets", "arguments": {}}'),  # unknown tool
    ]
    policy = ScriptedOutputPolicy(base.model, base.tokenizer, SamplingConfig(max_new_tokens=24, temperature=0),
                                  script=script)
    task = retail.tasks_in("train")[0]
    env_limit = retail.limits.max_invalid_actions
    (trajectory,) = play_llm_episodes(policy, retail, "train", [(task.id, 0)], batch_size=1)
    observations = [turn.text for turn in trajectory.turns[3::2]]
    assert observations[0].startswith("Error: Empty action")
    assert observations[1].startswith("Error: Could not parse")
    assert observations[2].startswith("Error: Invalid JSON")
    assert observations[3].startswith("Error: Unknown tool 'launch_rockets'")
    assert trajectory.status == "invalid_action_limit" and len(trajectory.rewards) == env_limit
    endless = trajectory.turns[4]
    assert len(endless.token_ids) == 24 and endless.token_ids[-1] != policy.stop_id
    assert trajectory.turns[5].token_ids[0] == policy.stop_id  # the cut action is closed in the context
    assert _rescore_error(policy, trajectory) < 1e-4


def test_context_limit_truncates_with_a_stated_reason(models, retail):
    policy = _policy(models["gpt2"])
    # The system prompt and goal fit, a few turns do not.
    policy.max_context = len(policy.format.encode(scenario_system_prompt(retail))) + 120
    trajectories = _play(policy, retail, episodes=2, batch_size=2)
    for trajectory in trajectories:
        if trajectory.status == "truncated":
            assert trajectory.metadata["truncated_by"] == "context_limit"
            assert trajectory.metadata["context_tokens"] + 12 > policy.max_context
    assert any(t.metadata.get("truncated_by") == "context_limit" for t in trajectories)


def test_pass_hat_k_is_the_unbiased_all_k_succeed_estimate():
    def attempts(task_id, results):
        return [Trajectory(scenario="s", task_id=task_id, split="test", seed=i, agent="a", turns=[], rewards=[],
                           reward=float(ok), status="success" if ok else "failure",
                           timing={"started_at": 0, "duration_s": 0, "env_s": 0}) for i, ok in enumerate(results)]

    trajectories = attempts("a", [True, True, False, True]) + attempts("b", [False, False, False, False])
    assert pass_hat_k(trajectories, 1) == pytest.approx((3 / 4 + 0) / 2)
    assert pass_hat_k(trajectories, 2) == pytest.approx((3 / 6 + 0) / 2)
    assert pass_hat_k(trajectories, 4) == 0.0
    assert pass_hat_k(attempts("c", [True] * 3), 3) == 1.0


def test_eval_cli_reports_pass_hat_k(models, tmp_path, capsys):
    import json

    from trajalign.cli import main

    summary = tmp_path / "eval.json"
    assert main(["eval", "--model", str(models["llama"]), "--scenario", "retail", "--episodes", "3", "--samples", "2",
                 "--max-new-tokens", "8", "--batch-size", "3", "--summary-json", str(summary), "--no-progress"]) == 0
    result = json.loads(summary.read_text())
    assert result["tasks"] == 3 and result["episodes"] == 6 and set(result["pass_hat_k"]) == {"1", "2"}
    assert "pass^2" in capsys.readouterr().out


def test_rollout_cli_with_a_model_directory(models, tmp_path):
    from trajalign.cli import main
    from trajalign.envs.jsonl import read_jsonl

    out = tmp_path / "llm.jsonl"
    assert main(["rollout", "--scenario", "retail", "--agent", str(models["llama"]), "--episodes", "3",
                 "--max-new-tokens", "8", "--out", str(out), "--no-progress"]) == 0
    trajectories = read_jsonl(out, Trajectory)
    assert len(trajectories) == 3 and all(t.agent == "llama" for t in trajectories)
    assert main(["rollout", "--scenario", "retail", "--agent", str(tmp_path / "missing"), "--out", str(out)]) == 2


torch.set_num_threads(2)
