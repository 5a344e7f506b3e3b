"""Rollouts, evaluation and branching on Ray actors: the same trajectories as one process, each written once.

One embedded local Ray (2 CPUs) serves the whole module; actors take half a CPU each.
"""

import json
import shutil
from collections import Counter

import pytest
import torch

from trajalign.agents import NoiseRates, NoisyOracleAgent, run_rollouts
from trajalign.agents.augment import name_swapped_scenario
from trajalign.agents.llm import LLMPolicy, SamplingConfig
from trajalign.agents.llm_rollout import play_llm_episodes
from trajalign.agents.rollout import episode_plan
from trajalign.alignment.builders import PairStats, branch_pairs
from trajalign.cli import main
from trajalign.envs import load_scenario
from trajalign.envs.jsonl import read_jsonl
from trajalign.envs.trajectory import Trajectory
from trajalign.ray_rollouts import (
    AgentSpec,
    FaultDrill,
    WorkerSettings,
    ray_branch_pairs,
    ray_record_rollouts,
    ray_run_rollouts,
)

ray = pytest.importorskip("ray")

HALF = {"cpus_per_worker": 0.5}
SAMPLING = {"temperature": 1.0, "max_new_tokens": 16, "seed": 3}


pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def retail():
    return load_scenario("retail")


def _content(trajectories):
    """What must not depend on the number of workers: per (task, seed), the turns, rewards and status."""
    return {(t.task_id, t.seed): ([(turn.role, turn.text, turn.token_ids) for turn in t.turns], t.rewards, t.status,
                                  t.agent) for t in trajectories}


@pytest.fixture(scope="module")
def llm_plan(retail):
    return episode_plan(retail.tasks_in("train"), 6, seed=11)


@pytest.fixture(scope="module")
def llm_local(retail, retail_model, llm_plan):
    """The plan played in this process, with another batch size than the actors use."""
    policy = LLMPolicy.from_pretrained(retail_model, SamplingConfig(**SAMPLING))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the actors hold the cores; two OpenMP threads on a busy core crawl
    try:
        return list(play_llm_episodes(policy, retail, "train", llm_plan, batch_size=3))
    finally:
        torch.set_num_threads(threads)


def test_two_workers_give_the_trajectories_of_one_worker_and_of_one_process(retail, retail_model, llm_plan, llm_local,
                                                                            tmp_path):
    plan, local = llm_plan, llm_local
    spec = AgentSpec(agent=str(retail_model), sampling=SAMPLING, batch_size=4)
    one, _ = ray_record_rollouts(retail, "train", plan, tmp_path / "one.jsonl", spec, WorkerSettings(workers=1, **HALF),
                                 progress=False)
    # chunk_size 2 with batch 4: each call returns 2 trajectories and leaves 4 episodes in the actor's batch.
    two, returned = ray_record_rollouts(retail, "train", plan, tmp_path / "two.jsonl", spec,
                                        WorkerSettings(workers=2, chunk_size=2, **HALF), progress=False)

    written_one = read_jsonl(tmp_path / "one.jsonl", Trajectory)
    written_two = read_jsonl(tmp_path / "two.jsonl", Trajectory)
    assert len(written_two) == len(plan) and len(_content(written_two)) == len(plan)
    assert _content(written_two) == _content(written_one) == _content(local)
    assert [(t.task_id, t.seed) for t in returned] == plan  # returned in plan order
    assert two.episodes == one.episodes == 6 and two.ray.workers == 2 and two.ray.worker_failures == 0
    assert (two.success_rate, two.mean_turns, two.env_steps) == (one.success_rate, one.mean_turns, one.env_steps)


def test_a_killed_actor_loses_no_episode_and_duplicates_none(retail, tmp_path):
    rates = NoiseRates(wrong_tool=0.2, wrong_argument=0.2)
    reference = tmp_path / "reference.jsonl"
    run_rollouts(retail, lambda: NoisyOracleAgent(retail, rates, seed=5), "train", 24, 2, reference, progress=False)

    out = tmp_path / "ray.jsonl"
    spec = AgentSpec(agent="noisy", seed=5, noise=rates)
    # Actor 0 is SIGKILLed after sending back 2 trajectories, in the middle of its 4-episode chunk.
    summary = ray_run_rollouts(retail, spec, "train", 24, 2, out, WorkerSettings(workers=2, chunk_size=4, **HALF),
                               progress=False, fault=FaultDrill(worker=0, after=2))
    keys = Counter((t.task_id, t.seed) for t in read_jsonl(out, Trajectory))
    assert len(keys) == 24 and set(keys.values()) == {1}, "every episode exactly once"
    assert _content(read_jsonl(out, Trajectory)) == _content(read_jsonl(reference, Trajectory))
    assert summary.ray.worker_failures == 1 and summary.ray.retried_episodes >= 1
    assert summary.ray.abandoned_episodes == 0 and summary.episodes == 24
    assert ("worker failures", "1") in summary.rows()
    # The file is complete: running the same command again plays nothing and writes nothing.
    again = ray_run_rollouts(retail, spec, "train", 24, 2, out, WorkerSettings(workers=2, **HALF), progress=False)
    assert again.resumed_episodes == 24 and len(read_jsonl(out, Trajectory)) == 24


