"""Preference-training throughput: trajalign's trainer against TRL's DPOTrainer, on the same agent pairs.

One run builds one model (the offline tiny model, or --model DIR) and one set of agent pairs that
branch late (pair_throughput.py's oracle vs late-mistake episodes: long shared prefixes), exports
the pairs with `export_pairs(..., "trl")` to TRL's conversational preference format, and trains
each trainer from the same starting weights in its own subprocess, one after the other:

- TRL: `DPOTrainer`, loss_type sigmoid, `precompute_ref_log_probs=True` (trajalign too computes
  reference log-probs once and stores them with the pairs, so neither keeps a reference model in
  memory), fp32 on CPU, no gradient checkpointing (TRL turns it on by default; trajalign does not
  use it), no eval, no saving and no logging until the end.
- trajalign: `train_preferences` with algo dpo (shared-prefix forward), no validation split.

Both: the same β, learning rate (constant, no warm-up), AdamW (β2 0.95, no weight decay), gradient
clipping at 1.0, pairs per optimizer step and pairs per forward, and torch threads. Throughput is
pairs per second over the optimizer steps after --warmup-steps: TRL's steps are timed from one
step's end to the next (a callback), trajalign's by its own per-step clock (batch selection to the
scheduler step, from metrics.jsonl). Reference log-probs, tokenization and model loading are setup
and are not timed.

Memory: each trainer runs in a fresh process, so `resource.getrusage(RUSAGE_SELF).ru_maxrss` is its
own high-water mark. The table gives the RSS when training starts (imports, model, tokenized data)
and the peak through the last step (read after each step). Both include the Python and library
baseline (TRL's process also imports datasets and accelerate), so compare the growth as well.

What is scored: TRL scores every completion token, so on multi-turn agent pairs it also trains on
the tool observations and role tokens inside the chosen and rejected continuations; trajalign scores
only the action tokens. The script counts the scored tokens per pair for each and, for each trained
model against the starting model as reference, computes the DPO loss, margin and accuracy on the
same pairs scored both ways (TRL's scoring is rebuilt from TRL's own tokenized rows and checked
against the reference log-probs TRL precomputed).

    pip install -e '.[bench]'   # TRL is an optional extra, only for this script
    python benchmarks/trl_comparison.py [--quick | --smoke] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import markdown_table, write_results
from pair_throughput import build_pairs
from trajalign.agents.chat import ChatFormat, scenario_system_prompt
from trajalign.agents.tiny import build_tiny_model, quiet_progress_bars
from trajalign.alignment import LossConfig, PairTokens, pair_tokens, pair_turn_logps, preference_loss
from trajalign.alignment.formats import export_pairs
from trajalign.alignment.logprobs import pad_token_id
from trajalign.alignment.pairs import PreferencePair
from trajalign.envs import load_scenario
from trajalign.envs.jsonl import JsonlWriter
from transformers import AutoModelForCausalLM, AutoTokenizer

TRL_MISSING = ("TRL is not installed. This benchmark compares against TRL's DPOTrainer, which is an optional "
               "extra: pip install -e '.[bench]'")
TRAINERS = ("trl", "trajalign")

# Each preset fixes the model size, the data and the number of steps; explicit flags override it.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"size": "small", "pairs": 16, "batch_size": 4, "micro_batch": 2, "warmup_steps": 1, "steps": 6},
    "quick": {"size": "tiny", "pairs": 8, "batch_size": 4, "micro_batch": 2, "warmup_steps": 1, "steps": 4},
    "smoke": {"size": "tiny", "pairs": 4, "batch_size": 2, "micro_batch": 2, "warmup_steps": 1, "steps": 1},
}


def trl_available() -> bool:
    return importlib.util.find_spec("trl") is not None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- memory and step clocks (inside the worker processes) ------------------------------------------


def current_rss_mib() -> float:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class StepClock:
    """Marks set by a trainer's hooks: when training starts and each optimizer step ends, with the RSS."""

    def __init__(self, trainer: str):
        self.trainer = trainer
        self.marks: list[float] = []
        self.rss_at_start_mib = 0.0
        self.peak_rss_mib = 0.0

    def start(self) -> None:
        self.rss_at_start_mib = current_rss_mib()
        self.marks = [time.perf_counter()]

    def step_done(self) -> None:
        self.marks.append(time.perf_counter())
        self.peak_rss_mib = peak_rss_mib()
        log(f"  {self.trainer}: step {len(self.marks) - 1} took {self.marks[-1] - self.marks[-2]:.2f}s")

    def step_seconds(self) -> list[float]:
        return [end - start for start, end in zip(self.marks, self.marks[1:])]


