import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

from trajalign.agents.optim import MuonWithAdamW, make_optimizer, orthogonalize
from trajalign.agents.sft import SFTConfig, latest_checkpoint, train_sft

SMALL = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64}
CONFIGS = {
    "llama": LlamaConfig(**SMALL, tie_word_embeddings=True),
    "qwen2": Qwen2Config(**SMALL, tie_word_embeddings=False),
    "gpt2": GPT2Config(vocab_size=64, n_embd=32, n_inner=48, n_layer=2, n_head=4, n_positions=64),
}


@pytest.mark.parametrize("family", CONFIGS)
def test_muon_takes_the_hidden_matrices_and_adamw_the_embeddings_head_and_vectors(family):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[family])
    muon, *adamw = make_optimizer(model, 1e-3, 0.01, "muon").param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = {names[id(p)] for p in muon["params"]}
    adamw_names = {names[id(p)] for group in adamw for p in group["params"]}

    assert muon["use_muon"] and not any(group["use_muon"] for group in adamw)
    assert muon_names.isdisjoint(adamw_names) and muon_names | adamw_names == set(names.values())
    embeddings = {names[id(model.get_input_embeddings().weight)], names[id(model.get_output_embeddings().weight)]}
    if family == "gpt2":
        embeddings.add("transformer.wpe.weight")  # learned positions are an embedding too
    assert embeddings <= adamw_names
    # Every attention and MLP matrix, in each of the layers, and nothing one-dimensional.
    assert len(muon_names) == 2 * (4 if family == "gpt2" else 7)  # gpt2 fuses q, k and v
    assert all(p.ndim == 2 for p in muon["params"])
    assert all(p.ndim == 1 for group in adamw[1:] for p in group["params"])
    assert (muon["lr"], adamw[0]["lr"], adamw[1]["weight_decay"]) == (0.02, 1e-3, 0.0)


def test_the_adamw_groups_update_exactly_as_torch_adamw():
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    mine = MuonWithAdamW([{"params": ours[:1], "lr": 0.01, "weight_decay": 0.1},
                          {"params": ours[1:], "lr": 0.01, "weight_decay": 0.0}])
    reference = torch.optim.AdamW([{"params": theirs[:1], "weight_decay": 0.1},
                                   {"params": theirs[1:], "weight_decay": 0.0}], lr=0.01, betas=(0.9, 0.95), eps=1e-8)
    for _ in range(4):
        grads = [torch.randn_like(p) for p in start]
        for params, optimizer in ((ours, mine), (theirs, reference)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 16), (8, 24), (24, 8)])
