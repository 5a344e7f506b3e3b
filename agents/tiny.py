"""Tiny language models built locally: a byte-level BPE tokenizer trained on scenario text, random weights.

Nothing is downloaded. `build_tiny_model` trains a tokenizer on what an agent sees and writes in the
named scenarios (instructions, tool schemas, train-split goals, and the oracle's actions and the
observations they get), builds a small Llama, Qwen2 or GPT-2 with random weights, and saves a standard
Hugging Face directory that `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained` load offline.

Every model shares one chat format (`CHAT_TEMPLATE`, `SPECIAL_TOKENS`), which other modules rely on::

    <|system|>\\n...<|end|><|user|>\\n...<|end|><|assistant|>\\n...<|end|><|tool|>\\n...<|end|>
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from trajalign.envs import make_env
from trajalign.envs.scenario import NameSwaps, Scenario, load_scenario, name_forms

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
# In this order, so a tokenizer trained here gives them ids 0..6.
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *ROLE_TOKENS)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

MAX_POSITIONS = 2048
# Shorter system-prompt lines ("Tools:") stay ordinary text.
MIN_PROMPT_LINE_CHARS = 24
METADATA_FILE = "trajalign_model.json"

Size = Literal["tiny", "small"]
Architecture = Literal["llama", "qwen2", "gpt2"]

# hidden size, layers, attention heads, MLP width, tokenizer vocabulary size.
SIZES: dict[str, dict[str, int]] = {
    # Two layers with eight heads: on CPU budgets this trains twice the steps per minute of a
    # 4-layer, 4-head model and learns to copy values from context sooner (docs/benchmarks.md).
    "tiny": {"hidden": 128, "layers": 2, "heads": 8, "intermediate": 256, "vocab_size": 2048},
    "small": {"hidden": 256, "layers": 6, "heads": 8, "intermediate": 768, "vocab_size": 4096},
}
ARCHITECTURES = ("llama", "qwen2", "gpt2")


# --- corpus -------------------------------------------------------------------------------------------


def build_corpus(scenarios: Sequence[Scenario], max_tasks_per_scenario: int | None = None,
                 name_swap_tokens: bool = False) -> Iterator[str]:
    """Texts for tokenizer training, in a fixed order.

    Per scenario: its description and instructions, the JSON of every action's OpenAI schema, and for
    each train-split task (the first `max_tasks_per_scenario` of them when given) every turn of the
    oracle played through the environment: the goal, each action text and each observation; with
    `name_swap_tokens`, then the fresh names of its `name_swaps`, if any. Test tasks contribute
    nothing, so no test goal or observation leaks into the vocabulary.
    """
    for scenario in scenarios:
        for text in (scenario.description, scenario.instructions):
            if text.strip():
                yield text
        train_tasks = scenario.tasks_in("train")
        if max_tasks_per_scenario is not None:
            train_tasks = train_tasks[: max(max_tasks_per_scenario, 0)]
        # An env of either split serves the schemas; they are the scenario's, not a task's.
        env = make_env(scenario, "train" if scenario.tasks_in("train") else "test")
        try:
            yield from _schema_texts(env)
            yield from _oracle_texts(scenario, env, train_tasks)
        finally:
            env.close()
        if name_swap_tokens and scenario.name_swaps is not None:
            yield from _replacement_texts(scenario.name_swaps)


def _schema_texts(env: Any) -> Iterator[str]:
    schemas = getattr(env.unwrapped, "tool_schemas", None)
    if schemas is None:  # an environment kind that only reports its tools on reset
        _, info = env.reset(seed=0)
        schemas = info.get("tools") or []
    yield json.dumps(schemas, ensure_ascii=False)
    for schema in schemas:
        yield json.dumps(schema, ensure_ascii=False)


def _replacement_texts(swaps: NameSwaps) -> Iterator[str]:
    # Name-swapped copies of SFT data (`trajalign augment`) write these names where the task's names
    # were; in the corpus they become whole tokens, as the names they replace are, instead of letters.
    for name in swaps.replacements:
        snake, spaced, capitalized = name_forms(name)
        text = f"/{snake}_ my {spaced}. {capitalized}"
        yield from (text, text)  # BPE merges pairs seen at least twice


def _oracle_texts(scenario: Scenario, env: Any, tasks: Iterable[Any]) -> Iterator[str]:
    # Imported here: the rollout module imports the agents package, which may import this module.
    from trajalign.agents.rollout import run_episode
    from trajalign.agents.scripted import OracleAgent

    agent = OracleAgent(scenario)
    for task in tasks:
        trajectory = run_episode(env, agent, seed=0, task_id=task.id)
        for turn in trajectory.turns:
            if turn.text:
                yield turn.text


def prompt_lines(scenarios: Sequence[Scenario]) -> list[str]:
    """The distinct lines of the scenarios' system prompts that are at least `MIN_PROMPT_LINE_CHARS` long.

    The prompt is the one a rollout starts with (`system_prompt` of the reset info), so a web
    scenario's comes from its browser environment.
    """
    from trajalign.agents.chat import system_prompt

    lines: dict[str, None] = {}
    for scenario in scenarios:
        env = make_env(scenario, "train" if scenario.tasks_in("train") else "test")
        try:
            _, info = env.reset(seed=0)
        finally:
            env.close()
        lines.update(dict.fromkeys(line for line in system_prompt(info).split("\n")
                                   if len(line) >= MIN_PROMPT_LINE_CHARS))
    return list(lines)


# --- tokenizer ----------------------------------------------------------------------------------------


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Digits first, one token each, so ids copied from observations ("#W12345") are tokenized the same
    # way wherever they appear; then GPT-2's byte-level split, which makes every string encodable.
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


def train_tokenizer(texts: Iterable[str], vocab_size: int, whole_lines: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the chat special tokens and template; deterministic for its input.

    Any string round-trips exactly through encode/decode. Digits are always single tokens. Encoding adds
    no BOS/EOS: the chat template marks turns itself. Each of `whole_lines` becomes one token wherever
    it occurs (within `vocab_size`): `build_tiny_model` passes the system prompt's lines.
    """
    minimum = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet()) + len(whole_lines)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum} (special tokens, the 256 bytes and "
                         f"{len(whole_lines)} whole lines), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = _pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(whole_lines),
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # Matched before the byte-level split, and decoded back verbatim.
    tokenizer.add_tokens([AddedToken(line, normalized=False) for line in whole_lines])
    return wrap_tokenizer(tokenizer)


def wrap_tokenizer(tokenizer_object: Tokenizer) -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` over a copy of `tokenizer_object`, with the chat tokens and template.

    Special tokens the tokenizer lacks are added (at the end of its vocabulary). Its post-processor, if
    any, is kept; a tokenizer without one adds nothing on encode.
    """
    tokenizer_object = Tokenizer.from_str(tokenizer_object.to_str())  # leave the caller's object alone
    # Appends the ones missing from the vocabulary; marks present ones special (matched whole, skippable).
    tokenizer_object.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer_with_template(tokenizer_object: Tokenizer, out_dir: str | Path) -> PreTrainedTokenizerFast:
    """`wrap_tokenizer` then `save_pretrained(out_dir)`; returns the wrapped tokenizer."""
    tokenizer = wrap_tokenizer(tokenizer_object)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


# --- model --------------------------------------------------------------------------------------------


def make_config(architecture: Architecture, size: Size, tokenizer: PreTrainedTokenizerFast,
                max_positions: int = MAX_POSITIONS) -> Any:
    """The transformers config for a model of `size` over `tokenizer`'s vocabulary (tied embeddings).

    `max_positions` is the longest sequence the model reads: web episodes (an accessibility tree per
    observation) need about 3,000 to 6,000 tokens, more than the default.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    dims = SIZES[size]
    token_ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vocab_size = len(tokenizer)
    if architecture == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=dims["hidden"], intermediate_size=dims["intermediate"],
            num_hidden_layers=dims["layers"], num_attention_heads=dims["heads"],
            num_key_value_heads=dims["heads"], max_position_embeddings=max_positions, rope_theta=10000.0,
            tie_word_embeddings=True, **token_ids,
        )
    if architecture == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=vocab_size, hidden_size=dims["hidden"], intermediate_size=dims["intermediate"],
            num_hidden_layers=dims["layers"], num_attention_heads=dims["heads"],
            num_key_value_heads=dims["heads"], max_position_embeddings=max_positions, rope_theta=10000.0,
            tie_word_embeddings=True, use_sliding_window=False, **token_ids,
        )
    if architecture == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=vocab_size, n_embd=dims["hidden"], n_inner=dims["intermediate"], n_layer=dims["layers"],
            n_head=dims["heads"], n_positions=max_positions, tie_word_embeddings=True, **token_ids,
        )
    raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")


def build_tiny_model(
    scenarios: Sequence[str | Path | Scenario],
    out: str | Path,
    size: Size = "tiny",
    seed: int = 0,
    architecture: Architecture = "llama",
    max_tasks_per_scenario: int | None = None,
    max_positions: int | None = None,
    prompt_tokens: bool = True,
    name_swap_tokens: bool = False,
) -> Path:
    """Train a tokenizer on the scenarios' corpus, build a randomly initialized model, save both to `out`.

    `scenarios` are built-in names, scenario folders or YAML paths (or loaded scenarios). The same
    arguments give the same tokenizer and weights. Returns `out`, which also gets `trajalign_model.json`
    describing how the model was built. `max_positions` (default `MAX_POSITIONS`) is the longest
    sequence the model reads; SFT, preference training and rollouts skip or stop at longer ones.

    With `prompt_tokens`, each line of the scenarios' system prompts is one token, so the model reads
    a tool-use prompt in about 30 tokens instead of about 550. A model trained from scratch learns to
    look values up in the goal and observations far sooner when its attention is not spread over a
    long constant prefix, and each step is cheaper (docs/benchmarks.md, SFT section). Prompt text
    that differs (edited instructions, another scenario) is tokenized as usual.

    With `name_swap_tokens`, the fresh names of the scenarios' `name_swaps` join the corpus, so SFT
    data augmented with `trajalign augment` tokenizes them as whole words, like the names they replace.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
    if not scenarios:
        raise ValueError("build_tiny_model needs at least one scenario")
    max_positions = max_positions or MAX_POSITIONS
    loaded = [s if isinstance(s, Scenario) else load_scenario(s) for s in scenarios]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")

    corpus_stats = {"texts": 0, "chars": 0}

    def counted(texts: Iterable[str]) -> Iterator[str]:
        for text in texts:
            corpus_stats["texts"] += 1
            corpus_stats["chars"] += len(text)
            yield text

    whole_lines = prompt_lines(loaded) if prompt_tokens else []
    corpus = build_corpus(loaded, max_tasks_per_scenario, name_swap_tokens)
    tokenizer = train_tokenizer(counted(corpus), SIZES[size]["vocab_size"], whole_lines)
    config = make_config(architecture, size, tokenizer, max_positions)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    out.mkdir(parents=True, exist_ok=True)
    with quiet_progress_bars():
        model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    ensure_auto_tokenizer_loads(out, tokenizer)
    metadata = {
        "builder": "trajalign.agents.tiny.build_tiny_model",
        "scenarios": [s.name for s in loaded],
        "scenario_paths": [str(s.file or s.path) for s in loaded],
        "size": size,
        "architecture": architecture,
        "seed": seed,
        "vocab_size": len(tokenizer),
        "target_vocab_size": SIZES[size]["vocab_size"],
        "num_parameters": model.num_parameters(),
        **{key: value for key, value in SIZES[size].items() if key != "vocab_size"},
        "max_position_embeddings": max_positions,
        "max_tasks_per_scenario": max_tasks_per_scenario,
        "prompt_line_tokens": len(whole_lines),
        "name_swap_tokens": name_swap_tokens,
        "corpus_texts": corpus_stats["texts"],
        "corpus_chars": corpus_stats["chars"],
        "special_tokens": list(SPECIAL_TOKENS),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return out


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """No "Writing model shards" bar for a one-shard model of a few MB."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


_TOKENIZER_MODULE = "tokenization_trajalign"
_TOKENIZER_MODULE_SOURCE = '''"""The tokenizer of a trajalign tiny model: tokenizer.json exactly as saved, not rebuilt per model type."""

from transformers import PreTrainedTokenizerFast


class TrajalignTokenizer(PreTrainedTokenizerFast):
    pass
'''


def ensure_auto_tokenizer_loads(model_dir: str | Path, tokenizer: PreTrainedTokenizerFast) -> None:
    """Make `AutoTokenizer.from_pretrained(model_dir)` give back exactly `tokenizer`'s pipeline, or raise.

    For some model types (Qwen2 among them) transformers ignores the saved tokenizer class and rebuilds
    the model type's own tokenizer from the vocabulary, with its own normalizer (NFC), pre-tokenizer and
    extra special tokens, which would tokenize differently from the tokenizer the model is meant for. An
    `auto_map` entry in tokenizer_config.json makes it load tokenizer.json as saved, with or without
    `trust_remote_code` (the class it names subclasses `PreTrainedTokenizerFast` and changes nothing).
    """
    model_dir = Path(model_dir)
    module_file = model_dir / f"{_TOKENIZER_MODULE}.py"
    if _auto_tokenizer_matches(model_dir, tokenizer):
        module_file.unlink(missing_ok=True)  # left by an earlier build into the same folder
        return
    module_file.write_text(_TOKENIZER_MODULE_SOURCE, encoding="utf-8")
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoTokenizer": [None, f"{_TOKENIZER_MODULE}.TrajalignTokenizer"]}
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not _auto_tokenizer_matches(model_dir, tokenizer):
        raise RuntimeError(
            f"AutoTokenizer.from_pretrained({str(model_dir)!r}) does not load the tokenizer that was saved there; "
            "load it with PreTrainedTokenizerFast.from_pretrained instead"
        )


def _auto_tokenizer_matches(model_dir: Path, tokenizer: PreTrainedTokenizerFast) -> bool:
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    return (
        json.loads(loaded.backend_tokenizer.to_str()) == json.loads(tokenizer.backend_tokenizer.to_str())
        and loaded.chat_template == tokenizer.chat_template
        and (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id)
        == (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    )


def read_model_info(model_dir: str | Path) -> dict[str, Any]:
    """The `trajalign_model.json` that `build_tiny_model` wrote into `model_dir`."""
    return json.loads((Path(model_dir) / METADATA_FILE).read_text(encoding="utf-8"))


__all__ = [
    "ARCHITECTURES",
    "BOS_TOKEN",
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "MAX_POSITIONS",
    "METADATA_FILE",
    "PAD_TOKEN",
    "ROLE_TOKENS",
    "SIZES",
    "SPECIAL_TOKENS",
    "build_corpus",
    "build_tiny_model",
    "ensure_auto_tokenizer_loads",
    "make_config",
    "read_model_info",
    "save_tokenizer_with_template",
    "train_tokenizer",
    "wrap_tokenizer",
]