# ---- the two trainers (each in its own process) ------------------------------------------------------


def train_with_trl(settings: dict[str, Any], work: Path) -> dict[str, Any]:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    clock = StepClock("trl")

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.start()

        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done()

    with quiet_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(settings["model"])
    rows = [json.loads(line) for line in Path(settings["trl_file"]).read_text().splitlines()]
    config = DPOConfig(
        output_dir=str(work / "trl"), seed=0, use_cpu=True, bf16=False, gradient_checkpointing=False,
        loss_type=["sigmoid"], beta=settings["beta"], precompute_ref_log_probs=True, max_length=None,
        per_device_train_batch_size=settings["micro_batch"],
        gradient_accumulation_steps=settings["batch_size"] // settings["micro_batch"],
        max_steps=settings["warmup_steps"] + settings["steps"], learning_rate=settings["learning_rate"],
        lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch", adam_beta2=0.95, weight_decay=0.0,
        max_grad_norm=1.0, eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[Clock()])
    # transformers 5 mirrors gradient_checkpointing into activation_checkpointing; both must be off.
    assert not trainer.args.gradient_checkpointing, "TRL must train without activation checkpointing, as trajalign"
    trainer.train()
    trainer.save_model(str(work / "trl_model"))
    columns = ["prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps"]
    return {"version": trl.__version__, "model_dir": str(work / "trl_model"), "step_seconds": clock.step_seconds(),
            "rss_at_start_mib": clock.rss_at_start_mib, "peak_rss_mib": clock.peak_rss_mib,
            "tokenized": trainer.train_dataset.select_columns(columns).to_list()}


def train_with_trajalign(settings: dict[str, Any], work: Path) -> dict[str, Any]:
    from trajalign.agents.run_dir import read_metrics
    from trajalign.alignment.trainer import DataParallel, TrainConfig, train_preferences

    clock = StepClock("trajalign")

    class Measured(DataParallel):
        """The single-process trainer, with its hooks reporting the start of training and each step's RSS."""

        def prepare(self, model, config, pad_id):
            clock.start()

        def accumulate(self, model, batch, config, pad_id):
            metrics = super().accumulate(model, batch, config, pad_id)
            clock.step_done()  # the step's time is taken from the trainer's own clock below
            return metrics

    total = settings["warmup_steps"] + settings["steps"]
    config = TrainConfig(
        loss=LossConfig(algo="dpo", beta=settings["beta"]), learning_rate=settings["learning_rate"],
        min_lr_ratio=1.0, warmup_ratio=0.0, max_steps=total, batch_size=settings["batch_size"],
        micro_batch_size=settings["micro_batch"], max_grad_norm=1.0, eval_every=total, save_every=total,
        val_fraction=0.0, device="cpu", seed=0,
    )
    out = work / "trajalign"
    result = train_preferences(settings["model"], settings["pairs_file"], out, config, progress=False,
                               parallel=Measured())
    cumulative = [line["seconds"] for line in read_metrics(out) if "loss" in line]
    return {"model_dir": result.model_path, "step_seconds": [b - a for a, b in zip([0.0, *cumulative], cumulative)],
            "rss_at_start_mib": clock.rss_at_start_mib, "peak_rss_mib": clock.peak_rss_mib}


def run_worker(trainer: str, work: Path) -> None:
    settings = json.loads((work / "settings.json").read_text())
    torch.set_num_threads(settings["threads"])
    torch.manual_seed(0)
    train = train_with_trl if trainer == "trl" else train_with_trajalign
    (work / f"{trainer}.json").write_text(json.dumps(train(settings, work)))


