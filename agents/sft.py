"""Supervised fine-tuning (SFT) of a causal LM on agent trajectories, readable top to bottom.

Each trajectory becomes one token sequence laid out exactly as the policy sees it at rollout time
(`ChatFormat.trajectory_segments`): recorded token ids where the trajectory has them (LLM rollouts),
the chat template's rendering otherwise (scripted agents, which record text only and get their
scenario's system prompt). Only trainable assistant turns carry loss, every one of their tokens
including the stop token; system, user and tool tokens are context.

The loss of an optimizer step is the mean negative log-likelihood over all trained tokens of the
global batch. Each micro-batch contributes its NLL *sum* divided by the global batch's token count,
so gradient accumulation gives exactly the full-batch gradient.

A run lives in one directory::

    out/config.json              settings, model, data files and data counts
    out/metrics.jsonl            one line per optimizer step, plus eval lines (val_loss, val_token_accuracy)
    out/loss.png                 train and validation loss curves
    out/checkpoints/step-XXXXXX/ model, tokenizer and trainer_state.pt (optimizer, scheduler, RNG, data order)
    out/model/                   the final model, a standard Hugging Face directory
    out/result.json              the `SFTResult` of the last invocation

Running the same command again resumes from the latest checkpoint. The data order of step `s` and
its dropout masks are functions of (seed, s) only, so an interrupted and resumed run ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from transformers import DynamicCache

from trajalign.agents.chat import ChatFormat, scenario_system_prompt, trajectory_tokens
from trajalign.agents.llm import cache_argument, output_cache
from trajalign.agents.rollout import MISTAKES
from trajalign.agents.optim import OptimizerName, make_optimizer
from trajalign.agents.run_dir import (
    append_metrics,
    batch_of_step,
    epoch_order,
    latest_checkpoint,
    lr_factor,
    open_run,
    plot_curves,
    read_metrics,
    rng_state,
    save_checkpoint,
    save_model_dir,
    set_rng_state,
    write_text,
)
from trajalign.envs.jsonl import JsonlReader
from trajalign.envs.scenario import ScenarioError, load_scenario
from trajalign.envs.trajectory import Trajectory

log = logging.getLogger(__name__)

# A shared prefix shorter than this is not worth a separate forward.
MIN_SHARED_PREFIX = 32
# Settings that may differ when a run is resumed: they say how long and how often, not what is learned.
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "max_seconds", "eval_every", "save_every", "device"})


class SFTError(ValueError):
    """SFT cannot run: bad data, a scenario that cannot be resolved, or a run directory that does not match."""


# ---- settings and results ------------------------------------------------------------------------


class SFTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (1e-3 suits tiny from-scratch models).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="The cosine decays to learning_rate * min_lr_ratio.")
    weight_decay: float = Field(0.01, ge=0, description="Decoupled decay of matrices (not of biases, norms).")
    optimizer: OptimizerName = Field("adamw", description="'adamw', or 'muon': Muon on the hidden matrices, "
                                     "AdamW at learning_rate on embeddings, head, norms (agents/optim.py).")
    muon_learning_rate: float = Field(0.02, gt=0, description="Peak learning rate of the Muon matrices.")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warmup steps; None: warmup_ratio of all steps.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    epochs: int = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps to run; overrides epochs when set.")
    batch_size: int = Field(8, gt=0, description="Sequences per optimizer step.")
    micro_batch_size: int = Field(4, gt=0, description="Sequences per forward pass (at most batch_size).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm; None: no clipping.")
    eval_every: int = Field(50, gt=0, description="Validation every N steps (and at the end).")
    save_every: int = Field(100, gt=0, description="Checkpoint every N steps (and at the end).")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="Tasks held out, chosen by a stable hash of the task.")
    seed: int = 0
    max_seconds: float | None = Field(None, gt=0, description="Wall-clock budget of one invocation: stop, save, report.")
    only_successful: bool = Field(True, description="Train only on trajectories with status success.")
    train_on_mistakes: bool = Field(False, description="Also train on turns a scripted agent marked as deliberate "
                                    "mistakes (noisy oracle); by default only the recoveries after them are.")
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu', 'cuda', ...")

    @model_validator(mode="after")
    def _micro_fits(self) -> "SFTConfig":
        self.micro_batch_size = min(self.micro_batch_size, self.batch_size)
        return self


class DataCounts(BaseModel):
    files: int = 0
    records: int = Field(0, description="Valid trajectories read.")
    bad_lines: int = Field(0, description="Lines of the files that are not valid trajectories (skipped).")
    not_successful: int = Field(0, description="Skipped by only_successful.")
    too_long: int = Field(0, description="Skipped: longer than the model's maximum positions.")
    no_trained_tokens: int = Field(0, description="Skipped: no trainable assistant turn.")
    mistake_turns: int = Field(0, description="Turns marked as deliberate mistakes, kept as context, not trained.")
    train: int = 0
    val: int = 0
    train_tokens: int = 0
    train_trained_tokens: int = 0
    val_trained_tokens: int = 0
    max_length: int = 0


class SFTResult(BaseModel):
    model_path: str
    steps: int = Field(description="Optimizer steps done so far (all invocations).")
    total_steps: int
    complete: bool
    stop_reason: str = Field(description="'complete', 'max_seconds' or 'already_complete'.")
    seconds: float = Field(description="Training seconds over all invocations.")
    final_train_loss: float | None
    final_val_loss: float | None
    final_val_token_accuracy: float | None
    tokens_per_second: float = Field(description="All tokens (context and trained) per training second.")
    resumed_from_step: int | None = None
    counts: DataCounts


# ---- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One trajectory as the model reads it: token ids and, per token, whether its prediction is trained."""

    ids: list[int]
    mask: list[bool]
    task: str  # "scenario/task_id": decides the train/val side

    @property
    def trained_tokens(self) -> int:
        return sum(self.mask)


