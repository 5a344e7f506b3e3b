"""Preference training on Ray Train: the single-process trainer on N data-parallel (DDP) workers.

`trajalign train --workers N [--gpus-per-worker G]` runs `train_preferences` itself on every
worker of a `ray.train.torch.TorchTrainer` (process group: gloo on CPU, nccl on GPU). Every rank
draws the same global batch for a step (`batch_of_step` depends on the seed and the step only),
takes its shard of it (every N-th pair by length), and backpropagates its shard's loss *sum*
divided by the *global* batch size, scaled by N. DDP averages gradients over the N ranks, so the
average of N·(shard sum)/B is the full batch's mean-loss gradient: the same gradient, clipping and
optimizer step as one process on the global batch, to float rounding. Micro-batches within a
rank accumulate under `no_sync`; each rank syncs exactly once per step (a rank whose shard is
empty joins with a zero-weighted pair, so the collective never waits on it).

Run directory: exactly the single-process layout (config, metrics, checkpoints, model, result),
written by rank 0, so a run started on Ray can be resumed without it and vice versa. Ray Train's
own state sits in `out/ray-train/`. When a worker dies (process killed, node lost), Ray Train
restarts the worker group, up to `max_failures` times (`FailureConfig`), and every rank resumes
from the latest complete checkpoint in `out/checkpoints`: the steps since it are redone, with the
same batches. On a multi-node cluster `out` must be on storage every node sees (NFS, or a mounted
bucket), as Ray Train requires of its `storage_path`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from trajalign.alignment.trainer import (
    DataParallel,
    Example,
    TrainConfig,
    TrainError,
    TrainResult,
    batch_loss,
    train_preferences,
)
from trajalign.ray_cluster import init_ray

RAY_DIR = "ray-train"
ERROR_FILE = "error.txt"


class _PairLoss(torch.nn.Module):
    """The model with `batch_loss` as its forward, so DDP sees one forward per micro-batch.

    (The packed shared-prefix computation calls the model twice per micro-batch; DDP needs those
    calls inside one forward of the module it wraps.)
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, pad_id: int):
        super().__init__()
        self.model = model
        self.config = config
        self.pad_id = pad_id

    def forward(self, examples: Sequence[Example], global_batch: int) -> tuple[torch.Tensor, dict[str, float]]:
        return batch_loss(self.model, examples, self.config, self.pad_id, global_batch)


class DDPParallel(DataParallel):
    """One rank of a torch.distributed group (set up by Ray Train) training with DDP."""

    def __init__(self, rank: int, world_size: int, device: torch.device, fault: dict[str, int] | None = None,
                 fault_marker: Path | None = None):
        self.rank, self.world_size, self._device = rank, world_size, device
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        self._fault, self._fault_marker, self._steps = fault, fault_marker, 0

    def device(self, configured: torch.device) -> torch.device:
        return self._device

    def barrier(self) -> None:
        torch.distributed.barrier()

    def broadcast(self, value: Any) -> Any:
        shared = [value]
        torch.distributed.broadcast_object_list(shared, src=0, device=self._device if self._device.type == "cuda"
                                                else None)
        return shared[0]

    def prepare(self, model: Any, config: TrainConfig, pad_id: int) -> None:
        self.ddp = torch.nn.parallel.DistributedDataParallel(_PairLoss(model, config, pad_id), device_ids=None,
                                                             broadcast_buffers=False)

    def accumulate(self, model: Any, batch: Sequence[Example], config: TrainConfig, pad_id: int) -> dict[str, float]:
        assert self.ddp is not None, "prepare() first"
        self._steps += 1
        self._maybe_die()
        ordered = sorted(batch, key=lambda example: example.length)
        shard = ordered[self.rank::self.world_size]  # balanced by length
        micro = [shard[i:i + config.micro_batch_size] for i in range(0, len(shard), config.micro_batch_size)]
        weight = 1.0
        if not micro:  # more ranks than pairs: join the gradient sum with nothing in it
            micro, weight = [ordered[:1]], 0.0
        totals: dict[str, float] = {}
        for index, part in enumerate(micro):
            last = index == len(micro) - 1
            with contextlib.nullcontext() if last else self.ddp.no_sync():
                loss, sums = self.ddp(part, len(batch))
                # DDP averages over ranks; N * (shard sum / B) averaged over N ranks is the global mean's gradient.
                (loss * (self.world_size * weight)).backward()
            for name, value in sums.items():
                totals[name] = totals.get(name, 0.0) + value * weight
        names = sorted(totals)
        summed = torch.tensor([totals[name] for name in names], dtype=torch.float64, device=self._device)
        torch.distributed.all_reduce(summed)
        return {name: float(value) / len(batch) for name, value in zip(names, summed.tolist())}

    def _maybe_die(self) -> None:
        """The fault drill: SIGKILL this rank at its N-th step, once per run directory."""
        fault, marker = self._fault, self._fault_marker
        if not fault or marker is None or fault["rank"] != self.rank or self._steps != fault["step"] or marker.exists():
            return
        marker.write_text(f"rank {self.rank} killed itself at its step {self._steps}\n", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGKILL)