def test_orthogonalize_brings_the_large_singular_values_near_one_and_none_above(shape):
    torch.manual_seed(0)
    # An ill-conditioned matrix: singular values spread from 1e-3 to 10.
    left, _ = torch.linalg.qr(torch.randn(shape[0], shape[0]))
    right, _ = torch.linalg.qr(torch.randn(shape[1], shape[1]))
    rank = min(shape)
    spectrum = torch.zeros(shape)
    spectrum[range(rank), range(rank)] = torch.logspace(-3, 1, rank)
    matrix = left @ spectrum @ right
    singular = torch.linalg.svdvals(orthogonalize(matrix))
    # Five quintic steps push the upper singular values into about [0.7, 1.2]; the smallest ones, 1e4 times
    # smaller than the largest, grow from ~1e-4 after scaling but need more steps to arrive.
    assert singular.max() < 1.25 and (singular[: rank // 2] > 0.6).all()
    assert torch.linalg.svdvals(matrix)[rank // 2] < 0.2  # the input was far from orthogonal


def test_a_muon_step_moves_a_matrix_by_lr_times_an_orthogonal_update():
    torch.manual_seed(0)
    weight = torch.zeros(8, 24, requires_grad=True)
    optimizer = MuonWithAdamW([{"params": [weight], "lr": 0.1, "weight_decay": 0.0, "use_muon": True}])
    weight.grad = torch.randn(8, 24)
    optimizer.step()
    singular = torch.linalg.svdvals(-weight.detach() / 0.1)
    assert (singular > 0.6).all() and (singular < 1.25).all()
    tall = torch.zeros(24, 8, requires_grad=True)  # tall matrices get sqrt(rows / cols) times larger steps
    tall.grad = weight.grad.T.clone()
    MuonWithAdamW([{"params": [tall], "lr": 0.1, "weight_decay": 0.0, "use_muon": True}]).step()
    torch.testing.assert_close(tall.detach(), weight.detach().T * 3**0.5, rtol=1e-5, atol=1e-6)


def test_bad_optimizer_settings_are_refused():
    model = AutoModelForCausalLM.from_config(CONFIGS["llama"])
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; choose one of adamw, muon"):
        make_optimizer(model, 1e-3, 0.0, "sgd")
    with pytest.raises(ValueError, match="Muon updates matrices only"):
        MuonWithAdamW([{"params": [torch.zeros(3, requires_grad=True)], "lr": 0.1, "use_muon": True}])
    with pytest.raises(ValueError, match="optimizer"):
        SFTConfig(optimizer="sgd")


def test_muon_sft_resumes_to_the_same_weights_and_refuses_a_switch_of_optimizer(retail_model, oracle_file,
                                                                                   tmp_path):
    data = oracle_file
    config = SFTConfig(optimizer="muon", max_steps=4, batch_size=2, micro_batch_size=2, save_every=2, eval_every=4,
                       val_fraction=0.0)
    uninterrupted = train_sft(retail_model, data, tmp_path / "a", config, progress=False)

    class Killed(Exception):
        pass

    def kill_at_step_3(line):
        if line["step"] == 3:
            raise Killed

    with pytest.raises(Killed):
        train_sft(retail_model, data, tmp_path / "b", config, progress=False, on_step=kill_at_step_3)
    assert latest_checkpoint(tmp_path / "b").name == "step-000002"
    with pytest.raises(ValueError, match="optimizer: 'muon' -> 'adamw'"):
        train_sft(retail_model, data, tmp_path / "b", config.model_copy(update={"optimizer": "adamw"}), progress=False)
    resumed = train_sft(retail_model, data, tmp_path / "b", config, progress=False)
    assert resumed.resumed_from_step == 2 and resumed.complete and uninterrupted.complete

    def weights(run):
        return AutoModelForCausalLM.from_pretrained(run / "model", dtype=torch.float32).state_dict()

    reference, resumed_weights = weights(tmp_path / "a"), weights(tmp_path / "b")
    start = AutoModelForCausalLM.from_pretrained(retail_model, dtype=torch.float32).state_dict()
    assert any((reference[k] - start[k]).abs().max() > 1e-3 for k in reference)  # it did train
    assert max((resumed_weights[k] - reference[k]).abs().max().item() for k in reference) <= 1e-6


def test_a_run_saved_before_the_optimizer_settings_existed_resumes_as_adamw(retail_model, oracle_file, tmp_path):
    data = oracle_file
    config = SFTConfig(max_steps=2, batch_size=2, save_every=1, val_fraction=0.0)
    out = tmp_path / "run"
    train_sft(retail_model, data, out, config.model_copy(update={"max_steps": 1}), progress=False)
    saved = json.loads((out / "config.json").read_text())
    for key in ("optimizer", "muon_learning_rate"):
        del saved["config"][key]
    (out / "config.json").write_text(json.dumps(saved))

    with pytest.raises(ValueError, match="optimizer: 'adamw' -> 'muon'"):
        train_sft(retail_model, data, out, config.model_copy(update={"optimizer": "muon"}), progress=False)
    resumed = train_sft(retail_model, data, out, config, progress=False)
    assert resumed.resumed_from_step == 1 and resumed.complete