def run_trainer(trainer: str, work: Path, threads: int) -> dict[str, Any]:
    """Train in a fresh process, so its peak RSS is its own; returns what the worker wrote."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(work / "hf_home")}
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    subprocess.run([sys.executable, __file__, "--worker", trainer, "--work", str(work)], env=env, check=True)
    log(f"{trainer} finished in {time.perf_counter() - started:.0f}s")
    # The 1-minute load average around the run: other work on the machine slows whichever trainer it overlaps.
    return {**json.loads((work / f"{trainer}.json").read_text()), "load_average": [load_before, os.getloadavg()[0]]}


def throughput(run: dict[str, Any], warmup_steps: int, batch_size: int) -> dict[str, float]:
    timed = run["step_seconds"][warmup_steps:]
    return {"pairs_per_s": len(timed) * batch_size / sum(timed), "median_s_per_step": statistics.median(timed),
            "timed_steps": len(timed), "warmup_s": sum(run["step_seconds"][:warmup_steps])}


# ---- what each trainer scores --------------------------------------------------------------------------


def completion_tokens(row: dict[str, Any]) -> PairTokens:
    """A pair as TRL tokenized it, laid out so every completion token counts as one action (TRL's scoring)."""
    chosen, rejected = row["chosen_ids"], row["rejected_ids"]
    return PairTokens(row["prompt_ids"], chosen, rejected, [0] * len(chosen), [0] * len(rejected), 1, 1)


def scored_tokens(tokens: PairTokens) -> int:
    return sum(index >= 0 for index in tokens.chosen_turn) + sum(index >= 0 for index in tokens.rejected_turn)


def fed_tokens(tokens: PairTokens, shared_prefix: bool) -> int:
    """Tokens one forward pass of the pair processes: the prefix once (and the cached last token twice) or twice."""
    prefix = len(tokens.prefix) + 1 if shared_prefix else 2 * len(tokens.prefix)
    return prefix + len(tokens.chosen) + len(tokens.rejected)


@torch.no_grad()
def batched_logps(model: Any, tokens: list[PairTokens], pad_id: int, micro_batch: int) -> list[Any]:
    return [pair_turn_logps(model, tokens[i:i + micro_batch], pad_id) for i in range(0, len(tokens), micro_batch)]


def dpo_summary(policy: list[Any], reference: list[Any], beta: float) -> dict[str, float]:
    """Mean DPO loss, margin r(w) − r(l) and accuracy over the pairs, from per-batch log-probs."""
    config = LossConfig(algo="dpo", beta=beta)
    losses, margins = [], []
    for policy_batch, reference_batch in zip(policy, reference):
        loss, metrics = preference_loss(config, policy_batch, reference_batch)
        losses.append(loss)
        margins.append(metrics["rewards/margins"])
    loss, margin = torch.cat(losses), torch.cat(margins)
    return {"loss": float(loss.mean()), "margin": float(margin.mean()), "accuracy": float((margin > 0).float().mean())}


def load_model(model_dir: str | Path) -> Any:
    with quiet_progress_bars():
        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()


def compare_scoring(model_dir: Path, trained: dict[str, str], pairs: list[PreferencePair], trl_rows: list[dict],
                    system: str, beta: float, micro_batch: int) -> dict[str, Any]:
    """Both scorings of the same pairs, for each trained model against the starting model as reference."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    fmt = ChatFormat(tokenizer)
    pad_id = pad_token_id(fmt)
    layouts = {"action tokens (trajalign)": [pair_tokens(fmt, pair, system) for pair in pairs],
               "all completion tokens (TRL)": [completion_tokens(row) for row in trl_rows]}
    reference = load_model(model_dir)
    reference_logps = {name: batched_logps(reference, tokens, pad_id, micro_batch) for name, tokens in layouts.items()}
    # TRL's own precomputed reference log-probs must match the rebuilt scoring, or the comparison is off.
    rebuilt = torch.cat([torch.stack([batch.chosen[:, 0], batch.rejected[:, 0]], dim=1)
                         for batch in reference_logps["all completion tokens (TRL)"]])
    stored = torch.tensor([[row["ref_chosen_logps"], row["ref_rejected_logps"]] for row in trl_rows])
    rows = []
    for trainer, trained_dir in trained.items():
        policy = load_model(trained_dir)
        for scoring, tokens in layouts.items():
            summary = dpo_summary(batched_logps(policy, tokens, pad_id, micro_batch), reference_logps[scoring], beta)
            rows.append({"trained_by": trainer, "scoring": scoring,
                         "scored_tokens_per_pair": statistics.mean(map(scored_tokens, tokens)), **summary})
    return {"rows": rows, "max_abs_difference_from_trl_reference_logps": float((rebuilt - stored).abs().max()),
            "max_rel_difference_from_trl_reference_logps": float(((rebuilt - stored) / stored).abs().max())}


def token_counts(model_dir: Path, pairs: list[PreferencePair], trl_rows: list[dict], system: str) -> dict[str, Any]:
    fmt = ChatFormat(AutoTokenizer.from_pretrained(str(model_dir)))
    ours = [pair_tokens(fmt, pair, system) for pair in pairs]
    theirs = [completion_tokens(row) for row in trl_rows]
    return {
        "prefix_mean": statistics.mean(len(t.prefix) for t in ours),
        "chosen_mean": statistics.mean(len(t.chosen) for t in ours),
        "rejected_mean": statistics.mean(len(t.rejected) for t in ours),
        "trajalign_scored_per_pair": statistics.mean(map(scored_tokens, ours)),
        "trl_scored_per_pair": statistics.mean(map(scored_tokens, theirs)),
        "trajalign_fed_per_pair": statistics.mean(fed_tokens(t, shared_prefix=True) for t in ours),
        "trl_fed_per_pair": statistics.mean(fed_tokens(t, shared_prefix=False) for t in theirs),
    }


# ---- the run -----------------------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, list[PreferencePair], str]:
    """The model, the pairs (trajalign's JSONL and TRL's export) and the settings both workers read."""
    scenario = load_scenario(args.scenario)
    # A plain-text system prompt (hundreds of tokens, as a pretrained model reads it): the long shared
    # prefix these timings are about, and the setting of the figures in docs/benchmarks.md.
    model_dir = args.model or build_tiny_model([scenario], work / "model", size=args.size, prompt_tokens=False)
    system = scenario_system_prompt(scenario)
    pairs = build_pairs(scenario, args.pairs, args.branch_from_end, work)
    with JsonlWriter(work / "pairs.jsonl") as writer:
        for pair in pairs:
            writer.write(pair)
    # Exported with the system prompt trajalign renders, so both trainers see the same conversations.
    export_pairs(pairs, work / "pairs.trl.jsonl", "trl", system_prompt=lambda _: system)
    settings = {"model": str(model_dir), "pairs_file": str(work / "pairs.jsonl"),
                "trl_file": str(work / "pairs.trl.jsonl"), "threads": args.threads, "beta": args.beta,
                "learning_rate": args.lr, "batch_size": args.batch_size, "micro_batch": args.micro_batch,
                "warmup_steps": args.warmup_steps, "steps": args.steps}
    (work / "settings.json").write_text(json.dumps(settings, indent=2))
    return Path(model_dir), pairs, system


def report(args: argparse.Namespace, preset: str, runs: dict[str, dict], speed: dict[str, dict],
           tokens: dict[str, Any], scoring: dict[str, Any], seconds: float) -> tuple[str, dict[str, Any]]:
    ratio = speed["trajalign"]["pairs_per_s"] / speed["trl"]["pairs_per_s"]
    throughput_rows = [
        [name, f"{speed[name]['pairs_per_s']:.2f}", f"{speed[name]['median_s_per_step']:.2f}",
         f"{tokens[f'{name}_fed_per_pair']:.0f}", f"{tokens[f'{name}_scored_per_pair']:.0f}",
         f"{runs[name]['rss_at_start_mib']:.0f}", f"{runs[name]['peak_rss_mib']:.0f}",
         f"{runs[name]['peak_rss_mib'] - runs[name]['rss_at_start_mib']:.0f}"]
        for name in ("trl", "trajalign")]
    scoring_rows = [[row["trained_by"], row["scoring"], f"{row['scored_tokens_per_pair']:.0f}", f"{row['loss']:.4f}",
                     f"{row['margin']:.3f}", f"{row['accuracy']:.2f}"] for row in scoring["rows"]]
    model = args.size if args.model is None else str(args.model)
    loads = ", ".join(f"{name} {runs[name]['load_average'][0]:.1f}/{runs[name]['load_average'][1]:.1f}"
                      for name in TRAINERS)
    table = (
        markdown_table(["trainer", "pairs/s", "median s/step", "tokens fed/pair", "tokens scored/pair",
                        "RSS at start (MiB)", "peak RSS (MiB)", "growth (MiB)"], throughput_rows)
        + f"\n\ntrajalign: {ratio:.2f}x TRL's pairs/s (target >= 2x). TRL {runs['trl']['version']}, DPO sigmoid, "
        f"beta {args.beta}, {args.batch_size} pairs per step in forwards of {args.micro_batch}, "
        f"{speed['trl']['timed_steps']} timed steps after {args.warmup_steps} warm-up, model {model}, "
        f"{args.threads} torch thread(s), CPU, fp32. Pairs: {args.pairs}, prefix {tokens['prefix_mean']:.0f} tokens, "
        f"chosen {tokens['chosen_mean']:.0f}, rejected {tokens['rejected_mean']:.0f} (mean). "
        f"RSS: ru_maxrss of each trainer's own process. 1-minute load average before/after each trainer: {loads}.\n\n"
        + markdown_table(["trained by", "scored as", "tokens scored/pair", "DPO loss", "margin", "accuracy"],
                         scoring_rows)
        + f"\n\nEach trained model against the starting model, on the same {args.pairs} pairs. TRL's scoring, rebuilt "
        f"from its tokenized rows, matches the reference log-probs TRL precomputed to "
        f"{scoring['max_abs_difference_from_trl_reference_logps']:.1e} "
        f"(relative {scoring['max_rel_difference_from_trl_reference_logps']:.0e}; "
        "float32 sums over hundreds of tokens)."
    )
    payload = {
        "preset": preset, "model": str(args.model) if args.model else f"tiny model, size {args.size} (built offline)",
        "scenario": args.scenario, "pairs": args.pairs, "branch_from_end": args.branch_from_end, "beta": args.beta,
        "learning_rate": args.lr, "batch_size": args.batch_size, "micro_batch": args.micro_batch,
        "warmup_steps": args.warmup_steps, "steps": args.steps, "threads": args.threads, "device": "cpu",
        "trl_version": runs["trl"]["version"], "wall_seconds": seconds, "speedup": ratio,
        "trainers": {name: {**speed[name], "step_seconds": runs[name]["step_seconds"],
                            "rss_at_start_mib": runs[name]["rss_at_start_mib"],
                            "peak_rss_mib": runs[name]["peak_rss_mib"], "load_average": runs[name]["load_average"]}
                     for name in TRAINERS},
        "tokens": tokens, "scoring": scoring,
        "memory_note": "ru_maxrss (peak RSS) of each trainer's own subprocess, read after each step; RSS at start "
                       "is VmRSS when the first step begins. Both include the interpreter and library baseline.",
    }
    return table, payload


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the tiny model, 8 pairs, 4 timed steps (about 1 min on 2 CPUs)")
    parser.add_argument("--smoke", action="store_true",
                        help="the tiny model, 4 pairs, 1 timed step (about 35 s on 2 CPUs)")
    parser.add_argument("--scenario", default="retail")
    parser.add_argument("--size", choices=["tiny", "small"], help="tiny model size (random weights)")
    parser.add_argument("--model", type=Path, help="a model directory to use instead of building one")
    parser.add_argument("--pairs", type=int)
    parser.add_argument("--batch-size", type=int, help="pairs per optimizer step")
    parser.add_argument("--micro-batch", type=int, help="pairs per forward pass")
    parser.add_argument("--warmup-steps", type=int, help="optimizer steps run first and not timed")
    parser.add_argument("--steps", type=int, help="timed optimizer steps")
    parser.add_argument("--branch-from-end", type=int, default=2, help="actions between the branch and the plan's end")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trainer (1: steady timings)")
    parser.add_argument("--results-dir", type=Path, help="where to write the JSON and markdown (default: results/)")
    parser.add_argument("--worker", choices=TRAINERS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    for name, value in PRESETS[preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.batch_size % args.micro_batch:
        parser.error("--batch-size must be a multiple of --micro-batch (TRL accumulates whole forwards)")
    return args, preset


def main(argv: list[str] | None = None) -> int:
    args, preset = parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.work)
        return 0
    if not trl_available():
        print(TRL_MISSING, file=sys.stderr)
        return 2
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="trl_comparison_") as temporary:  # models, pairs, TRL's dataset cache
        work = Path(temporary)
        log(f"preparing the model and {args.pairs} pairs in {work}")
        model_dir, pairs, system = prepare(args, work)
        runs = {}
        for trainer in TRAINERS:
            log(f"training with {trainer}: {args.warmup_steps} warm-up + {args.steps} timed steps")
            runs[trainer] = run_trainer(trainer, work, args.threads)
        trl_rows = runs["trl"].pop("tokenized")
        if len(trl_rows) != len(pairs):
            raise RuntimeError(f"TRL kept {len(trl_rows)} of {len(pairs)} pairs; the scoring comparison needs all")
        speed = {name: throughput(runs[name], args.warmup_steps, args.batch_size) for name in TRAINERS}
        log("scoring the pairs both ways with both trained models")
        tokens = token_counts(model_dir, pairs, trl_rows, system)
        scoring = compare_scoring(model_dir, {name: runs[name]["model_dir"] for name in TRAINERS}, pairs, trl_rows,
                                  system, args.beta, args.micro_batch)
    table, payload = report(args, preset, runs, speed, tokens, scoring, time.perf_counter() - started)
    print(table)
    name = "trl_comparison" if preset == "full" else f"trl_comparison_{preset}"
    print(f"results: {write_results(name, payload, table, args.results_dir)}")
    log(f"done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
