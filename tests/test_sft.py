import json
import logging
import re
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trajalign.agents import NoiseRates, NoisyOracleAgent, run_rollouts
from trajalign.agents.chat import ChatFormat, scenario_system_prompt, system_prompt
from trajalign.agents.rollout import MISTAKES
from trajalign.agents.sft import (
    SFTConfig,
    SFTError,
    SystemPrompts,
    accumulate_gradients,
    build_example,
    collate,
    evaluate,
    is_validation,
    latest_checkpoint,
    load_examples,
    masked_nll_sum,
    read_metrics,
    token_nll,
    train_sft,
)
from trajalign.agents.tiny import build_tiny_model
from trajalign.cli import main
from trajalign.envs import Trajectory, load_scenario, make_env
from trajalign.envs.jsonl import JsonlWriter, read_jsonl

VAL_FRACTION = 0.2  # of the 12 oracle episodes below, 4 tasks hash to validation and 8 to training


@pytest.fixture(scope="module")
def trajectories(oracle_file):
    return read_jsonl(oracle_file, Trajectory)


@pytest.fixture(scope="module")
def fmt(retail_model):
    return ChatFormat(AutoTokenizer.from_pretrained(retail_model))


@pytest.fixture(scope="module")
def system():
    return scenario_system_prompt(load_scenario("retail"))


