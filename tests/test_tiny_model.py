import json
import os
import random
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

from trajalign.agents.tiny import (
    CHAT_TEMPLATE,
    SIZES,
    SPECIAL_TOKENS,
    build_corpus,
    build_tiny_model,
    prompt_lines,
    read_model_info,
    save_tokenizer_with_template,
    train_tokenizer,
)
from trajalign.agents.chat import scenario_system_prompt
from trajalign.cli import main
from trajalign.envs import load_scenario

MAX_TASKS = 30  # per scenario: keeps each build well under a second


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_tiny_model(["retail", "filesystem"], tmp_path_factory.mktemp("tiny") / "llama",
                            max_tasks_per_scenario=MAX_TASKS)


@pytest.fixture(scope="module")
def tokenizer(llama_dir):
    return AutoTokenizer.from_pretrained(llama_dir, local_files_only=True)


def _random_strings(count=200, seed=0):
    rng = random.Random(seed)
    samples = ["", " ", "  leading and trailing  ", "tabs\tand\nnew\r\nlines", "😀👍🏽 emoji, 家族 👨‍👩‍👧",
               "e\u0301 vs \u00e9, \ufb01, Ω vs \u2126", "<|end|> <|user|>\n literal specials", "#W12345 I37050 2024-06-27"]
    for _ in range(count):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        samples.append(raw.decode("utf-8", errors="replace"))
        samples.append("".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000),
                                               rng.randrange(0x1F300, 0x1FAFF)])) for _ in range(rng.randrange(1, 40))))
    return samples


def test_directory_loads_offline_in_a_fresh_process(llama_dir):
    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "ids = tok.apply_chat_template([{'role': 'user', 'content': 'Cancel #W12345'}], add_generation_prompt=True,"
        " return_tensors='pt', return_dict=True)\n"
        "out = model.generate(**ids, max_new_tokens=4, do_sample=False)\n"
        "print(json.dumps({'model': type(model).__name__, 'vocab': model.config.vocab_size, 'len': len(tok),"
        " 'new': out.shape[1] - ids['input_ids'].shape[1]}))\n"
    )
    # An unreachable endpoint as well as offline mode: any attempt to reach a hub fails.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-c", script, str(llama_dir)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["model"] == "LlamaForCausalLM"
    assert loaded["vocab"] == loaded["len"]
    assert 1 <= loaded["new"] <= 4


def test_directory_contents_config_and_provenance(llama_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(llama_dir, local_files_only=True)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        128, 2, 8, 256)
    assert config.max_position_embeddings == 2048 and config.tie_word_embeddings
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert config.vocab_size == len(tokenizer) <= SIZES["tiny"]["vocab_size"]
    ids = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == ("<|pad|>", "<|bos|>", "<|end|>")
    assert ids == (0, 1, 2)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == ids
    generation = model.generation_config
    assert (generation.pad_token_id, generation.bos_token_id, generation.eos_token_id) == ids
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(SPECIAL_TOKENS)))

    info = read_model_info(llama_dir)
    assert info["scenarios"] == ["retail", "filesystem"]
    assert (info["size"], info["architecture"], info["seed"]) == ("tiny", "llama", 0)
    assert info["vocab_size"] == len(tokenizer)
    assert info["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert info["corpus_texts"] > 2 * MAX_TASKS and info["corpus_chars"] > 10_000
    assert info["max_tasks_per_scenario"] == MAX_TASKS


def test_chat_template_renders_exactly(tokenizer):
    assert tokenizer.chat_template == CHAT_TEMPLATE
    messages = [
        {"role": "system", "content": "You are a helpful agent."},
        {"role": "user", "content": "Cancel order #W12345."},
        {"role": "assistant", "content": '{"name": "get_order_details", "arguments": {"order_id": "#W12345"}}'},
        {"role": "tool", "content": '{"status": "pending"}'},
    ]
    expected = ("<|system|>\nYou are a helpful agent.<|end|>"
                "<|user|>\nCancel order #W12345.<|end|>"
                '<|assistant|>\n{"name": "get_order_details", "arguments": {"order_id": "#W12345"}}<|end|>'
                '<|tool|>\n{"status": "pending"}<|end|>')
    assert tokenizer.apply_chat_template(messages, tokenize=False) == expected
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        expected + "<|assistant|>\n")
    # Role markers and <|end|> are single tokens; nothing is added around the rendered text.
    ids = tokenizer(expected, add_special_tokens=True)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|system|>")
    assert ids[-1] == tokenizer.eos_token_id
    assert ids.count(tokenizer.eos_token_id) == 4


