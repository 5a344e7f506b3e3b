"""What every trainer run shares: its directory, schedule, checkpoints and resumption.

A run lives in one directory (SFT and preference training alike)::

    out/config.json              settings, model, data files and data counts
    out/metrics.jsonl            one line per optimizer step, plus evaluation lines
    out/*.png                    curves drawn from metrics.jsonl
    out/checkpoints/step-XXXXXX/ model, tokenizer and trainer_state.pt (optimizer, scheduler, RNG, step)
    out/model/                   the final model, a standard Hugging Face directory
    out/result.json              the result of the last invocation

Running the same command again resumes from the latest complete checkpoint. The batch of step `s`
and its random draws are functions of (seed, s) only, so a resumed run ends with the same weights
as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

KEEP_CHECKPOINTS = 2
_CHECKPOINT = re.compile(r"step-(\d{6,})")


# ---- schedule, data order and optimizer ----------------------------------------------------------


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate for 0-based step `step`: linear warmup, then cosine decay."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def batch_of_step(step: int, num_train: int, batch_size: int, seed: int) -> tuple[int, int, list[int]]:
    """(epoch, batch index in the epoch, example indices) of 0-based optimizer step `step`.

    Each epoch is a permutation seeded by (seed, epoch), so the batch of a step depends on nothing else.
    """
    steps_per_epoch = math.ceil(num_train / batch_size)
    epoch, batch_index = divmod(step, steps_per_epoch)
    order = epoch_order(num_train, seed, epoch)
    return epoch, batch_index, order[batch_index * batch_size:(batch_index + 1) * batch_size]


def epoch_order(num_train: int, seed: int, epoch: int) -> list[int]:
    order = list(range(num_train))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


# ---- checkpoints and model directories -----------------------------------------------------------


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint (one whose trainer_state.pt was written), or None."""
    found = [(int(match.group(1)), path) for path in (out / "checkpoints").glob("step-*")
             if (match := _CHECKPOINT.fullmatch(path.name)) and (path / "trainer_state.pt").is_file()]
    return max(found)[1] if found else None