def build_example(fmt: ChatFormat, trajectory: Trajectory, system: str) -> Example:
    """Token ids and loss mask of a trajectory: exactly `trajectory_tokens`, trained where the turn is."""
    ids, turn_index = trajectory_tokens(fmt, trajectory, system)
    return Example(ids=ids, mask=[index >= 0 for index in turn_index], task=f"{trajectory.scenario}/{trajectory.task_id}")


def is_validation(task: str, val_fraction: float) -> bool:
    """Stable across runs and machines: every trajectory of a task lands on the same side."""
    digest = hashlib.sha256(task.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


class SystemPrompts:
    """System prompts of scenarios, for trajectories recorded without one (scripted agents); cached by name."""

    def __init__(self, scenario_paths: Mapping[str, str | Path] | None = None):
        self.paths = {name: Path(path) for name, path in (scenario_paths or {}).items()}
        self._cache: dict[str, str] = {}

    def __call__(self, name: str, data_file: Path) -> str:
        if name not in self._cache:
            try:
                scenario = load_scenario(self.paths.get(name, name))
            except ScenarioError as exc:
                raise SFTError(
                    f"{data_file}: trajectories of scenario '{name}' have no recorded system prompt, and scenario "
                    f"'{name}' cannot be loaded to render it ({exc}). Pass its folder or YAML file "
                    f"(--scenario PATH, or scenario_paths={{'{name}': PATH}})."
                ) from None
            self._cache[name] = scenario_system_prompt(scenario)
        return self._cache[name]


def load_examples(fmt: ChatFormat, data_files: Sequence[str | Path], config: SFTConfig, max_length: int,
                  vocab_size: int, system_prompts: SystemPrompts) -> tuple[list[Example], list[Example], DataCounts]:
    """Read the trajectory files into train and validation examples, counting what was skipped and why."""
    counts = DataCounts(files=len(data_files))
    train: list[Example] = []
    val: list[Example] = []
    for data_file in map(Path, data_files):
        if not data_file.is_file():
            raise SFTError(f"no trajectory file {data_file}")
        reader = JsonlReader(data_file, Trajectory)
        for trajectory in reader:
            counts.records += 1
            if config.only_successful and not trajectory.success:
                counts.not_successful += 1
                continue
            if not config.train_on_mistakes and trajectory.metadata.get(MISTAKES):
                trajectory = _without_mistakes(trajectory, data_file)
                counts.mistake_turns += len(trajectory.metadata[MISTAKES])
            has_system = bool(trajectory.turns) and trajectory.turns[0].role == "system"
            system = "" if has_system else system_prompts(trajectory.scenario, data_file)
            example = build_example(fmt, trajectory, system)
            _check_recorded_tokens(fmt, trajectory, example, vocab_size, data_file)
            if example.trained_tokens == 0:
                counts.no_trained_tokens += 1
                continue
            if len(example.ids) > max_length:
                counts.too_long += 1
                continue
            counts.max_length = max(counts.max_length, len(example.ids))
            (val if is_validation(example.task, config.val_fraction) else train).append(example)
        counts.bad_lines += len(reader.bad_lines)
    counts.train, counts.val = len(train), len(val)
    counts.train_tokens = sum(len(e.ids) for e in train)
    counts.train_trained_tokens = sum(e.trained_tokens for e in train)
    counts.val_trained_tokens = sum(e.trained_tokens for e in val)
    if counts.too_long:
        log.warning("skipped %d trajectories longer than the model's %d positions (not truncated)",
                    counts.too_long, max_length)
    if counts.no_trained_tokens:
        log.warning("skipped %d trajectories without a trainable assistant turn", counts.no_trained_tokens)
    if not train:
        raise SFTError(f"no training sequences in {', '.join(map(str, data_files))}: {counts.model_dump()}")
    return train, val, counts


def _without_mistakes(trajectory: Trajectory, data_file: Path) -> Trajectory:
    """The trajectory with its marked mistakes untrained (they stay in the context of later turns)."""
    try:
        marked = {int(index) for index in trajectory.metadata[MISTAKES]}
    except (TypeError, ValueError):
        raise SFTError(f"{data_file}: metadata['{MISTAKES}'] of task {trajectory.task_id} must map turn indices to "
                       f"mistake kinds, got {trajectory.metadata[MISTAKES]!r}") from None
    turns = [turn.model_copy(update={"trainable": False}) if index in marked else turn
             for index, turn in enumerate(trajectory.turns)]
    return trajectory.model_copy(update={"turns": turns})


def _check_recorded_tokens(fmt: ChatFormat, trajectory: Trajectory, example: Example, vocab_size: int,
                           data_file: Path) -> None:
    """Recorded token ids are only meaningful for the tokenizer that produced them."""
    where = f"{data_file}: trajectory of task {trajectory.scenario}/{trajectory.task_id}"
    if example.ids and max(example.ids) >= vocab_size:
        raise SFTError(f"{where} has token id {max(example.ids)}, beyond the model's vocabulary of {vocab_size}")
    first = trajectory.turns[0] if trajectory.turns else None
    if first is not None and first.role == "system" and first.token_ids is not None and len(trajectory.turns) > 1:
        expected, _ = fmt.prompt_segments(first.text, trajectory.turns[1].text)
        if first.token_ids != expected:
            raise SFTError(f"{where} was recorded with a different tokenizer or chat template than this model's "
                           "(its system prompt's token ids differ from this tokenizer's)")


# ---- batches and loss ----------------------------------------------------------------------------


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask, and labels (-100 wherever the token is not trained)."""
    width = max(len(e.ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, example in enumerate(examples):
        ids = torch.tensor(example.ids, dtype=torch.long)
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.where(torch.tensor(example.mask), ids, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def token_nll(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """(sum of NLL over trained tokens, number of trained tokens, number predicted correctly by argmax).

    Token t is predicted at position t-1. Logits are computed only at positions that predict a
    trained token in some row (`logits_to_keep`), which saves the vocabulary projection elsewhere.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    targets = batch["labels"][:, 1:].to(device)
    positions = (targets != -100).any(dim=0).nonzero().squeeze(1)
    prefix = shared_prefix_length(input_ids, attention_mask, int(positions[0]) if len(positions) else 0)
    if prefix >= MIN_SHARED_PREFIX and _accepts_logits_to_keep(model):
        logits = _forward_with_shared_prefix(model, input_ids, attention_mask, prefix, positions)
    elif _accepts_logits_to_keep(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=positions,
                       use_cache=False).logits
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, positions]
    targets = targets[:, positions]
    nll = masked_nll_sum(logits, targets)
    trained = targets != -100
    correct = int((logits.argmax(-1)[trained] == targets[trained]).sum())
    return nll, int(trained.sum()), correct


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, first_prediction: int) -> int:
    """Tokens every row begins with (the system prompt, at least), up to the first trained prediction.

    Rows of one scenario share their system prompt; the forward computes it once for the batch.
    """
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)
    differing = (~same).nonzero()
    common = int(differing[0]) if len(differing) else input_ids.shape[1]
    return min(common, first_prediction)