def test_unicode_round_trips_and_nothing_is_added(tokenizer):
    for text in _random_strings():
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
        assert tokenizer.encode(text, add_special_tokens=True) == ids
        assert all(0 <= i < len(tokenizer) for i in ids)


def test_digits_are_single_tokens(tokenizer):
    tokens = tokenizer.tokenize("Cancel #W12345 and I37050 please")
    assert tokens[tokens.index("W") + 1: tokens.index("W") + 6] == ["1", "2", "3", "4", "5"]
    assert all(not any(c.isdigit() for c in t) or len(t) == 1 for t in tokens)
    assert [t for t in tokenizer.tokenize("#W12345") if t.isdigit()] == list("12345")


def test_system_prompt_lines_are_single_tokens_and_edited_prompts_still_round_trip(llama_dir, tokenizer):
    scenarios = [load_scenario("retail"), load_scenario("filesystem")]
    lines = prompt_lines(scenarios)
    assert read_model_info(llama_dir)["prompt_line_tokens"] == len(lines) > 10
    for scenario in scenarios:
        prompt = scenario_system_prompt(scenario)
        ids = tokenizer.encode(prompt)
        assert tokenizer.decode(ids) == prompt
        # One token per long line, and a few for the short lines and the newlines between them.
        assert len(ids) <= 2 * prompt.count("\n") + 2
        assert sum(tokenizer.convert_ids_to_tokens(i) in lines for i in ids) == sum(
            line in lines for line in prompt.split("\n"))
        edited = prompt.replace("one call per turn", "one call each turn")
        assert tokenizer.decode(tokenizer.encode(edited)) == edited
        assert len(tokenizer.encode(edited)) > len(ids) + 5  # the edited line is ordinary text again


def test_prompt_tokens_off_keeps_plain_bpe(tmp_path):
    out = build_tiny_model(["filesystem"], tmp_path / "plain", max_tasks_per_scenario=MAX_TASKS, prompt_tokens=False)
    plain = AutoTokenizer.from_pretrained(out)
    prompt = scenario_system_prompt(load_scenario("filesystem"))
    assert read_model_info(out)["prompt_line_tokens"] == 0
    assert len(plain.encode(prompt)) > 300
    assert plain.decode(plain.encode(prompt)) == prompt


def test_corpus_holds_schemas_and_oracle_turns_but_no_test_tasks():
    retail = load_scenario("retail")
    texts = list(build_corpus([retail], max_tasks_per_scenario=5))
    train = retail.tasks_in("train")[:5]
    assert retail.instructions in texts
    assert any('"name": "final_answer"' in t and '"name": "cancel_order"' in t for t in texts)
    assert all(task.goal in texts for task in train)
    assert all(call.to_text() in texts for task in train for call in task.oracle)
    assert any(t.startswith('{"user_id"') for t in texts)  # a tool observation
    test_goals = {task.goal for task in retail.tasks_in("test")} - {task.goal for task in retail.tasks_in("train")}
    assert not test_goals & set(texts)
    # Deterministic, and the limit applies per scenario.
    assert texts == list(build_corpus([retail], max_tasks_per_scenario=5))
    assert len(list(build_corpus([retail], max_tasks_per_scenario=10))) > len(texts)


def test_name_swap_replacements_become_whole_tokens_like_the_names_they_replace():
    filesystem = load_scenario("filesystem")
    tokenizer = train_tokenizer(build_corpus([filesystem], max_tasks_per_scenario=50, name_swap_tokens=True),
                                SIZES["tiny"]["vocab_size"])
    pieces = lambda text: [tokenizer.decode([i]) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert pieces("/kite_festival_draft") == ["/", "kite", "_", "festival", "_", "draft"]
    assert pieces(" kite festival") == [" kite", " festival"]
    assert pieces("# Kite festival") == ["#", " Kite", " festival"]
    # The words come from name_swaps, and only when asked for.
    plain = train_tokenizer(build_corpus([filesystem], max_tasks_per_scenario=50), SIZES["tiny"]["vocab_size"])
    assert not {"kite", "festival"} & set(plain.get_vocab())


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "gpt2"])
def test_each_architecture_builds_loads_and_runs(tmp_path, architecture):
    out = build_tiny_model(["travel"], tmp_path / architecture, architecture=architecture, seed=1,
                           max_tasks_per_scenario=10)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.config.model_type == architecture
    # transformers rebuilds its own tokenizer for some model types (qwen2); the saved one must come back.
    assert tokenizer.backend_tokenizer.normalizer is None
    assert len(tokenizer) == model.config.vocab_size == read_model_info(out)["vocab_size"]
    text = "Book FL816 for ana_khan_1430 😀 e\u0301"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    assert model.config.eos_token_id == tokenizer.eos_token_id == 2