def save_model_dir(model: Any, tokenizer: Any, source_dir: Path, target: Path, metadata: dict[str, Any] | None = None,
                   extra_files: dict[str, Any] | None = None) -> None:
    """A standard Hugging Face directory, written beside `target` then moved into place.

    Custom code files of the source (e.g. a tokenizer module named by `auto_map`) are copied along,
    trajalign's model metadata gets the `metadata` fields, and each of `extra_files` is `torch.save`d.
    """
    from trajalign.agents.tiny import METADATA_FILE, quiet_progress_bars

    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    with quiet_progress_bars():
        model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    for code in source_dir.glob("*.py"):
        shutil.copy2(code, staging / code.name)
    if (source_dir / METADATA_FILE).is_file():
        info = json.loads((source_dir / METADATA_FILE).read_text(encoding="utf-8"))
        (staging / METADATA_FILE).write_text(json.dumps({**info, **(metadata or {})}, indent=2) + "\n", encoding="utf-8")
    for name, content in (extra_files or {}).items():
        torch.save(content, staging / name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def save_checkpoint(out: Path, step: int, model: Any, tokenizer: Any, source_dir: Path, state: dict[str, Any]) -> Path:
    """checkpoints/step-XXXXXX with model, tokenizer and trainer_state.pt; keeps the last KEEP_CHECKPOINTS."""
    path = out / "checkpoints" / f"step-{step:06d}"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model_dir(model, tokenizer, source_dir, path, extra_files={"trainer_state.pt": state})
    complete = sorted((int(m.group(1)), p) for p in path.parent.glob("step-*")
                      if (m := _CHECKPOINT.fullmatch(p.name)) and (p / "trainer_state.pt").is_file())
    for _, old in complete[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)
    return path


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_same_run(saved: dict[str, Any], current: dict[str, Any], keys: Iterable[str],
                   resumable: frozenset[str], defaults: Mapping[str, Any] | None = None) -> list[str]:
    """Differences between the run saved in config.json and this one that resuming cannot honour.

    `keys` are top-level entries that must match; every setting in `config` must match unless it is
    in `resumable` (settings that say how long and how often, not what is learned). A setting the
    saved run lacks (added to trajalign since) counts as its value in `defaults`.
    """
    problems = []
    saved = {**saved, "config": {**(defaults or {}), **saved["config"]}}
    for key in keys:
        if saved.get(key) != current[key]:
            problems.append("the training data changed" if key == "data_fingerprint"
                            else f"{key}: {saved.get(key)!r} -> {current[key]!r}")
    for key, value in current["config"].items():
        if key not in resumable and saved["config"].get(key) != value:
            problems.append(f"{key}: {saved['config'].get(key)!r} -> {value!r}")
    return problems


@dataclass
class Resume:
    """Where an invocation starts: fresh, from a checkpoint, or with nothing left to do."""

    state: dict[str, Any] | None = None  # trainer_state.pt of the latest checkpoint
    checkpoint: Path | None = None
    complete: bool = False  # the run already finished: its model and result are in place


def open_run(out: Path, run_info: dict[str, Any], must_match: Iterable[str], resumable: frozenset[str],
             total_steps: int, error: type[Exception] = ValueError,
             defaults: Mapping[str, Any] | None = None) -> Resume:
    """Prepare `out` for this invocation and say where to start.

    A run directory with a checkpoint is resumed when its settings match (see `check_same_run`;
    a mismatch raises `error`, naming the differences). Metrics logged after the checkpoint are
    dropped, since the resumed run logs those steps again. A fresh run starts an empty metrics file.
    """
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(out)
    resume = Resume()
    if checkpoint is not None:
        saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
        problems = check_same_run(saved, run_info, must_match, resumable, defaults)
        if problems:
            raise error(f"{out} holds a different run ({'; '.join(problems)}); use another --out or the same settings")
        state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
        if state["step"] >= total_steps and (out / "model" / "config.json").is_file() and (out / "result.json").is_file():
            print(f"{out}: the run is already complete ({state['step']} steps); the model is in {out / 'model'}")
            return Resume(state, checkpoint, complete=True)
        print(f"resuming from {checkpoint} (step {state['step']} of {total_steps})")
        if state["total_steps"] != total_steps:
            print(f"the learning-rate schedule now spans {total_steps} steps (it spanned {state['total_steps']})")
        truncate_metrics(out, state["step"])
        resume = Resume(state, checkpoint)
    else:
        (out / "metrics.jsonl").unlink(missing_ok=True)
    write_text(out / "config.json", json.dumps(run_info, indent=2) + "\n")
    return resume


# ---- metrics and plots ---------------------------------------------------------------------------


def read_metrics(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return lines


def append_metrics(out: Path, line: Mapping[str, Any]) -> None:
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


def truncate_metrics(out: Path, step: int) -> None:
    """Keep the metrics of steps up to `step` (a resumed run redoes the later ones)."""
    kept = [line for line in read_metrics(out) if line["step"] <= step]
    write_text(out / "metrics.jsonl", "".join(json.dumps(line) + "\n" for line in kept))


def plot_curves(out: Path, filename: str, title: str, ylabel: str, series: Sequence[tuple[str, str]],
                markers: Sequence[str] = ()) -> None:
    """A PNG of metrics over optimizer steps: one line per (metrics key, legend label) in `series`.

    Keys in `markers` are drawn with markers (sparse evaluation points).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = read_metrics(out)
    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for key, label in series:
        points = [(m["step"], m[key]) for m in metrics if key in m]
        if points:
            style = {"marker": "o", "markersize": 3} if key in markers else {"linewidth": 1}
            axes.plot(*zip(*points), label=label, **style)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    if axes.lines:
        axes.legend()
    axes.set_title(title)
    figure.tight_layout()
    staging = out / f"{filename}.tmp"
    figure.savefig(staging, format="png")
    staging.replace(out / filename)


def write_text(path: Path, text: str) -> None:
    """Write through a staging file, so a kill never leaves half a file."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)


__all__ = [
    "KEEP_CHECKPOINTS",
    "Resume",
    "append_metrics",
    "batch_of_step",
    "check_same_run",
    "epoch_order",
    "latest_checkpoint",
    "lr_factor",
    "open_run",
    "plot_curves",
    "read_metrics",
    "rng_state",
    "save_checkpoint",
    "save_model_dir",
    "set_rng_state",
    "truncate_metrics",
    "write_text",
]
