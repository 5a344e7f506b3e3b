"""Preference training on `PreferencePair`s (dpo, dmpo, stepwise, ipo, simpo), readable top to bottom.

Reference log-probs are computed once, with the starting model, before the first step and stored
with the pairs in `out/pairs.reference.jsonl`: no reference model sits in memory while training,
and a resumed run reuses them. Pairs that already carry reference log-probs keep theirs.

The loss of an optimizer step is the mean per-pair loss over the global batch. Each micro-batch
contributes its loss *sum* divided by the global batch size, so gradient accumulation gives exactly
the full-batch gradient. The run directory is the one `trajalign.agents.run_dir` describes, with
loss.png, margins.png and accuracy.png.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from trajalign.agents.chat import ChatFormat
from trajalign.agents.optim import make_optimizer
from trajalign.agents.run_dir import (
    Resume,
    append_metrics,
    batch_of_step,
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
from trajalign.agents.sft import SFTError, SystemPrompts, is_validation
from trajalign.alignment.logprobs import PairTokens, TurnLogps, pair_tokens, pair_turn_logps, reference_logps
from trajalign.alignment.losses import LossConfig, preference_loss
from trajalign.alignment.pairs import PreferencePair
from trajalign.envs.jsonl import JsonlReader, JsonlWriter

log = logging.getLogger(__name__)

REFERENCE_FILE = "pairs.reference.jsonl"
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "max_seconds", "eval_every", "save_every", "device"})


class TrainError(ValueError):
    """Preference training cannot run: bad pairs, or a run directory that does not match."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loss: LossConfig = Field(default_factory=LossConfig)
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="The cosine decays to learning_rate * min_lr_ratio.")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(2, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps to run; overrides epochs when set.")
    batch_size: int = Field(16, gt=0, description="Pairs per optimizer step.")
    micro_batch_size: int = Field(4, gt=0, description="Pairs per forward pass (at most batch_size).")
    max_grad_norm: float | None = Field(1.0, gt=0)
    eval_every: int = Field(25, gt=0, description="Validation every N steps (and at the end).")
    save_every: int = Field(50, gt=0, description="Checkpoint every N steps (and at the end).")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Tasks held out, chosen by a stable hash of the task.")
    shared_prefix: bool = Field(True, description="Compute each pair's shared prefix once (the packed forward).")
    seed: int = 0
    max_seconds: float | None = Field(None, gt=0, description="Wall-clock budget of one invocation: stop, save, report.")
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu', 'cuda', ...")

    @model_validator(mode="after")
    def _micro_fits(self) -> TrainConfig:
        self.micro_batch_size = min(self.micro_batch_size, self.batch_size)
        return self


class PairCounts(BaseModel):
    files: int = 0
    records: int = Field(0, description="Valid pairs read.")
    bad_lines: int = Field(0, description="Lines that are not valid pairs (skipped, reported with line numbers).")
    too_long: int = Field(0, description="Skipped: a side is longer than the model's maximum positions.")
    train: int = 0
    val: int = 0


class TrainResult(BaseModel):
    model_path: str
    algo: str
    steps: int
    total_steps: int
    complete: bool
    stop_reason: str
    seconds: float
    pairs_per_second: float
    final: dict[str, float] = Field(description="The last training step's metrics.")
    final_val: dict[str, float] | None = Field(None, description="The last validation metrics.")
    resumed_from_step: int | None = None
    counts: PairCounts


# ---- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """A pair with its token layout."""

    pair: PreferencePair
    tokens: PairTokens

    @property
    def length(self) -> int:
        return len(self.tokens.prefix) + max(len(self.tokens.chosen), len(self.tokens.rejected))


def read_pairs(files: Sequence[Path], counts: PairCounts) -> list[PreferencePair]:
    pairs: list[PreferencePair] = []
    for path in files:
        if not path.is_file():
            raise TrainError(f"no pairs file {path}")
        reader = JsonlReader(path, PreferencePair)
        pairs.extend(reader)
        counts.bad_lines += len(reader.bad_lines)
    counts.files, counts.records = len(files), len(pairs)
    seen: dict[str, int] = {}
    for pair in pairs:
        seen[pair.id] = seen.get(pair.id, 0) + 1
    duplicated = [pair_id for pair_id, count in seen.items() if count > 1]
    if duplicated:
        raise TrainError(f"pair ids must be unique; {len(duplicated)} repeat, e.g. {duplicated[0]!r}")
    if not pairs:
        raise TrainError(f"no valid pairs in {', '.join(map(str, files))}")
    return pairs


def with_reference(model: Any, fmt: ChatFormat, pairs: list[PreferencePair], out: Path,
                   system: Callable[[str], str], batch_size: int, progress: bool) -> list[PreferencePair]:
    """The pairs with reference log-probs: stored ones kept, missing ones computed by `model` and saved.

    Computed pairs are appended to out/pairs.reference.jsonl as they are done, so an interrupted
    run computes only the rest when resumed.
    """
    path = out / REFERENCE_FILE
    stored = {pair.id: pair for pair in JsonlReader(path, PreferencePair)} if path.is_file() else {}
    missing = [pair for pair in pairs if not pair.has_reference and pair.id not in stored]
    if missing:
        with JsonlWriter(path) as writer:
            for start in tqdm(range(0, len(missing), batch_size), desc="reference log-probs", unit="batch",
                              disable=not progress):
                for pair in reference_logps(model, fmt, missing[start:start + batch_size], system,
                                            batch_size=batch_size, progress=False):
                    writer.write(pair)
                    stored[pair.id] = pair
    return [pair if pair.has_reference else stored[pair.id] for pair in pairs]


def _fingerprint(pairs: Sequence[PreferencePair]) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(pair.model_dump_json(exclude={"ref_logps_chosen", "ref_logps_rejected"}).encode("utf-8"))
    return digest.hexdigest()[:16]


# ---- one batch -----------------------------------------------------------------------------------


def value_gaps(pairs: Sequence[PreferencePair]) -> torch.Tensor:
    """Q̂_w − Q̂_l of each pair; NaN where a value is not known."""
    return torch.tensor([pair.value_chosen - pair.value_rejected
                         if pair.value_chosen is not None and pair.value_rejected is not None else math.nan
                         for pair in pairs], dtype=torch.float32)


def batch_loss(model: Any, examples: Sequence[Example], config: TrainConfig, pad_id: int,
               global_batch: int) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's share of the global batch's mean loss, and its per-pair metric sums."""
    pairs = [example.pair for example in examples]
    policy = pair_turn_logps(model, [example.tokens for example in examples], pad_id, config.shared_prefix)
    reference = None if config.loss.algo == "simpo" else TurnLogps.from_reference(pairs)
    losses, metrics = preference_loss(config.loss, policy, reference, value_gaps(pairs).to(policy.chosen.device))
    sums = {"loss": float(losses.detach().sum())}
    sums.update({name: float(value.detach().float().sum()) for name, value in metrics.items()})
    return losses.sum() / global_batch, sums


def accumulate(model: Any, examples: Sequence[Example], config: TrainConfig, pad_id: int,
               backward: bool) -> dict[str, float]:
    """Mean loss and metrics over `examples`, in micro-batches of similar length; backward if asked."""
    ordered = sorted(examples, key=lambda example: example.length)
    totals: dict[str, float] = {}
    for start in range(0, len(ordered), config.micro_batch_size):
        loss, sums = batch_loss(model, ordered[start:start + config.micro_batch_size], config, pad_id, len(ordered))
        if backward:
            loss.backward()
        for name, value in sums.items():
            totals[name] = totals.get(name, 0.0) + value
    return {name: value / len(ordered) for name, value in totals.items()}


class DataParallel:
    """How this process takes part in training: alone (this class), or as one rank of a data-parallel group.

    Single-process training is rank 0 of 1 and every hook below is trivial. `trajalign.ray_train`
    runs the same loop on each Ray Train worker with a DDP subclass: each rank computes the
    gradient of its shard of the global batch, the ranks sum them, and every rank takes the same
    optimizer step. Rank 0 alone writes the run directory.
    """

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, configured: torch.device) -> torch.device:
        """The device this rank trains on."""
        return configured

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        return value

    def prepare(self, model: Any, config: TrainConfig, pad_id: int) -> None:
        """Called once the model is loaded (and resumed), before the first step."""

    def accumulate(self, model: Any, batch: Sequence[Example], config: TrainConfig, pad_id: int) -> dict[str, float]:
        """Gradients of the global batch's mean loss in `.grad` (the same on every rank); its mean metrics."""
        return accumulate(model, batch, config, pad_id, backward=True)


def shared_resume(parallel: DataParallel, opened: Resume | TrainError | None) -> Resume:
    """Where every rank starts: rank 0 opened the run (`opened`, or why it could not), the others load its
    checkpoint themselves; a run directory rank 0 refused raises the same `TrainError` on every rank."""
    if parallel.world_size > 1:
        if isinstance(opened, TrainError):
            shared: dict[str, Any] = {"error": str(opened)}
        elif opened is not None:
            shared = {"checkpoint": str(opened.checkpoint) if opened.checkpoint is not None else None,
                      "complete": opened.complete}
        else:
            shared = {}
        shared = parallel.broadcast(shared)
        if "error" in shared:
            raise TrainError(shared["error"])
        if opened is None:
            checkpoint = Path(shared["checkpoint"]) if shared["checkpoint"] else None
            state = torch.load(checkpoint / "trainer_state.pt", weights_only=True) if checkpoint else None
            return Resume(state, checkpoint, shared["complete"])
    if isinstance(opened, TrainError):
        raise opened
    assert opened is not None
    return opened


@torch.no_grad()
def evaluate(model: Any, examples: Sequence[Example], config: TrainConfig, pad_id: int) -> dict[str, float]:
    was_training = model.training
    model.eval()
    metrics = accumulate(model, examples, config, pad_id, backward=False)
    model.train(was_training)
    return {f"val_{name}": value for name, value in metrics.items()}


def plot_run(out: Path) -> None:
    plot_curves(out, "loss.png", "preference loss", "loss", [("loss", "train"), ("val_loss", "validation")],
                markers=("val_loss",))
    plot_curves(out, "margins.png", "reward margin r(w) − r(l)", "margin",
                [("rewards/margins", "train"), ("val_rewards/margins", "validation")], markers=("val_rewards/margins",))
    plot_curves(out, "accuracy.png", "preference accuracy", "fraction of pairs with r(w) > r(l)",
                [("rewards/accuracies", "train"), ("val_rewards/accuracies", "validation")],
                markers=("val_rewards/accuracies",))


# ---- the training loop ---------------------------------------------------------------------------


def train_preferences(
    model_dir: str | Path,
    pairs_files: str | Path | Sequence[str | Path],
    out: str | Path,
    config: TrainConfig | None = None,
    scenario_paths: Mapping[str, str | Path] | None = None,
    progress: bool = True,
    parallel: DataParallel | None = None,
) -> TrainResult:
    """Train the model in `model_dir` (also the reference) on the pairs; the run lives in `out`.

    Rerunning with the same `out` resumes from its latest checkpoint, or reports that it is complete.
    `parallel` makes this process one rank of a data-parallel group (see `DataParallel`).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from trajalign.agents.tiny import quiet_progress_bars

    started = time.perf_counter()
    config = config or TrainConfig()
    model_dir, out = Path(model_dir).resolve(), Path(out)
    files = [Path(pairs_files)] if isinstance(pairs_files, (str, Path)) else [Path(f) for f in pairs_files]
    if not (model_dir / "config.json").is_file():
        raise TrainError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    parallel = parallel or DataParallel()
    main = parallel.is_main
    progress = progress and main
    device = parallel.device(torch.device(("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto"
                                          else config.device))

    # -- data: pairs in the model's token layout, split by a hash of their task
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    fmt = ChatFormat(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fmt.stop_ids[0]
    model_config = AutoConfig.from_pretrained(str(model_dir))
    max_length = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", 2048)
    counts = PairCounts()
    pairs = read_pairs(files, counts)
    prompts = SystemPrompts(scenario_paths)
    system = _system_prompt_of(prompts, files[0])
    steps_per_epoch = math.ceil(len(pairs) / config.batch_size)  # before the split: refined below
    run_info = {
        "config": config.model_dump(),
        "model": str(model_dir),
        "data_files": [str(f.resolve()) for f in files],
        "scenario_paths": {name: str(Path(p).resolve()) for name, p in (scenario_paths or {}).items()},
        "data_fingerprint": _fingerprint(pairs),
        "max_length": max_length,
    }
    examples = []
    for pair in pairs:
        try:
            tokens = pair_tokens(fmt, pair, "" if pair.prefix[0].role == "system" else system(pair.scenario))
        except ValueError as exc:
            raise TrainError(f"pair {pair.id}: {exc}") from None
        example = Example(pair, tokens)
        if example.length > max_length:
            counts.too_long += 1
            continue
        examples.append(example)
    train = [e for e in examples if not is_validation(f"{e.pair.scenario}/{e.pair.task_id}", config.val_fraction)]
    val = [e for e in examples if is_validation(f"{e.pair.scenario}/{e.pair.task_id}", config.val_fraction)]
    counts.train, counts.val = len(train), len(val)
    if counts.too_long:
        log.warning("skipped %d pairs longer than the model's %d positions (not truncated)", counts.too_long, max_length)
    if not train:
        raise TrainError(f"no training pairs left in {', '.join(map(str, files))}: {counts.model_dump()}")
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    warmup = min(math.ceil(config.warmup_ratio * total_steps), total_steps)
    run_info.update({"counts": counts.model_dump(), "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                     "warmup_steps": warmup})

    # -- resume, or start: the reference log-probs come from the starting model
    opened: Resume | TrainError | None = None
    if main:
        try:
            opened = open_run(out, run_info, ("model", "data_files", "scenario_paths", "data_fingerprint"),
                              RESUMABLE_CHANGES, total_steps, TrainError)
        except TrainError as exc:
            opened = exc
    resume = shared_resume(parallel, opened)
    if resume.complete:
        result = TrainResult.model_validate_json((out / "result.json").read_text(encoding="utf-8"))
        return result.model_copy(update={"stop_reason": "already_complete"})
    with quiet_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.to(device)
    if config.loss.algo != "simpo":
        if not main:  # rank 0 computes and stores them; the others read them
            parallel.barrier()
        referenced = {pair.id: pair for pair in with_reference(model, fmt, [e.pair for e in examples], out, system,
                                                               config.micro_batch_size * 2, progress)}
        if main:
            parallel.barrier()
        train = [Example(referenced[e.pair.id], e.tokens) for e in train]
        val = [Example(referenced[e.pair.id], e.tokens) for e in val]
    if resume.checkpoint is not None:
        with quiet_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(str(resume.checkpoint), dtype=torch.float32).to(device)
    model.train()
    parallel.prepare(model, config, pad_id)
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total_steps,
                                                                                  config.min_lr_ratio))
    step, train_seconds = 0, 0.0
    if resume.state is not None:
        optimizer.load_state_dict(resume.state["optimizer"])
        scheduler.load_state_dict(resume.state["scheduler"])
        set_rng_state(resume.state["rng"])
        step, train_seconds = resume.state["step"], resume.state["seconds"]

    def trainer_state() -> dict[str, Any]:
        return {"step": step, "total_steps": total_steps, "seconds": train_seconds, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state()}

    def run_eval() -> dict[str, float] | None:
        if not val or not main:
            return None
        metrics = evaluate(model, val, config, pad_id)
        append_metrics(out, {"step": step, "epoch": step / steps_per_epoch, **metrics, "seconds": train_seconds})
        return metrics

    # -- the loop: one optimizer step per global batch of pairs
    last: dict[str, float] = {}
    last_eval: dict[str, float] | None = None
    evaluated_at = saved_at = -1
    stop_reason = "complete"
    bar = tqdm(total=total_steps, initial=step, desc=config.loss.algo, unit="step", disable=not progress)
    while step < total_steps:
        step_started = time.perf_counter()
        _, _, indices = batch_of_step(step, len(train), config.batch_size, config.seed)
        batch = [train[i] for i in indices]
        torch.manual_seed(config.seed * 1_000_003 + step)  # dropout masks depend on the step alone

        lr = scheduler.get_last_lr()[0]
        optimizer.zero_grad(set_to_none=True)
        metrics = parallel.accumulate(model, batch, config, pad_id)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        step += 1

        seconds = time.perf_counter() - step_started
        train_seconds += seconds
        last = {**metrics, "lr": lr, "grad_norm": float(grad_norm), "pairs_per_second": len(batch) / seconds}
        if main:
            append_metrics(out, {"step": step, "epoch": step / steps_per_epoch, **last, "pairs": len(batch),
                                 "seconds": train_seconds})
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", margin=f"{metrics['rewards/margins']:.3f}",
                        acc=f"{metrics['rewards/accuracies']:.2f}", refresh=False)
        bar.update()

        out_of_time = config.max_seconds is not None and time.perf_counter() - started >= config.max_seconds
        if config.max_seconds is not None:
            out_of_time = parallel.broadcast(out_of_time)  # every rank stops at the same step
        if step % config.eval_every == 0 or step == total_steps or out_of_time:
            last_eval, evaluated_at = run_eval(), step
        if step % config.save_every == 0 or step == total_steps or out_of_time:
            if main:
                save_checkpoint(out, step, model, tokenizer, model_dir, trainer_state())
                plot_run(out)
            saved_at = step
        if out_of_time and step < total_steps:
            stop_reason = "max_seconds"
            break
    bar.close()

    # -- the final model and the report
    if evaluated_at != step:
        last_eval = run_eval()
    if main:
        if saved_at != step:
            save_checkpoint(out, step, model, tokenizer, model_dir, trainer_state())
        plot_run(out)
        save_model_dir(model, tokenizer, model_dir, out / "model", metadata={"preference": {
            "algo": config.loss.algo, "base_model": str(model_dir), "run": str(out.resolve()), "steps": step}})
    if not last:  # nothing left to train this invocation
        last = next(({k: v for k, v in m.items() if isinstance(v, float)} for m in reversed(read_metrics(out))
                     if "loss" in m), {})
    trained_pairs = sum(m.get("pairs", 0) for m in read_metrics(out))
    result = TrainResult(
        model_path=str(out / "model"), algo=config.loss.algo, steps=step, total_steps=total_steps,
        complete=step >= total_steps, stop_reason=stop_reason, seconds=train_seconds,
        pairs_per_second=trained_pairs / max(train_seconds, 1e-9), final=last, final_val=last_eval,
        resumed_from_step=resume.state["step"] if resume.state is not None else None, counts=counts,
    )
    if not main:
        return result
    write_text(out / "result.json", result.model_dump_json(indent=2) + "\n")
    if stop_reason == "max_seconds":
        print(f"stopped after {time.perf_counter() - started:.0f}s (max_seconds) at step {step} of {total_steps}; "
              f"saved {out / 'checkpoints'} and {out / 'model'}; rerun the same command to continue")
    return result


def _system_prompt_of(prompts: SystemPrompts, data_file: Path) -> Callable[[str], str]:
    """The system prompt of a scenario, for prefixes recorded without one; errors name the pairs file."""
    def system(scenario: str) -> str:
        try:
            return prompts(scenario, data_file)
        except SFTError as exc:
            raise TrainError(str(exc)) from None
    return system


__all__ = ["DataParallel", "PairCounts", "TrainConfig", "TrainError", "TrainResult", "read_pairs",
           "train_preferences"]