def test_small_size(tmp_path):
    out = build_tiny_model(["filesystem"], tmp_path / "small", size="small", max_tasks_per_scenario=10)
    config = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        256, 6, 8, 768)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_max_positions_sets_the_context_length(tmp_path, architecture):
    # Web episodes need more than the default 2048 positions; SFT, training and rollouts read this value.
    out = build_tiny_model(["retail"], tmp_path / architecture, architecture=architecture, max_tasks_per_scenario=5,
                           max_positions=8192)
    config = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).config
    assert config.max_position_embeddings == 8192  # GPT-2 maps it to n_positions
    assert read_model_info(out)["max_position_embeddings"] == 8192


def test_same_seed_same_tokenizer_and_weights(tmp_path):
    def build(name, seed):
        return build_tiny_model(["retail"], tmp_path / name, seed=seed, max_tasks_per_scenario=MAX_TASKS)

    first, second, other = build("a", 3), build("b", 3), build("c", 4)
    vocab = [json.loads((d / "tokenizer.json").read_text())["model"] for d in (first, second, other)]
    assert vocab[0] == vocab[1] == vocab[2]  # the tokenizer depends on the corpus only
    weights = [load_file(d / "model.safetensors") for d in (first, second, other)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_save_tokenizer_with_template_wraps_any_tokenizer(tmp_path):
    raw = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    save_tokenizer_with_template(raw, tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True)
    assert raw.get_vocab_size() == 3  # the caller's object is left alone
    assert loaded.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(3, 3 + len(SPECIAL_TOKENS)))
    assert loaded.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False,
                                      add_generation_prompt=True) == "<|user|>\nhello<|end|><|assistant|>\n"
    assert loaded("hello world")["input_ids"] == [0, 1]


def test_train_tokenizer_rejects_a_vocabulary_below_the_byte_alphabet():
    with pytest.raises(ValueError, match="at least"):
        train_tokenizer(["some text"], 100)


def test_cli_model_init(tmp_path, capsys):
    out = tmp_path / "cli-model"
    assert main(["model", "init", "--scenario", "retail", "--scenario", "travel", "--out", str(out), "--size", "tiny",
                 "--architecture", "gpt2", "--seed", "5", "--max-tasks", "10"]) == 0
    printed = capsys.readouterr().out
    info = read_model_info(out)
    assert (info["scenarios"], info["architecture"], info["seed"]) == (["retail", "travel"], "gpt2", 5)
    assert str(out) in printed
    assert f"{info['num_parameters']:,} parameters" in printed
    assert f"vocab size: {info['vocab_size']}" in printed
    assert AutoModelForCausalLM.from_pretrained(out, local_files_only=True).config.model_type == "gpt2"
    assert info["name_swap_tokens"] is False


def test_cli_model_init_with_name_swap_tokens(tmp_path):
    out = tmp_path / "swap-model"
    assert main(["model", "init", "--scenario", "filesystem", "--name-swap-tokens", "--max-tasks", "10",
                 "--out", str(out)]) == 0
    assert read_model_info(out)["name_swap_tokens"] is True
    vocab = AutoTokenizer.from_pretrained(out, local_files_only=True).get_vocab()
    assert {"kite", "festival", "Ġpottery"} <= set(vocab)  # fresh names from the filesystem name_swaps


def test_cli_model_init_unknown_scenario(tmp_path, capsys):
    assert main(["model", "init", "--scenario", "no-such-scenario", "--out", str(tmp_path / "m")]) == 2
    assert "no scenario 'no-such-scenario'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