def _model(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _load(fmt, files, config=None, max_length=2048, scenario_paths=None):
    return load_examples(fmt, files, config or SFTConfig(val_fraction=VAL_FRACTION), max_length, len(fmt.tokenizer),
                         SystemPrompts(scenario_paths))


# ---- what is trained ---------------------------------------------------------------------------


def test_loss_mask_marks_exactly_the_assistant_segments(fmt, trajectories, system):
    stop_id = fmt.stop_ids[0]
    for trajectory in trajectories:
        example = build_example(fmt, trajectory, system)
        segments = fmt.trajectory_segments(trajectory, system)
        assert example.ids == [token for _, ids in segments for token in ids]
        expected = [turn.role == "assistant" and turn.trainable for turn, ids in segments for _ in ids]
        assert example.mask == expected
        # Every action is trained in full, its stop token included, and nothing else is.
        trained = [token for token, keep in zip(example.ids, example.mask) if keep]
        actions = [turn.text for turn in trajectory.turns if turn.role == "assistant"]
        assert fmt.tokenizer.decode(trained) == "".join(f"{text}{fmt.stop_text}" for text in actions)
        assert trained.count(stop_id) == len(actions)

    # Text-only trajectories get the system prompt an LLM rollout starts from.
    env = make_env(load_scenario("retail"), "train")
    _, info = env.reset(seed=0)
    env.close()
    assert system == system_prompt(info)

    batch = collate([build_example(fmt, t, system) for t in trajectories[:3]], pad_id=fmt.tokenizer.pad_token_id)
    for row, trajectory in enumerate(trajectories[:3]):
        example = build_example(fmt, trajectory, system)
        length = len(example.ids)
        labels = batch["labels"][row]
        assert labels[:length].tolist() == [t if m else -100 for t, m in zip(example.ids, example.mask)]
        assert (labels[length:] == -100).all() and (batch["attention_mask"][row, length:] == 0).all()


def test_marked_mistakes_stay_in_the_context_but_are_not_trained(fmt, tmp_path):
    scenario = load_scenario("retail")
    path = tmp_path / "noisy.jsonl"
    rates = NoiseRates(wrong_tool=0.1, wrong_argument=0.3, premature_answer=0.0, repeated_call=0.1)
    run_rollouts(scenario, lambda: NoisyOracleAgent(scenario, rates, seed=3), "train", 12, 0, path, progress=False)
    successes = [t for t in read_jsonl(path, Trajectory) if t.success]
    marked = sum(len(t.metadata.get(MISTAKES, {})) for t in successes)
    assert marked > 0
    default, _, counts = _load(fmt, [path], SFTConfig(val_fraction=0))
    everything, _, counts_all = _load(fmt, [path], SFTConfig(val_fraction=0, train_on_mistakes=True))
    assert (counts.mistake_turns, counts_all.mistake_turns) == (marked, 0)
    assert len(default) == len(everything) == len(successes)
    for trajectory, example, full in zip(successes, default, everything):
        assert example.ids == full.ids
        mistakes = {int(index) for index in trajectory.metadata.get(MISTAKES, {})}
        for trained_example, skipped in ((example, mistakes), (full, set())):
            kept = [turn.text for index, turn in enumerate(trajectory.turns)
                    if turn.role == "assistant" and index not in skipped]
            trained = [token for token, keep in zip(trained_example.ids, trained_example.mask) if keep]
            assert fmt.tokenizer.decode(trained) == "".join(f"{text}{fmt.stop_text}" for text in kept)

    broken = tmp_path / "broken.jsonl"
    with JsonlWriter(broken) as writer:
        writer.write(successes[0].model_copy(update={"metadata": {MISTAKES: ["the third turn"]}}))
    with pytest.raises(SFTError, match=r"broken\.jsonl: metadata\['mistakes'\] of task .* must map turn indices"):
        _load(fmt, [broken], SFTConfig(val_fraction=0))


def test_recorded_token_ids_are_used_as_is_and_checked(fmt, trajectories, system, tmp_path):
    """An LLM's trajectory: a system turn, token ids in every turn; untrainable actions carry no loss."""
    scripted = trajectories[0]
    segments = fmt.trajectory_segments(scripted, system)
    turns = [turn.model_copy(update={"token_ids": ids}) for turn, ids in segments]
    untrained = next(i for i, turn in enumerate(turns) if turn.role == "assistant")
    turns[untrained] = turns[untrained].model_copy(update={"trainable": False})
    recorded = scripted.model_copy(update={"turns": turns, "scenario": "not_installed_anywhere"})
    path = tmp_path / "llm.jsonl"
    with JsonlWriter(path) as writer:
        writer.write(recorded)
    # No scenario lookup is needed: the system prompt is in the trajectory.
    train, val, _ = _load(fmt, [path], SFTConfig(val_fraction=0.0))
    (example,) = train + val
    assert example.ids == build_example(fmt, scripted, system).ids
    offset = sum(len(ids) for _, ids in segments[:untrained])
    assert not any(example.mask[offset:offset + len(segments[untrained][1])])
    assert example.trained_tokens == build_example(fmt, scripted, system).trained_tokens - len(segments[untrained][1])

    other = recorded.model_copy(update={"turns": [turns[0].model_copy(update={"token_ids": [5, 6, 7]}), *turns[1:]]})
    with JsonlWriter(tmp_path / "other.jsonl") as writer:
        writer.write(other)
    with pytest.raises(SFTError, match="different tokenizer"):
        _load(fmt, [tmp_path / "other.jsonl"])


def test_observation_content_moves_no_loss_and_masked_positions_get_no_gradient(retail_model, fmt, trajectories,
                                                                                 system):
    trajectory = trajectories[0]
    # Digits are single tokens, so changing them changes the observation but not its token count.
    changed = trajectory.model_copy(update={"turns": [
        turn.model_copy(update={"text": re.sub(r"\d", lambda m: str((int(m.group()) + 3) % 10), turn.text)})
        if turn.role == "tool" else turn for turn in trajectory.turns]})
    original, edited = build_example(fmt, trajectory, system), build_example(fmt, changed, system)
    assert original.ids != edited.ids and len(original.ids) == len(edited.ids)
    assert original.mask == edited.mask
    assert [t for t, m in zip(original.ids, original.mask) if m] == [t for t, m in zip(edited.ids, edited.mask) if m]

    model = _model(retail_model)
    for example in (original, edited):
        batch = collate([example], pad_id=fmt.tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits.retain_grad()
        targets = batch["labels"][:, 1:]
        full = masked_nll_sum(logits[:, :-1], targets)
        full.backward()
        grad_norms = logits.grad[0, :-1].abs().sum(-1)
        assert (grad_norms[targets[0] == -100] == 0).all()  # masked tokens contribute nothing
        assert (grad_norms[targets[0] != -100] > 0).all()
        # The training loss (logits only where a trained token is predicted) is the same number.
        nll, tokens, _ = token_nll(model, batch)
        assert tokens == example.trained_tokens
        assert torch.allclose(nll, full.detach(), rtol=1e-6)


def test_gradient_accumulation_equals_the_full_batch(retail_model, fmt, trajectories, system):
    examples = [build_example(fmt, t, system) for t in trajectories[:4]]
    model = _model(retail_model)

    def gradients(micro_batch_size):
        model.zero_grad(set_to_none=True)
        loss, tokens = accumulate_gradients(model, examples, micro_batch_size, fmt.tokenizer.pad_token_id)
        return loss, tokens, [p.grad.clone() for p in model.parameters()]

    full_loss, full_tokens, full = gradients(4)
    assert full_tokens == sum(e.trained_tokens for e in examples)
    for micro_batch_size in (1, 3):
        loss, tokens, grads = gradients(micro_batch_size)
        assert tokens == full_tokens and loss == pytest.approx(full_loss, abs=1e-6)
        assert max((a - b).abs().max().item() for a, b in zip(grads, full)) < 1e-6


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_shared_prefix_forward_equals_the_plain_forward(tmp_path, fmt, trajectories, system, monkeypatch, architecture):
    """Computing the rows' common system prompt once gives the plain forward's loss and gradients."""
    from trajalign.agents import sft

    # Without prompt-line tokens: the system prompt is then hundreds of tokens, as with pretrained models.
    path = build_tiny_model(["retail"], tmp_path / architecture, architecture=architecture, max_tasks_per_scenario=5,
                            prompt_tokens=False)
    model = _model(path).eval()
    own_format = ChatFormat(AutoTokenizer.from_pretrained(path))
    batch = collate([build_example(own_format, t, system) for t in trajectories[:4]], own_format.tokenizer.pad_token_id)
    prefix = sft.shared_prefix_length(batch["input_ids"], batch["attention_mask"], first_prediction=10**9)
    assert prefix >= len(own_format.encode(system)) >= sft.MIN_SHARED_PREFIX

    def loss_and_gradients():
        model.zero_grad(set_to_none=True)
        nll, tokens, correct = sft.token_nll(model, batch)
        nll.backward()
        return nll.item(), tokens, correct, [p.grad.clone() for p in model.parameters()]

    shared = loss_and_gradients()
    monkeypatch.setattr(sft, "MIN_SHARED_PREFIX", 10**9)  # force the plain forward
    plain = loss_and_gradients()
    assert shared[1:3] == plain[1:3]
    assert shared[0] == pytest.approx(plain[0], rel=1e-6)
    scale = max(g.abs().max().item() for g in plain[3])
    assert max((a - b).abs().max().item() for a, b in zip(shared[3], plain[3])) < 1e-5 * scale


def test_data_loading_counts_skips(fmt, oracle_file, trajectories, tmp_path, caplog):
    failed = trajectories[1].model_copy(update={"status": "failure"})
    path = tmp_path / "mixed.jsonl"
    shutil.copy(oracle_file, path)
    with JsonlWriter(path) as writer:
        writer.write(failed)
    with open(path, "a") as file:
        file.write('{"scenario": "retail", "turns": [\n')  # a write cut short
    train, val, counts = _load(fmt, [path])
    assert (counts.records, counts.bad_lines, counts.not_successful) == (13, 1, 1)
    assert (counts.train, counts.val) == (len(train), len(val)) == (8, 4)
    assert all(is_validation(e.task, VAL_FRACTION) for e in val)
    _, _, counts = _load(fmt, [path], SFTConfig(val_fraction=VAL_FRACTION, only_successful=False))
    assert counts.not_successful == 0 and counts.train + counts.val == 13

    lengths = sorted(len(e.ids) for e in sum(_load(fmt, [oracle_file])[:2], []))
    cut = lengths[len(lengths) // 2]  # about half the trajectories are longer
    with caplog.at_level(logging.WARNING):
        train, val, counts = _load(fmt, [oracle_file], max_length=cut)
    longest = max(len(e.ids) for e in train + val)
    assert longest <= cut and counts.too_long == 12 - len(train + val) > 0
    assert f"skipped {counts.too_long} trajectories longer than" in caplog.text


def test_unknown_scenario_names_the_scenario_and_the_file(fmt, trajectories, tmp_path):
    path = tmp_path / "custom.jsonl"
    with JsonlWriter(path) as writer:
        writer.write(trajectories[0].model_copy(update={"scenario": "my_shop"}))
    with pytest.raises(SFTError, match=r"custom\.jsonl: trajectories of scenario 'my_shop'.*--scenario PATH"):
        _load(fmt, [path])
    folder = _copy_scenario_as(tmp_path, "my_shop")
    train, val, _ = _load(fmt, [path], scenario_paths={"my_shop": folder})
    assert len(train + val) == 1


def _copy_scenario_as(tmp_path, name):
    folder = tmp_path / name
    shutil.copytree(load_scenario("retail").path, folder)
    yaml_path = folder / "scenario.yaml"
    yaml_path.write_text(re.sub(r"^name: retail$", f"name: {name}", yaml_path.read_text(), count=1, flags=re.M))
    return folder


# ---- runs --------------------------------------------------------------------------------------


def test_short_run_overfits_and_writes_the_run_directory(retail_model, fmt, oracle_file, tmp_path):
    config = SFTConfig(learning_rate=3e-3, max_steps=40, batch_size=2, micro_batch_size=2, eval_every=10,
                       save_every=10, val_fraction=VAL_FRACTION)
    train, _, _ = _load(fmt, [oracle_file], config)
    assert len(train) == 8
    pad = fmt.tokenizer.pad_token_id
    before = evaluate(_model(retail_model), train, 4, pad)["val_loss"]

    out = tmp_path / "run"
    result = train_sft(retail_model, [oracle_file], out, config, progress=False)
    assert result.complete and result.steps == 40 and result.stop_reason == "complete"
    after = evaluate(_model(out / "model"), train, 4, pad)["val_loss"]
    assert after < 0.35 * before, (before, after)
    assert result.final_val_loss is not None and result.final_val_loss < 0.5 * before
    assert result.tokens_per_second > 0

    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["learning_rate"] == 3e-3 and saved["model"] == str(retail_model.resolve())
    assert saved["data_files"] == [str(oracle_file.resolve())]
    assert saved["counts"]["train"] == 8 and saved["counts"]["val"] == 4
    metrics = read_metrics(out)
    steps = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "val_loss" in m]
    assert [m["step"] for m in steps] == list(range(1, 41))
    assert {"step", "epoch", "loss", "lr", "grad_norm", "tokens", "seconds"} <= set(steps[0])
    assert steps[-1]["epoch"] == 10 and steps[-1]["loss"] < 0.5 * steps[0]["loss"]
    assert [m["step"] for m in evals] == [10, 20, 30, 40]
    assert all(0 <= m["val_token_accuracy"] <= 1 for m in evals)
    assert evals[-1]["val_loss"] == pytest.approx(result.final_val_loss)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step-000030", "step-000040"]
    state = torch.load(out / "checkpoints" / "step-000040" / "trainer_state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng", "data_order", "step"} <= set(state) and state["step"] == 40
    assert (out / "checkpoints" / "step-000040" / "config.json").is_file()

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert tokenizer.get_vocab() == fmt.tokenizer.get_vocab() and tokenizer.chat_template == fmt.tokenizer.chat_template
    assert model.num_parameters() == _model(retail_model).num_parameters()


def _weights(path):
    return _model(path).state_dict()


def test_interrupted_runs_resume_to_the_same_weights(retail_model, oracle_file, tmp_path, capsys):
    config = SFTConfig(max_steps=6, batch_size=2, micro_batch_size=1, save_every=2, eval_every=3,
                       val_fraction=VAL_FRACTION)
    uninterrupted = train_sft(retail_model, oracle_file, tmp_path / "a", config, progress=False)
    assert uninterrupted.complete

    class Killed(Exception):
        pass

    def kill_at_step_5(line):
        if line["step"] == 5:
            raise Killed

    out = tmp_path / "b"
    with pytest.raises(Killed):
        train_sft(retail_model, oracle_file, out, config, progress=False, on_step=kill_at_step_5)
    assert latest_checkpoint(out).name == "step-000004" and not (out / "model").exists()
    capsys.readouterr()
    resumed = train_sft(retail_model, oracle_file, out, config, progress=False)
    assert "resuming from" in capsys.readouterr().out and resumed.resumed_from_step == 4 and resumed.complete

    # A clean stop on the time budget, then the same command without it.
    timed = tmp_path / "c"
    stopped = train_sft(retail_model, oracle_file, timed, config.model_copy(update={"max_seconds": 1e-3}),
                        progress=False)
    assert (stopped.complete, stopped.steps, stopped.stop_reason) == (False, 1, "max_seconds")
    assert "rerun the same command to continue" in capsys.readouterr().out
    assert latest_checkpoint(timed).name == "step-000001" and (timed / "model" / "config.json").is_file()
    finished = train_sft(retail_model, oracle_file, timed, config, progress=False)
    assert finished.complete and finished.resumed_from_step == 1

    reference = _weights(tmp_path / "a" / "model")
    for run in (out, timed):
        weights = _weights(run / "model")
        assert max((weights[k] - reference[k]).abs().max().item() for k in reference) <= 1e-6
        losses = [m["loss"] for m in read_metrics(run) if "loss" in m]
        assert losses == pytest.approx([m["loss"] for m in read_metrics(tmp_path / "a") if "loss" in m], abs=1e-6)
    assert resumed.final_val_loss == pytest.approx(uninterrupted.final_val_loss, abs=1e-6)

    again = train_sft(retail_model, oracle_file, out, config, progress=False)
    assert "already complete" in capsys.readouterr().out and again.stop_reason == "already_complete"
    with pytest.raises(SFTError, match="learning_rate"):
        train_sft(retail_model, oracle_file, out, config.model_copy(update={"learning_rate": 5e-4}), progress=False)


def test_cli_sft_end_to_end(retail_model, trajectories, tmp_path, capsys):
    data = tmp_path / "custom.jsonl"
    with JsonlWriter(data) as writer:
        for trajectory in trajectories[:4]:
            writer.write(trajectory.model_copy(update={"scenario": "my_shop"}))
    out = tmp_path / "run"
    command = ["sft", "--model", str(retail_model), "--data", str(data), "--out", str(out), "--max-steps", "2",
               "--batch-size", "2", "--micro-batch-size", "1", "--lr", "2e-3", "--seed", "1", "--train-on-mistakes",
               "--optimizer", "muon", "--muon-lr", "0.01", "--no-progress"]

    assert main(command) == 2
    assert "my_shop" in capsys.readouterr().err
    command += ["--scenario", str(_copy_scenario_as(tmp_path, "my_shop"))]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert f"model: {out / 'model'}" in printed and "steps: 2/2" in printed
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["max_steps"], saved["batch_size"], saved["micro_batch_size"], saved["learning_rate"],
            saved["seed"], saved["train_on_mistakes"], saved["optimizer"], saved["muon_learning_rate"]) == (
                2, 2, 1, 2e-3, 1, True, "muon", 0.01)
    assert AutoModelForCausalLM.from_pretrained(out / "model").num_parameters() > 0
    assert main(command) == 0 and "already complete" in capsys.readouterr().out
    assert main([*command, "--max-steps", "0"]) == 2
    assert "max_steps" in capsys.readouterr().err
