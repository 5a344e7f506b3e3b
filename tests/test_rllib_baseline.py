"""The admissible-action wrapper, RLlib registration, and one iteration of the PPO baseline.

Whether PPO beats the random agent is a benchmark (docs/ray.md, benchmarks/results/ppo_baseline.md);
here one training iteration runs end to end through the command line.
"""

import json

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from trajalign.envs import load_scenario, make_env
from trajalign.envs.admissible import CONTEXT_FEATURES, SLOT_WIDTH, AdmissibleActionEnv, make_admissible_env
from trajalign.envs.user_sim import ScriptedUser

ray = pytest.importorskip("ray")


def _play_oracle(env: AdmissibleActionEnv, info: dict) -> tuple[dict, float]:
    """Follow the task's oracle through the candidates (a question that gets the same reply stands in for the
    oracle's question; the answer quoting the latest output for its answer)."""
    task, user, total = env.env.unwrapped.task, ScriptedUser(), 0.0
    for call in task.oracle:
        candidates = info["candidates"]
        if call.to_text() in candidates:
            choice = candidates.index(call.to_text())
        elif call.name == "ask_user":
            wanted = user.reply(task, call.arguments["message"])
            choice = next(i for i, text in enumerate(candidates) if '"ask_user"' in text
                          and user.reply(task, json.loads(text)["arguments"]["message"]) == wanted)
        else:
            assert call.name == "final_answer", f"{call.to_text()} is not among {candidates}"
            choice = next(i for i, text in enumerate(candidates) if '"final_answer"' in text)
        _, reward, terminated, truncated, info = env.step(choice)
        total += reward
        if terminated or truncated:
            break
    return info, total


def test_the_wrapper_is_a_gymnasium_env_with_fixed_size_features():
    env = make_admissible_env("retail", "train", max_candidates=16)
    check_env(env, skip_render_check=True)
    observation, info = env.reset(seed=3)
    assert observation.shape == (16 * SLOT_WIDTH + CONTEXT_FEATURES,) and observation.dtype == np.float32
    assert 0 < len(info["candidates"]) <= 16
    present = observation[: 16 * SLOT_WIDTH].reshape(16, SLOT_WIDTH)[:, 0]
    assert present.sum() == len(info["candidates"])
    email = next(token for token in info["text_observation"].split() if "@" in token).rstrip(".,")
    assert json.dumps({"name": "find_user_id_by_email", "arguments": {"email": email}}) in info["candidates"]
    # An empty slot is an invalid action, not a crash.
    _, reward, _, _, info = env.step(15 if len(info["candidates"]) < 16 else 0)
    assert reward == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_oracle_path_is_admissible_and_succeeds(seed):
    env = make_admissible_env("retail", "train", shaping=0.0)
    _, info = env.reset(seed=seed)
    info, total = _play_oracle(env, info)
    assert info["status"] == "success" and total == 1.0


def test_candidates_never_leak_the_oracle_and_are_all_accepted():
    scenario = load_scenario("retail")
    env = AdmissibleActionEnv(make_env(scenario, "train"), max_candidates=32)
    _, info = env.reset(seed=5)
    first = scenario.task(info["task_id"]).oracle[1]  # get_user_details(user_id): the id is not known yet
    assert first.to_text() not in info["candidates"]
    for index, text in enumerate(info["candidates"]):
        if '"final_answer"' in text or '"ask_user"' in text:
            continue
        env.reset(seed=5)
        _, _, _, _, step_info = env.step(index)
        assert step_info["action_error"] is None, text  # dry-run admissible = accepted by the env


def test_shaping_is_potential_based():
    plain, shaped = make_admissible_env("retail", "train"), make_admissible_env("retail", "train", shaping=1.0)
    _, plain_info = plain.reset(seed=1)
    _, shaped_info = shaped.reset(seed=1)
    _, plain_total = _play_oracle(plain, plain_info)
    info, shaped_total = _play_oracle(shaped, shaped_info)
    # Φ goes from 0 (nothing seen, nothing changed) to 1 (every fact seen, the goal state reached).
    assert info["status"] == "success" and shaped_total == pytest.approx(plain_total + 1.0)


def test_every_env_id_registers_with_rllib():
    from ray.tune.registry import ENV_CREATOR, _global_registry

    from trajalign.envs import ENV_IDS
    from trajalign.envs.rllib import ADMISSIBLE_ENV_ID, register_rllib_envs

    names = register_rllib_envs()
    assert set(ENV_IDS) <= set(names) and ADMISSIBLE_ENV_ID in names
    env = _global_registry.get(ENV_CREATOR, ADMISSIBLE_ENV_ID)({"scenario": "filesystem", "split": "test",
                                                               "max_candidates": 8})
    observation, info = env.reset(seed=0)
    assert env.action_space.n == 8 and observation.shape == env.observation_space.shape and info["split"] == "test"
    env.close()


@pytest.mark.parametrize("scenario", ["retail", "wiki"])  # wiki: the web page's listed actions, in Chromium
def test_ppo_baseline_command_runs_one_iteration(local_ray, tmp_path, capsys, scenario):
    from trajalign.cli import main

    out = tmp_path / "ppo"
    summary = tmp_path / "summary.json"
    assert main(["baseline", "ppo", "--scenario", scenario, "--iterations", "1", "--out", str(out), "--episodes", "4",
                 "--train-batch-size", "200", "--env-runners", "0", "--summary-json", str(summary),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "success rate" in printed and "random agent on the same episodes" in printed
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["env_steps"] >= 200
    report = json.loads(summary.read_text())
    assert report["episodes"] == 4 and report["split"] == "test" and report["agent"] == "ppo"
    assert (out / "checkpoint").is_dir() and (out / "eval-test.jsonl").is_file()
    result = json.loads((out / "result.json").read_text())
    assert result["iterations"] == 1 and 0.0 <= result["random_test_success"] <= 1.0
