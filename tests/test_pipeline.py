"""`trajalign run`: a one-minute version of the whole pipeline, its config validation and its resumption."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trajalign.cli import main
from trajalign.alignment import PreferencePair
from trajalign.envs import Trajectory, load_scenario
from trajalign.envs.jsonl import read_jsonl
from trajalign.pipeline import PipelineError, RunConfig, load_config, run_pipeline

SMOKE = {
    "scenario": "filesystem",
    "model": {"corpus_tasks": 20, "max_positions": 4096},
    "sft": {"data": "oracle", "episodes": 80, "config": {"max_steps": 40, "learning_rate": 5e-3, "batch_size": 8}},
    "rollouts": {"tasks": 12, "samples_per_task": 2, "max_new_tokens": 48},
    "pairs": {"branch_trajectories": 4, "states_per_trajectory": 1, "branch_samples": 2, "tau": 0.0},
    "train": {"algorithms": ["dpo", "dmpo", "stepwise"],
              "config": {"max_steps": 2, "batch_size": 4, "micro_batch_size": 2, "val_fraction": 0.0}},
    "eval": {"episodes": 6, "max_new_tokens": 48, "include_base": True},
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    config = root / "smoke.yaml"
    config.write_text(yaml.safe_dump({**SMOKE, "out": str(root / "run")}))
    code = main(["run", "--config", str(config), "--no-progress"])
    return code, root / "run", config


def test_the_pipeline_runs_every_stage_and_reports_a_table(smoke_run):
    code, out, _ = smoke_run
    assert code == 0
    for name in ("base-model/config.json", "sft-data.jsonl", "sft/model/config.json", "rollouts.jsonl", "expert.jsonl",
                 "pairs-outcome.jsonl", "pairs-branch.jsonl", "results.md", "results.json", "config.yaml"):
        assert (out / name).is_file(), name
    result = json.loads((out / "results.json").read_text())
    names = [row["name"] for row in result["rows"]]
    assert names[:2] == ["base", "sft"]
    # Outcome pairs exist whenever a rollout failed (the oracle is the chosen side), so dpo and dmpo train.
    assert result["pair_counts"]["outcome"] > 0
    for algo in ("dpo", "dmpo"):
        assert algo in names
        assert json.loads((out / f"train-{algo}" / "result.json").read_text())["steps"] == 2
    # stepwise trains only if branching found a value gap; either way the table says what happened.
    assert ("stepwise" in names) == (result["pair_counts"]["branch"] > 0)
    for row in result["rows"]:
        assert row["episodes"] == 6 and 0.0 <= row["success_rate"] <= 1.0
    assert "| sft |" in (out / "results.md").read_text()
    # The model settings reach the tiny-model builder.
    info = json.loads((out / "base-model" / "trajalign_model.json").read_text())
    assert info["max_tasks_per_scenario"] == 20 and info["max_position_embeddings"] == 4096


def test_a_finished_pipeline_reruns_from_its_files(smoke_run, capsys, tmp_path):
    code, out, config = smoke_run
    before = (out / "rollouts.jsonl").read_text()
    # How many episodes are stepped together, or how many test tasks and which models are evaluated,
    # does not change what the stages make.
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**SMOKE, "out": str(out), "rollouts": {**SMOKE["rollouts"], "batch_size": 5},
                                     "eval": {**SMOKE["eval"], "batch_size": 3, "episodes": 4, "include_base": False},
                                     "train": {**SMOKE["train"], "config": {**SMOKE["train"]["config"],
                                                                             "eval_every": 7}}}))
    assert main(["run", "--config", str(other), "--no-progress"]) == 0
    assert (out / "rollouts.jsonl").read_text() == before  # nothing was sampled again
    assert "already complete" not in capsys.readouterr().err
    assert {row["episodes"] for row in json.loads((out / "results.json").read_text())["rows"]} == {4}
    assert main(["run", "--config", str(config), "--no-progress"]) == 0  # back to the first settings


def test_a_rerun_with_other_settings_stops_at_the_first_stale_output_and_changes_nothing(smoke_run, capsys, tmp_path):
    _, out, _ = smoke_run
    files = ("config.yaml", "stages.json", "pairs-branch.jsonl", "results.json")
    before = {name: (out / name).read_text() for name in files}
    changed = tmp_path / "tau.yaml"
    changed.write_text(yaml.safe_dump({**SMOKE, "out": str(out), "pairs": {**SMOKE["pairs"], "tau": 0.25}}))
    assert main(["run", "--config", str(changed), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert f"{out / 'pairs-branch.jsonl'} was made with other settings than this run's (tau: 0.0 -> 0.25)" in error
    # What to delete: the pairs and everything made from them, not what came before.
    listed = error.split("Delete ")[1].split(" to redo")[0].split()
    assert str(out / "pairs-branch.jsonl") in listed and str(out / "rollouts.jsonl") not in listed
    assert (str(out / "train-stepwise") in listed) == (out / "train-stepwise").exists()
    assert {name: (out / name).read_text() for name in files} == before


def test_exploring_with_swapped_names_rolls_out_and_pairs_on_the_copies(smoke_run, tmp_path):
    _, smoke_out, _ = smoke_run
    # A scenario file of another name than scenario.yaml: every stage must read that file.
    folder = tmp_path / "scenarios"
    shutil.copytree(load_scenario("filesystem").path, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "scenario.yaml").rename(folder / "files.yaml")
    config = RunConfig.model_validate({
        **SMOKE, "scenario": str(folder / "files.yaml"), "out": tmp_path / "swapped",
        "model": {"path": smoke_out / "sft" / "model"},
        "sft": {"data": "oracle", "episodes": 8, "config": {"max_steps": 2, "batch_size": 4, "val_fraction": 0.0}},
        "rollouts": {"tasks": 6, "samples_per_task": 1, "max_new_tokens": 48, "swap_names": True},
        "train": {"algorithms": ["dpo"], "config": SMOKE["train"]["config"]}, "eval": {"episodes": 2}})
    result = run_pipeline(config, progress=False, log=lambda _: None)
    rollouts = read_jsonl(config.out / "rollouts.jsonl", Trajectory)
    expert = read_jsonl(config.out / "expert.jsonl", Trajectory)
    assert len(rollouts) == 6 and all(t.task_id.endswith("-swapped") for t in rollouts + expert)
    assert all(t.success for t in expert)  # the oracle solves the copies it is the chosen side of
    pairs = read_jsonl(config.out / "pairs-outcome.jsonl", PreferencePair)
    assert pairs and all(pair.task_id.endswith("-swapped") for pair in pairs)
    assert [row.name for row in result.rows] == ["sft", "dpo"]  # evaluated on the real test tasks
    retail = config.model_copy(update={"scenario": "retail", "out": tmp_path / "retail"})  # no name_swaps
    with pytest.raises(PipelineError, match="rollouts.swap_names needs a scenario with name_swaps"):
        run_pipeline(retail, progress=False, log=lambda _: None)
    assert not (tmp_path / "retail" / "rollouts.jsonl").exists()


def test_exploring_fresh_instances_rolls_out_and_pairs_on_tasks_sft_never_saw(smoke_run, tmp_path):
    _, smoke_out, _ = smoke_run
    config = RunConfig.model_validate({
        **SMOKE, "out": tmp_path / "fresh", "model": {"path": smoke_out / "sft" / "model"}, "sft": {"enabled": False},
        "rollouts": {"tasks": 6, "samples_per_task": 1, "max_new_tokens": 48, "fresh_seed": 1},
        "train": {"algorithms": ["dpo"], "config": SMOKE["train"]["config"]}, "eval": {"episodes": 2}})
    result = run_pipeline(config, progress=False, log=lambda _: None)
    rollouts = read_jsonl(config.out / "rollouts.jsonl", Trajectory)
    expert = read_jsonl(config.out / "expert.jsonl", Trajectory)
    assert len(rollouts) == 6 and all(t.task_id.endswith("-fresh1") for t in rollouts + expert)
    assert all(t.success for t in expert)
    pairs = read_jsonl(config.out / "pairs-outcome.jsonl", PreferencePair)
    assert pairs and all(pair.task_id.endswith("-fresh1") for pair in pairs)
    assert [row.name for row in result.rows] == ["sft", "dpo"]  # evaluated on the real test tasks
    own_seed = config.model_copy(update={"out": tmp_path / "own-seed",
                                         "rollouts": config.rollouts.model_copy(update={"fresh_seed": 7031})})
    with pytest.raises(PipelineError, match="rollouts.fresh_seed: .*seed 7031 is the generator's own seed"):
        run_pipeline(own_seed, progress=False, log=lambda _: None)
    assert not (tmp_path / "own-seed" / "rollouts.jsonl").exists()


def test_a_greedy_probe_samples_only_the_tasks_greedy_decoding_fails_and_pairs_reject_only_those(smoke_run, tmp_path):
    _, smoke_out, _ = smoke_run
    config = RunConfig.model_validate({
        **SMOKE, "out": tmp_path / "probe", "model": {"path": smoke_out / "sft" / "model"}, "sft": {"enabled": False},
        "rollouts": {"tasks": 8, "samples_per_task": 2, "max_new_tokens": 48, "greedy_probe": True},
        "train": {"algorithms": ["dpo"], "config": SMOKE["train"]["config"]}, "eval": {"episodes": 2}})
    run_pipeline(config, progress=False, log=lambda _: None)
    greedy = read_jsonl(config.out / "rollouts-greedy.jsonl", Trajectory)
    sampled = read_jsonl(config.out / "rollouts.jsonl", Trajectory)
    assert len(greedy) == 8 and len({t.task_id for t in greedy}) == 8
    failed = {t.task_id for t in greedy if not t.success}
    assert failed, "the smoke policy should fail some train tasks greedily"
    assert sorted(t.task_id for t in sampled) == sorted(2 * list(failed))
    # Every rejected side is a greedy failure (here against the oracle), none a sampled one.
    pairs = read_jsonl(config.out / "pairs-outcome.jsonl", PreferencePair)
    episodes = {(t.task_id, tuple(turn.text for turn in t.turns)) for t in greedy if not t.success}
    assert len(pairs) == len(failed)
    for pair in pairs:
        assert (pair.task_id, tuple(turn.text for turn in pair.prefix + pair.rejected)) in episodes


def test_pair_stats_reads_a_run_directory(smoke_run, tmp_path):
    """benchmarks/pair_stats.py, the source of the pair figures in docs/benchmarks.md, on the smoke run."""
    _, out, _ = smoke_run
    env = {**os.environ, "TRAJALIGN_RESULTS_DIR": str(tmp_path)}
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pair_stats.py"
    subprocess.run([sys.executable, str(script), str(out), "--name", "stats"], check=True, env=env,
                   capture_output=True)
    stats = json.loads((tmp_path / "stats.json").read_text())["seeds"][out.name]
    rollouts = read_jsonl(out / "rollouts.jsonl", Trajectory)
    pairs = read_jsonl(out / "pairs-outcome.jsonl", PreferencePair)
    assert stats["sampled_episodes"] == len(rollouts) and "greedy_episodes" not in stats
    assert stats["sampled_success"] == sum(t.success for t in rollouts) / len(rollouts)
    assert stats["outcome_pairs"] == len(pairs) == sum(stats["outcome_branch_turns"].values())
    assert stats["outcome_actions"]["rejected"] == pytest.approx(sum(p.actions("rejected") for p in pairs) / len(pairs))
    reference = stats["reference"]
    assert reference["pairs"] == len(pairs) and 0 <= reference["chosen_first_likelier"] <= 1
    assert {"dpo", "dmpo"} <= set(stats["training"])


def test_compare_runs_finds_a_copy_identical_and_names_the_file_an_episode_changed_in(smoke_run, tmp_path):
    """benchmarks/compare_runs.py, the reproduction check docs/benchmarks.md quotes, on the smoke run."""
    _, out, _ = smoke_run
    copy = shutil.copytree(out, tmp_path / "copy", ignore=shutil.ignore_patterns("*model*", "checkpoints"))
    env = {**os.environ, "TRAJALIGN_RESULTS_DIR": str(tmp_path)}
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_runs.py"

    def compare() -> tuple[int, dict]:
        run = subprocess.run([sys.executable, str(script), str(out), str(copy), "--name", "same"], env=env,
                             capture_output=True, text=True)
        return run.returncode, json.loads((tmp_path / "same.json").read_text())

    code, result = compare()
    assert code == 0 and result["identical"]
    assert result["files"]["rollouts.jsonl"]["same"] == len(read_jsonl(out / "rollouts.jsonl", Trajectory))
    # Order and timings do not matter; what an episode did does.
    lines = (copy / "eval-sft.jsonl").read_text().splitlines()
    episode = json.loads(lines[0])
    episode["timing"] = {"seconds": 1e9}
    (copy / "eval-sft.jsonl").write_text("\n".join([*lines[1:], json.dumps(episode)]) + "\n")
    assert compare()[0] == 0
    episode["turns"] = episode["turns"][:-1]
    (copy / "eval-sft.jsonl").write_text("\n".join([*lines[1:], json.dumps(episode)]) + "\n")
    code, result = compare()
    assert code == 1 and not result["identical"]
    assert result["files"]["eval-sft.jsonl"]["same"] == len(lines) - 1
    assert all(f["same"] == f["first"] for name, f in result["files"].items() if name != "eval-sft.jsonl")
    # A file in one directory only, or none shared, is not a match.
    shutil.copy(copy / "rollouts.jsonl", copy / "rollouts-greedy.jsonl")
    code, result = compare()
    assert code == 1 and result["only_in"] == {"first": [], "second": ["rollouts-greedy.jsonl"]}
    run = subprocess.run([sys.executable, str(script), str(out.parent), str(copy.parent)], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 2 and "share no JSONL file" in run.stderr


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"algorithms": ["dpo", "ppo"]}}))
    with pytest.raises(PipelineError, match=r"bad.yaml: train.algorithms.1.algo"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"rollouts": {"samples_per_task": 0}}))
    with pytest.raises(PipelineError, match="rollouts.samples_per_task"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"sft": {"learnin_rate": 1}}))
    with pytest.raises(PipelineError, match="sft.learnin_rate"):
        load_config(bad)
    with pytest.raises(PipelineError, match="no config file"):
        load_config(tmp_path / "missing.yaml")
    assert main(["run", "--config", str(bad)]) == 2


def test_the_default_config_is_the_documented_one():
    config = RunConfig()
    assert config.scenario == "filesystem"
    assert config.model.max_positions is None and config.model.corpus_tasks is None  # the builder's defaults
    assert [a.algo for a in config.train.algorithms] == ["dpo", "dmpo", "stepwise"]
    assert [a.pair_kind for a in config.train.algorithms] == ["outcome", "outcome", "branch"]


def test_every_unrecorded_setting_names_a_field_and_pair_fields_are_split_between_the_two_pair_stages():
    from trajalign.agents import sft
    from trajalign.alignment import trainer
    from trajalign.pipeline import _BRANCH_PAIR_FIELDS, _OUTCOME_PAIR_FIELDS, _UNRECORDED, PairSettings

    for settings, names in _UNRECORDED.items():
        assert names <= settings.model_fields.keys(), settings.__name__
    # What may change without a stale error, an interrupted trainer also resumes with.
    assert _UNRECORDED[sft.SFTConfig] <= sft.RESUMABLE_CHANGES
    assert _UNRECORDED[trainer.TrainConfig] <= trainer.RESUMABLE_CHANGES
    assert set(_OUTCOME_PAIR_FIELDS) | set(_BRANCH_PAIR_FIELDS) == PairSettings.model_fields.keys()
    assert not set(_OUTCOME_PAIR_FIELDS) & set(_BRANCH_PAIR_FIELDS)


def test_a_model_given_from_outside_is_known_by_its_files_not_its_path(smoke_run, tmp_path):
    from trajalign.pipeline import _model_identity

    _, out, _ = smoke_run
    model = shutil.copytree(out / "sft" / "model", tmp_path / "model")
    assert _model_identity(model) == _model_identity(out / "sft" / "model")  # a copy is the same model
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # rebuilt in place: same path and size, other weights
    weights.write_bytes(bytes(data))
    assert _model_identity(model) != _model_identity(out / "sft" / "model")