def _forward_with_shared_prefix(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: int,
                                positions: torch.Tensor) -> torch.Tensor:
    """Logits at `positions`, computing the rows' common prefix once and the rest per row.

    The prefix's keys and values are computed for one row, with gradient, and broadcast to the
    batch; the same attention as a plain forward, with the prefix's cost paid once.
    """
    rows, width = input_ids.shape
    output = model(input_ids=input_ids[:1, :prefix], use_cache=True, logits_to_keep=1)
    shared = output_cache(output)
    cache = DynamicCache(ddp_cache_data=[(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1))
                                         for layer in shared.layers])
    position_ids = torch.arange(prefix, width, device=input_ids.device).expand(rows, -1)
    return model(input_ids=input_ids[:, prefix:], attention_mask=attention_mask, position_ids=position_ids,
                 logits_to_keep=positions - prefix, use_cache=True, **{cache_argument(model): cache}).logits


def masked_nll_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of `logits` [..., vocab] against `targets` [...]; -100 targets contribute nothing."""
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=-100, reduction="sum")


def _accepts_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def accumulate_gradients(model: Any, examples: Sequence[Example], micro_batch_size: int,
                         pad_id: int) -> tuple[float, int]:
    """Backward the global batch's mean token NLL in micro-batches; returns (loss, trained tokens).

    Each micro-batch's NLL sum is divided by the token count of the *whole* batch, so the gradients
    add up to exactly the full-batch gradient whatever the micro-batch size. Micro-batches group
    sequences of similar length, which wastes less compute on padding and changes no gradient.
    """
    total = sum(e.trained_tokens for e in examples)
    ordered = sorted(examples, key=lambda e: len(e.ids))
    loss = 0.0
    for start in range(0, len(ordered), micro_batch_size):
        nll, _, _ = token_nll(model, collate(ordered[start:start + micro_batch_size], pad_id))
        (nll / total).backward()
        loss += nll.item() / total
    return loss, total


@torch.no_grad()
def evaluate(model: Any, examples: Sequence[Example], micro_batch_size: int, pad_id: int) -> dict[str, float]:
    """Mean token NLL and argmax accuracy over the trained tokens of `examples`."""
    was_training = model.training
    model.eval()
    nll, tokens, correct = 0.0, 0, 0
    ordered = sorted(examples, key=lambda e: len(e.ids))
    for start in range(0, len(ordered), micro_batch_size):
        batch_nll, batch_tokens, batch_correct = token_nll(model, collate(ordered[start:start + micro_batch_size], pad_id))
        nll, tokens, correct = nll + batch_nll.item(), tokens + batch_tokens, correct + batch_correct
    model.train(was_training)
    return {"val_loss": nll / tokens, "val_token_accuracy": correct / tokens, "val_tokens": tokens}


# ---- run directory -------------------------------------------------------------------------------


def plot_losses(out: Path) -> None:
    """loss.png: the training loss per step and the validation loss at each evaluation."""
    plot_curves(out, "loss.png", "SFT loss", "token NLL (trained tokens)",
                [("loss", "train"), ("val_loss", "validation")], markers=("val_loss",))


def _fingerprint(train: Sequence[Example], val: Sequence[Example]) -> str:
    """Identifies the exact training and validation sequences (a resumed run must see the same data)."""
    digest = hashlib.sha256()
    for examples in (train, val):
        for example in examples:
            digest.update(array("q", example.ids).tobytes() + bytes(example.mask) + b"|")
        digest.update(b"||")
    return digest.hexdigest()[:16]


# ---- the training loop ---------------------------------------------------------------------------


def train_sft(
    model_dir: str | Path,
    data_files: str | Path | Sequence[str | Path],
    out: str | Path,
    config: SFTConfig | None = None,
    scenario_paths: Mapping[str, str | Path] | None = None,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> SFTResult:
    """Fine-tune the model in `model_dir` on the trajectories in `data_files`; the run lives in `out`.

    `scenario_paths` maps scenario names to folders or YAML files, for text-only trajectories of
    scenarios that are not built in. `on_step` gets each optimizer step's metrics line. Rerunning
    with the same `out` resumes from its latest checkpoint, or reports that the run is complete.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from trajalign.agents.tiny import quiet_progress_bars

    started = time.perf_counter()
    config = config or SFTConfig()
    model_dir, out = Path(model_dir).resolve(), Path(out)
    files = [Path(data_files)] if isinstance(data_files, (str, Path)) else [Path(f) for f in data_files]
    if not (model_dir / "config.json").is_file():
        raise SFTError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    auto_device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto_device if config.device == "auto" else config.device)

    # -- data: every trajectory in the policy's token layout, split by a hash of its task
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    fmt = ChatFormat(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fmt.stop_ids[0]
    model_config = AutoConfig.from_pretrained(str(model_dir))
    max_length = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", 2048)
    train, val, counts = load_examples(fmt, files, config, max_length, model_config.vocab_size,
                                       SystemPrompts(scenario_paths))

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    warmup = config.warmup_steps if config.warmup_steps is not None else math.ceil(config.warmup_ratio * total_steps)
    warmup = min(warmup, total_steps)
    run_info = {
        "config": config.model_dump(),
        "model": str(model_dir),
        "data_files": [str(f.resolve()) for f in files],
        "scenario_paths": {name: str(Path(p).resolve()) for name, p in (scenario_paths or {}).items()},
        "data_fingerprint": _fingerprint(train, val),
        "counts": counts.model_dump(),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "warmup_steps": warmup,
        "max_length": max_length,
    }

    # -- resume: the latest checkpoint's weights, optimizer, scheduler and step
    resume = open_run(out, run_info, ("model", "data_files", "scenario_paths", "data_fingerprint"),
                      RESUMABLE_CHANGES, total_steps, SFTError, defaults=SFTConfig().model_dump())
    if resume.complete:
        result = SFTResult.model_validate_json((out / "result.json").read_text(encoding="utf-8"))
        return result.model_copy(update={"stop_reason": "already_complete"})
    state = resume.state
    start_from = resume.checkpoint or model_dir

    with quiet_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(str(start_from), dtype=torch.float32)
    model.to(device).train()
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay, config.optimizer,
                               config.muon_learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total_steps, config.min_lr_ratio))
    step, train_seconds = 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, train_seconds = state["step"], state["seconds"]
    resumed_from = step if state is not None else None

    def trainer_state() -> dict[str, Any]:
        epoch, batch_index, _ = batch_of_step(step, len(train), config.batch_size, config.seed)
        return {
            "step": step, "total_steps": total_steps, "seconds": train_seconds,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
            "data_order": {"seed": config.seed, "epoch": epoch, "batch_in_epoch": batch_index,
                           "steps_per_epoch": steps_per_epoch,
                           "permutation": epoch_order(len(train), config.seed, epoch)},
        }

    def log_metrics(line: dict[str, Any]) -> None:
        append_metrics(out, line)

    def run_eval() -> dict[str, float] | None:
        if not val:
            return None
        metrics = evaluate(model, val, config.micro_batch_size, pad_id)
        log_metrics({"step": step, "epoch": step / steps_per_epoch, **metrics, "seconds": train_seconds})
        return metrics

    # -- the loop: one optimizer step per global batch
    last_loss: float | None = None
    last_eval: dict[str, float] | None = None
    evaluated_at = saved_at = -1
    stop_reason = "complete"
    bar = tqdm(total=total_steps, initial=step, desc="sft", unit="step", disable=not progress)
    while step < total_steps:
        step_started = time.perf_counter()
        _, _, indices = batch_of_step(step, len(train), config.batch_size, config.seed)
        batch = [train[i] for i in indices]
        torch.manual_seed(config.seed * 1_000_003 + step)  # dropout masks depend on the step alone

        lr = scheduler.get_last_lr()[0]
        optimizer.zero_grad(set_to_none=True)
        loss, tokens = accumulate_gradients(model, batch, config.micro_batch_size, pad_id)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        step += 1

        seconds = time.perf_counter() - step_started
        train_seconds += seconds
        batch_tokens = sum(len(e.ids) for e in batch)
        last_loss = loss
        line = {"step": step, "epoch": step / steps_per_epoch, "loss": loss, "lr": lr, "grad_norm": float(grad_norm),
                "tokens": tokens, "sequences": len(batch), "input_tokens": batch_tokens,
                "tokens_per_second": batch_tokens / seconds, "seconds": train_seconds}
        log_metrics(line)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", epoch=f"{line['epoch']:.2f}", refresh=False)
        bar.update()
        if on_step is not None:
            on_step(line)

        out_of_time = config.max_seconds is not None and time.perf_counter() - started >= config.max_seconds
        if step % config.eval_every == 0 or step == total_steps or out_of_time:
            last_eval, evaluated_at = run_eval(), step
        if step % config.save_every == 0 or step == total_steps or out_of_time:
            save_checkpoint(out, step, model, tokenizer, model_dir, trainer_state())
            plot_losses(out)
            saved_at = step
        if out_of_time and step < total_steps:
            stop_reason = "max_seconds"
            break
    bar.close()

    # -- the final model and the report
    if evaluated_at != step:
        last_eval = run_eval()
    if saved_at != step:
        save_checkpoint(out, step, model, tokenizer, model_dir, trainer_state())
    plot_losses(out)
    save_model_dir(model, tokenizer, model_dir, out / "model",
                   metadata={"sft": {"base_model": str(model_dir), "run": str(out.resolve()), "steps": step}})
    if last_loss is None:  # nothing left to train this invocation
        last_loss = next((m["loss"] for m in reversed(read_metrics(out)) if "loss" in m), None)
    result = SFTResult(
        model_path=str(out / "model"),
        steps=step,
        total_steps=total_steps,
        complete=step >= total_steps,
        stop_reason=stop_reason,
        seconds=train_seconds,
        final_train_loss=last_loss,
        final_val_loss=last_eval["val_loss"] if last_eval else None,
        final_val_token_accuracy=last_eval["val_token_accuracy"] if last_eval else None,
        tokens_per_second=sum(m.get("input_tokens", 0) for m in read_metrics(out)) / max(train_seconds, 1e-9),
        resumed_from_step=resumed_from,
        counts=counts,
    )
    write_text(out / "result.json", result.model_dump_json(indent=2) + "\n")
    if stop_reason == "max_seconds":
        print(f"stopped after {time.perf_counter() - started:.0f}s (max_seconds) at step {step} of {total_steps}; "
              f"saved {out / 'checkpoints'} and {out / 'model'}; rerun the same command to continue")
    return result


__all__ = [
    "DataCounts",
    "Example",
    "SFTConfig",
    "SFTError",
    "SFTResult",
    "SystemPrompts",
    "accumulate_gradients",
    "batch_of_step",
    "build_example",
    "collate",
    "evaluate",
    "is_validation",
    "latest_checkpoint",
    "load_examples",
    "lr_factor",
    "masked_nll_sum",
    "read_metrics",
    "token_nll",
    "train_sft",
]
