"""The preference trainer: run directory, reference log-probs, learning, resumption and bad data."""

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from trajalign.alignment.pairs import PreferencePair
from trajalign.alignment.trainer import REFERENCE_FILE, TrainConfig, TrainError, train_preferences
from trajalign.cli import main
from trajalign.envs.jsonl import read_jsonl

METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
           "logps/rejected")


def _config(**overrides):
    settings = {"loss": {"algo": "dpo", "beta": 0.5}, "learning_rate": 3e-3, "max_steps": 6, "batch_size": 4,
                "micro_batch_size": 2, "val_fraction": 0.25, "save_every": 3, "eval_every": 3, "warmup_ratio": 0.0}
    return TrainConfig.model_validate({**settings, **overrides})


def _parameters(path):
    model = AutoModelForCausalLM.from_pretrained(path)
    return {name: value.detach().clone() for name, value in model.named_parameters()}


def test_a_run_writes_its_directory_and_starts_at_ln2(retail_model, retail_pairs, tmp_path):
    out = tmp_path / "run"
    result = train_preferences(retail_model, retail_pairs, out, _config(), progress=False)
    assert result.complete and result.steps == 6 and result.counts.train > 0 and result.counts.val > 0
    for name in ("config.json", "metrics.jsonl", "loss.png", "margins.png", "accuracy.png", "result.json",
                 REFERENCE_FILE, "model/config.json"):
        assert (out / name).is_file(), name
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert [line["step"] for line in steps] == [1, 2, 3, 4, 5, 6]
    assert all(name in steps[0] for name in METRICS)
    assert any("val_rewards/margins" in line for line in lines)
    # The first step's forward runs the starting model, which is the reference: every margin is 0, up to the
    # float32 rounding of log-probs summed over whole trajectories (the reference came from another forward,
    # batched differently; on some CPUs the two differ in the last bit).
    rounding = 2 * torch.finfo(torch.float32).eps * (abs(steps[0]["logps/chosen"]) + abs(steps[0]["logps/rejected"]))
    beta = _config().loss.beta
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=beta * rounding)
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=beta * rounding / 2 + 1e-6)
    # Reference log-probs were computed once and stored with every pair.
    stored = read_jsonl(out / REFERENCE_FILE, PreferencePair)
    assert len(stored) == result.counts.train + result.counts.val
    assert all(pair.has_reference for pair in stored)


def test_training_separates_chosen_from_rejected(retail_model, retail_pairs, tmp_path):
    result = train_preferences(retail_model, retail_pairs, tmp_path / "run", _config(max_steps=12), progress=False)
    assert result.final["rewards/margins"] > 0.05
    assert result.final["rewards/accuracies"] > 0.5
    assert result.final["loss"] < math.log(2)


def test_an_interrupted_run_resumes_to_the_same_weights(retail_model, retail_pairs, tmp_path):
    straight = tmp_path / "straight"
    train_preferences(retail_model, retail_pairs, straight, _config(), progress=False)
    resumed = tmp_path / "resumed"
    train_preferences(retail_model, retail_pairs, resumed, _config(), progress=False)
    # Interrupt after step 3: drop everything the run wrote later.
    shutil.rmtree(resumed / "checkpoints" / "step-000006")
    shutil.rmtree(resumed / "model")
    (resumed / "result.json").unlink()
    result = train_preferences(retail_model, retail_pairs, resumed, _config(), progress=False)
    assert result.resumed_from_step == 3 and result.steps == 6
    expected, got = _parameters(straight / "model"), _parameters(resumed / "model")
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    again = train_preferences(retail_model, retail_pairs, resumed, _config(), progress=False)
    assert again.stop_reason == "already_complete"


def test_a_run_directory_of_other_settings_is_refused(retail_model, retail_pairs, tmp_path):
    train_preferences(retail_model, retail_pairs, tmp_path / "run", _config(max_steps=3), progress=False)
    shutil.rmtree(tmp_path / "run" / "model")
    with pytest.raises(TrainError, match="beta"):
        train_preferences(retail_model, retail_pairs, tmp_path / "run",
                          _config(max_steps=3, loss={"algo": "dpo", "beta": 0.2}), progress=False)


def test_bad_lines_are_reported_and_skipped(retail_model, retail_pairs, tmp_path, caplog):
    damaged = tmp_path / "damaged.jsonl"
    lines = retail_pairs.read_text().splitlines()
    no_actions = json.loads(lines[1])
    no_actions["rejected"] = [{"role": "assistant", "text": "x", "token_ids": [], "trainable": True}]
    nan_value = json.loads(lines[2])
    nan_value["value_chosen"] = float("nan")
    damaged.write_text("\n".join([lines[0], json.dumps(no_actions), json.dumps(nan_value),
                                  *lines[3:], lines[0][: len(lines[0]) // 2]]) + "\n")
    result = train_preferences(retail_model, damaged, tmp_path / "run", _config(max_steps=2), progress=False)
    assert result.counts.bad_lines == 3
    assert result.counts.records == len(lines) - 2
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "no action tokens" in messages and ":3 skipped" in messages and f":{len(lines) + 1} skipped" in messages


def test_no_usable_pairs_is_an_error(retail_model, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"truncated": \n')
    with pytest.raises(TrainError, match="no valid pairs"):
        train_preferences(retail_model, empty, tmp_path / "run", _config(), progress=False)
    with pytest.raises(TrainError, match="no pairs file"):
        train_preferences(retail_model, tmp_path / "missing.jsonl", tmp_path / "run", _config(), progress=False)


def test_train_cli(retail_model, retail_pairs, tmp_path, capsys):
    code = main(["train", "--model", str(retail_model), "--pairs", str(retail_pairs), "--algo", "stepwise",
                 "--out", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "4", "--no-progress"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "stepwise: 2/2 steps (complete)" in output and "train: loss" in output
    assert main(["train", "--model", str(retail_model), "--pairs", str(retail_pairs), "--out", str(tmp_path / "bad"),
                 "--beta", "-1"]) == 2
    assert "beta" in capsys.readouterr().err