def _train_worker(settings: dict[str, Any]) -> None:
    """The loop each Ray Train worker runs: `train_preferences` as one DDP rank."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(settings["cpus_per_worker"])))
    out = Path(settings["out"])
    ray_dir = out / RAY_DIR
    parallel = DDPParallel(rank, world_size, ray.train.torch.get_device(), settings.get("fault"),
                           ray_dir / "fault-drill.txt")
    config = TrainConfig.model_validate_json(settings["config"])
    try:
        train_preferences(settings["model_dir"], settings["pairs_files"], out, config, settings["scenario_paths"],
                          progress=settings["progress"], parallel=parallel)
    except TrainError as exc:  # bad data or a mismatched run directory: retrying cannot help
        if rank == 0:
            ray_dir.mkdir(parents=True, exist_ok=True)
            (ray_dir / ERROR_FILE).write_text(str(exc), encoding="utf-8")


def train_preferences_on_ray(
    model_dir: str | Path,
    pairs_files: str | Path | Sequence[str | Path],
    out: str | Path,
    config: TrainConfig | None = None,
    scenario_paths: Mapping[str, str | Path] | None = None,
    *,
    workers: int = 2,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    max_failures: int = 3,
    progress: bool = True,
    fault: dict[str, int] | None = None,
) -> TrainResult:
    """`train_preferences` on `workers` Ray Train DDP workers; the same run directory and result.

    `config.batch_size` stays the global batch (pairs per optimizer step, over all workers).
    `fault={"rank": r, "step": s}` is a drill: rank r SIGKILLs itself at its s-th step of the first
    attempt, to rehearse (and test) recovery from the last checkpoint.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    config = config or TrainConfig()
    out = Path(out).resolve()
    files = [pairs_files] if isinstance(pairs_files, (str, Path)) else list(pairs_files)
    ray_dir = out / RAY_DIR
    ray_dir.mkdir(parents=True, exist_ok=True)
    (ray_dir / ERROR_FILE).unlink(missing_ok=True)
    init_ray()
    use_gpu = gpus_per_worker > 0
    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = gpus_per_worker
    settings = {
        "model_dir": str(Path(model_dir).resolve()),
        "pairs_files": [str(Path(f).resolve()) for f in files],
        "out": str(out),
        "config": config.model_dump_json(),
        "scenario_paths": {name: str(Path(path).resolve()) for name, path in (scenario_paths or {}).items()},
        "cpus_per_worker": cpus_per_worker,
        "progress": progress,
        "fault": fault,
    }
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=settings,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=RAY_DIR, storage_path=str(out),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    try:
        trainer.fit()
    except TrainingFailedError as exc:
        raise TrainError(f"training on Ray failed after {max_failures} restart(s) of the worker group: {exc}; "
                         f"rerun to resume from the last checkpoint in {out / 'checkpoints'}") from exc
    if (ray_dir / ERROR_FILE).is_file():
        raise TrainError((ray_dir / ERROR_FILE).read_text(encoding="utf-8"))
    result = TrainResult.model_validate_json((out / "result.json").read_text(encoding="utf-8"))
    (ray_dir / "workers.json").write_text(json.dumps({"workers": workers, "cpus_per_worker": cpus_per_worker,
                                                      "gpus_per_worker": gpus_per_worker,
                                                      "backend": "nccl" if use_gpu else "gloo"}, indent=2) + "\n")
    return result


__all__ = ["DDPParallel", "train_preferences_on_ray"]
