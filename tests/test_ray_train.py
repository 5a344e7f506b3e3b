"""Preference training on Ray Train (DDP over gloo): the single-process result, and recovery from a killed worker.

Tolerance: with the same global batch, 2 CPU workers reproduce the single-process run's per-step loss
and gradient norm to a relative 1e-5, reward margins (sums of log-prob differences of ~1e3-nat sequences)
to 1e-5 absolute (float rounding: the shards sum in another order). AdamW's
first steps are sign-like (g / (|g| + eps)), so a parameter whose gradient is within rounding of
zero can move differently: we require every parameter within 5e-5 (the steps move parameters by up
to ~lr = 1e-3 each) and all but 0.02% of them within 1e-6. How many gradients sit within rounding of
zero depends on the pairs: the outcome pairs of `retail_pairs`, anchored where their episodes
differ, put 0.0101% of the parameters past 1e-6.
"""

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from trajalign.alignment.trainer import TrainConfig, train_preferences
from trajalign.cli import main

ray = pytest.importorskip("ray")

# 4 steps of 5 pairs (the last step of the epoch has fewer; with 1 pair, rank 1 joins with an empty shard).
SETTINGS = {"loss": {"algo": "dpo", "beta": 0.1}, "learning_rate": 1e-3, "max_steps": 4, "batch_size": 5,
            "micro_batch_size": 2, "val_fraction": 0.25, "save_every": 2, "eval_every": 2, "warmup_ratio": 0.0}


pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def single_process(retail_model, retail_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    train_preferences(retail_model, retail_pairs, out, TrainConfig.model_validate(SETTINGS), progress=False)
    return out


def _parameters(path):
    model = AutoModelForCausalLM.from_pretrained(path)
    return {name: value.detach().clone() for name, value in model.named_parameters()}


def _steps(run):
    return [line for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in line]


def _assert_same_training(run, reference):
    ours, theirs = _steps(run), _steps(reference)
    assert [line["step"] for line in ours] == [line["step"] for line in theirs] == [1, 2, 3, 4]
    for mine, single in zip(ours, theirs):
        assert mine["pairs"] == single["pairs"]
        for name in ("loss", "grad_norm", "rewards/margins"):
            assert mine[name] == pytest.approx(single[name], rel=1e-5, abs=1e-5), (mine["step"], name)
    a, b = _parameters(run / "model"), _parameters(reference / "model")
    differences = torch.cat([(a[name] - b[name]).abs().flatten() for name in a])
    assert float(differences.max()) <= 5e-5
    assert float((differences > 1e-6).float().mean()) <= 2e-4


@pytest.mark.slow
def test_train_command_takes_workers(retail_model, retail_pairs, single_process, tmp_path, capsys):
    out = tmp_path / "ray"
    # Through the command line: `trajalign train --workers 2`, the same settings as the reference.
    assert main(["train", "--model", str(retail_model), "--pairs", str(retail_pairs), "--out", str(out),
                 "--algo", "dpo", "--beta", "0.1", "--lr", "1e-3", "--max-steps", "4", "--batch-size", "5",
                 "--micro-batch-size", "2", "--workers", "2", "--cpus-per-worker", "0.5", "--no-progress"]) == 0
    assert "dpo: 4/4 steps (complete)" in capsys.readouterr().out
    # The CLI's defaults differ from SETTINGS only in what does not change the weights (validation split aside).
    config = json.loads((out / "config.json").read_text())["config"]
    reference = json.loads((single_process / "config.json").read_text())["config"]
    assert {k: v for k, v in config.items() if k not in ("val_fraction", "save_every", "eval_every", "warmup_ratio")} \
        == {k: v for k, v in reference.items() if k not in ("val_fraction", "save_every", "eval_every", "warmup_ratio")}


@pytest.fixture(scope="module")
def ray_run(retail_model, retail_pairs, tmp_path_factory):
    from trajalign.ray_train import train_preferences_on_ray

    out = tmp_path_factory.mktemp("ray_run") / "run"
    result = train_preferences_on_ray(retail_model, retail_pairs, out, TrainConfig.model_validate(SETTINGS), workers=2,
                                      cpus_per_worker=0.5, progress=False)
    return out, result


def test_ray_train_matches_single_process_parameters(ray_run, single_process):
    out, result = ray_run
    assert result.complete and result.steps == 4 and result.resumed_from_step is None
    _assert_same_training(out, single_process)
    assert (out / "checkpoints" / "step-000004" / "trainer_state.pt").is_file(), "the usual run directory"
    assert (out / "ray-train").is_dir()
    first = _steps(out)[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_last_checkpoint(retail_model, retail_pairs, single_process, tmp_path):
    from trajalign.ray_train import train_preferences_on_ray

    out = tmp_path / "killed"
    # Rank 1 SIGKILLs itself as step 4 begins. Rank 0 finished the step-2 checkpoint before step 3's all-reduce,
    # so it is complete. (A kill at step 3 can land while rank 0 still writes it: then the run restarts from 0.)
    result = train_preferences_on_ray(retail_model, retail_pairs, out, TrainConfig.model_validate(SETTINGS), workers=2,
                                      cpus_per_worker=0.5, progress=False, fault={"rank": 1, "step": 4})
    assert (out / "ray-train" / "fault-drill.txt").is_file(), "the worker was killed"
    assert result.complete and result.steps == 4
    assert result.resumed_from_step == 2
    _assert_same_training(out, single_process)  # the redone steps used the same batches


@pytest.mark.slow
def test_a_run_directory_of_other_settings_is_refused_on_ray_too(retail_model, retail_pairs, ray_run, tmp_path):
    from trajalign.alignment.trainer import TrainError
    from trajalign.ray_train import train_preferences_on_ray

    out, _ = ray_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    other = TrainConfig.model_validate({**SETTINGS, "learning_rate": 5e-3})
    with pytest.raises(TrainError, match="learning_rate"):
        train_preferences_on_ray(retail_model, retail_pairs, copy, other, workers=2, cpus_per_worker=0.5,
                                 progress=False, max_failures=0)