def test_a_killed_llm_actor_replays_the_episodes_it_held_between_calls(retail, retail_model, llm_plan, llm_local,
                                                                        tmp_path):
    # Batch 4, chunk 1: actor 0 takes 5 of the 6 episodes and returns 1, keeping 4 in its batch for its
    # next call, in which it is SIGKILLed; those 4 must be played again by another actor.
    spec = AgentSpec(agent=str(retail_model), sampling=SAMPLING, batch_size=4)
    out = tmp_path / "ray.jsonl"
    summary, _ = ray_record_rollouts(retail, "train", llm_plan, out, spec,
                                     WorkerSettings(workers=2, chunk_size=1, **HALF), progress=False,
                                     fault=FaultDrill(worker=0, after=1))
    written = read_jsonl(out, Trajectory)
    assert sorted(Counter((t.task_id, t.seed) for t in written).values()) == [1] * len(llm_plan)
    assert _content(written) == _content(llm_local)
    assert summary.ray.worker_failures == 1 and summary.ray.retried_episodes >= 4


def test_actors_load_the_scenario_file_the_caller_loaded_and_the_tasks_it_holds(tmp_path):
    # A scenario file need not be named scenario.yaml; the actors must load that file, not the folder.
    folder = tmp_path / "my-scenarios"
    shutil.copytree(load_scenario("filesystem").path, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "scenario.yaml").rename(folder / "filesystem-copy.yaml")
    # Name-swapped exploration keeps the scenario's name and file but holds other tasks.
    swapped, _ = name_swapped_scenario(load_scenario(folder / "filesystem-copy.yaml"), "train", seed=0)
    plan = [(task.id, 0) for task in swapped.tasks_in("train")[:4]]
    summary, trajectories = ray_record_rollouts(swapped, "train", plan, tmp_path / "oracle.jsonl",
                                                AgentSpec(agent="oracle"), WorkerSettings(workers=2, **HALF),
                                                progress=False)
    assert [(t.task_id, t.seed) for t in trajectories] == plan
    assert summary.success_rate == 1.0 and all(t.task_id.endswith("-swapped") for t in trajectories)


def test_an_episode_that_kills_every_actor_is_recorded_as_env_error(retail, tmp_path):
    plan = episode_plan(retail.tasks_in("train"), 3, seed=0)
    settings = WorkerSettings(workers=1, chunk_size=3, max_retries=0, **HALF)
    summary, trajectories = ray_record_rollouts(retail, "train", plan, tmp_path / "out.jsonl",
                                                AgentSpec(agent="oracle"), settings, progress=False,
                                                fault=FaultDrill(worker=0, after=1))
    statuses = Counter(t.status for t in trajectories)
    # The actor dies right after sending its first trajectory, which may or may not have left the process by then.
    assert statuses["env_error"] == summary.ray.abandoned_episodes in (2, 3), "given up after max_retries"
    assert sum(statuses.values()) == summary.episodes == 3 and len({(t.task_id, t.seed) for t in trajectories}) == 3
    assert all("actor died" in t.metadata["error"] for t in trajectories if t.status == "env_error")


@pytest.mark.parametrize("against_recorded", [False, True])
def test_branching_on_workers_gives_the_pairs_of_one_process(retail, tmp_path, against_recorded):
    rates = NoiseRates(wrong_tool=0.1, wrong_argument=0.1, premature_answer=0.0, repeated_call=0.0)
    source = tmp_path / "noisy.jsonl"
    run_rollouts(retail, lambda: NoisyOracleAgent(retail, rates, seed=1), "train", 6, 0, source, progress=False)
    trajectories = read_jsonl(source, Trajectory)
    options = {"samples": 4, "tau": 0.0, "max_states_per_trajectory": 2, "seed": 4,
               "against_recorded": against_recorded}

    local_stats = PairStats()
    local = list(branch_pairs(trajectories, retail,
                              agent_factory=lambda seed: NoisyOracleAgent(retail, rates, seed=seed),
                              stats=local_stats, **options))
    ray_stats = PairStats()
    spec = AgentSpec(agent="noisy", noise=rates)
    distributed = list(ray_branch_pairs(trajectories, retail, spec, WorkerSettings(workers=2, chunk_size=2, **HALF),
                                        stats=ray_stats, **options))
    assert local, "the noisy continuations should disagree somewhere"
    assert all((pair.metadata["rejected"]["sample"] == "recorded") == against_recorded for pair in local)
    assert sorted(pair.model_dump_json() for pair in distributed) == sorted(pair.model_dump_json() for pair in local)
    assert (ray_stats.pairs, ray_stats.states, ray_stats.continuations, ray_stats.skipped) == \
        (local_stats.pairs, local_stats.states, local_stats.continuations, local_stats.skipped)


def test_rollout_and_eval_commands_take_workers(retail_model, tmp_path, capsys):
    out = tmp_path / "oracle.jsonl"
    assert main(["rollout", "--scenario", "retail", "--agent", "oracle", "--episodes", "6", "--out", str(out),
                 "--workers", "2", "--cpus-per-worker", "0.5", "--no-progress"]) == 0
    rows = {line[:17].strip(): line[17:].strip() for line in capsys.readouterr().out.splitlines()}
    assert rows["ray workers"] == "2 (0.5 CPU each)" and rows["success rate"] == "1.000"
    assert rows["worker failures"] == "0" and rows["retried episodes"] == "0"
    assert len(read_jsonl(out, Trajectory)) == 6

    summary = tmp_path / "eval.json"
    assert main(["eval", "--model", str(retail_model), "--scenario", "retail", "--episodes", "4",
                 "--max-new-tokens", "16", "--workers", "2", "--cpus-per-worker", "0.5", "--summary-json", str(summary),
                 "--no-progress"]) == 0
    report = json.loads(summary.read_text())
    assert report["episodes"] == 4 and report["ray"]["workers"] == 2 and "pass_hat_k" in report
    assert main(["eval", "--model", str(retail_model), "--scenario", "retail", "--workers", "0"]) == 2
