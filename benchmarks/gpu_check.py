"""GPU check: one Ray Train step with nccl and bf16, and a batched rollout on the GPU; a short report.

For a machine (or cluster node) with NVIDIA GPUs, before a long run. It checks, in order:

1. the devices: torch's CUDA build, each GPU's name and memory, the NCCL version;
2. Ray Train with nccl: `--gpus` workers (default: every GPU here), each a DDP rank on its own
   GPU, run one optimizer step of a tiny causal LM in bf16 and all-reduce a tensor; the step's
   loss must be finite and equal on every rank, the all-reduce must sum to the world size;
3. the preference trainer itself on Ray Train with GPUs (`train_preferences_on_ray`, one step);
4. a batched rollout: an `LLMPolicy` in bf16 on a GPU Ray actor plays `--episodes` episodes,
   batched, reporting env steps/s and generated tokens/s.

    python benchmarks/gpu_check.py [--gpus N] [--episodes 32] [--batch-size 16] [--json FILE]

Exit status: 0 all checks passed, 1 a check failed, 2 no GPU here (nothing was run).
Everything runs on a local Ray unless RAY_ADDRESS names a cluster.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, help="Ray Train workers, one GPU each (default: every GPU here)")
    parser.add_argument("--scenario", default="retail")
    parser.add_argument("--episodes", type=int, default=32, help="rollout episodes")
    parser.add_argument("--batch-size", type=int, default=16, help="environments per generation batch")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--json", type=Path, help="also write the report to this JSON file")
    args = parser.parse_args(argv)
    if args.gpus is not None and args.gpus < 1:
        parser.error("--gpus must be at least 1")
    if args.episodes < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        parser.error("--episodes, --batch-size and --max-new-tokens must be positive")
    return args


def devices() -> dict[str, Any]:
    import torch

    report: dict[str, Any] = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
                              "cuda_available": torch.cuda.is_available(), "gpus": []}
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            report["gpus"].append({"index": index, "name": properties.name,
                                   "memory_gib": round(properties.total_memory / 2**30, 1),
                                   "bf16": torch.cuda.is_bf16_supported()})
        try:
            report["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception as exc:  # noqa: BLE001 -- reported, not fatal here: the Ray Train check will fail
            report["nccl"] = f"unavailable ({exc})"
    return report


def _nccl_bf16_step(config: dict[str, Any]) -> None:
    """One Ray Train worker: a DDP bf16 step of the tiny model on its GPU, and an all-reduce over nccl."""
    import ray.train
    import ray.train.torch
    import torch
    from transformers import AutoModelForCausalLM

    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    assert torch.distributed.get_backend() == "nccl", torch.distributed.get_backend()
    model = AutoModelForCausalLM.from_pretrained(config["model"], dtype=torch.bfloat16).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(context.get_world_rank())
    ids = torch.randint(0, model.config.vocab_size, (4, 64), generator=generator).to(device)
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    loss = ddp(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    total = torch.ones(1, device=device)
    torch.distributed.all_reduce(total)
    losses = [torch.zeros(1, device=device) for _ in range(context.get_world_size())]
    torch.distributed.all_gather(losses, loss.detach().float().reshape(1))
    if context.get_world_rank() == 0:
        Path(config["report"]).write_text(json.dumps({
            "world_size": context.get_world_size(), "all_reduce_sum": float(total),
            "losses": [float(x) for x in losses],
            "step_seconds": seconds, "dtype": str(next(model.parameters()).dtype),
            "device": torch.cuda.get_device_name(device)}))


def ray_train_check(model: Path, gpus: int, work: Path) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    report = work / "nccl_step.json"
    TorchTrainer(_nccl_bf16_step, train_loop_config={"model": str(model), "report": str(report)},
                 torch_config=TorchConfig(backend="nccl"),
                 scaling_config=ScalingConfig(num_workers=gpus, use_gpu=True),
                 run_config=RunConfig(name="gpu-check", storage_path=str(work))).fit()
    result = json.loads(report.read_text())
    result["ok"] = (result["all_reduce_sum"] == gpus and all(math.isfinite(x) for x in result["losses"])
                    and result["dtype"] == "torch.bfloat16")
    return result


def trainer_check(model: Path, gpus: int, work: Path, scenario: str) -> dict[str, Any]:
    from trajalign.agents import NoiseRates, NoisyOracleAgent, OracleAgent, run_rollouts
    from trajalign.alignment.builders import outcome_pairs
    from trajalign.alignment.trainer import TrainConfig
    from trajalign.envs import Trajectory, load_scenario
    from trajalign.envs.jsonl import JsonlWriter, read_jsonl
    from trajalign.ray_train import train_preferences_on_ray

    loaded = load_scenario(scenario)
    run_rollouts(loaded, lambda: OracleAgent(loaded), "train", 16, 0, work / "oracle.jsonl", progress=False)
    rates = NoiseRates(wrong_tool=0.3, wrong_argument=0.3, premature_answer=0.2)
    run_rollouts(loaded, lambda: NoisyOracleAgent(loaded, rates, seed=1), "train", 16, 0, work / "noisy.jsonl",
                 progress=False)
    pairs = work / "pairs.jsonl"
    with JsonlWriter(pairs) as writer:
        for pair in outcome_pairs(read_jsonl(work / "noisy.jsonl", Trajectory),
                                  expert=read_jsonl(work / "oracle.jsonl", Trajectory)):
            writer.write(pair)
    config = TrainConfig(max_steps=1, batch_size=4 * gpus, micro_batch_size=4, val_fraction=0.0)
    started = time.perf_counter()
    result = train_preferences_on_ray(model, pairs, work / "train", config, workers=gpus, cpus_per_worker=1,
                                      gpus_per_worker=1, max_failures=0, progress=False)
    return {"ok": result.complete and math.isfinite(result.final.get("loss", math.nan)),
            "loss": result.final.get("loss"), "seconds": time.perf_counter() - started}


def rollout_check(model: Path, args: argparse.Namespace) -> dict[str, Any]:
    from trajalign.agents.rollout import episode_plan
    from trajalign.envs import load_scenario
    from trajalign.ray_rollouts import AgentSpec, RolloutPool, WorkerSettings

    scenario = load_scenario(args.scenario)
    spec = AgentSpec(agent=str(model), batch_size=args.batch_size, dtype="bfloat16",
                     sampling={"temperature": 1.0, "max_new_tokens": args.max_new_tokens, "seed": 0})
    plan = episode_plan(scenario.tasks_in("train"), args.episodes, seed=0)
    with RolloutPool(scenario, spec, WorkerSettings(workers=1, cpus_per_worker=1, gpus_per_worker=1)) as pool:
        list(pool.play("train", plan[:2]))  # load the model on the GPU
        started = time.perf_counter()
        trajectories = list(pool.play("train", plan))
        seconds = time.perf_counter() - started
    steps = sum(len(t.rewards) for t in trajectories)
    tokens = sum(len(turn.token_ids or []) for t in trajectories for turn in t.turns if turn.role == "assistant")
    return {"ok": len(trajectories) == len(plan) and not any(t.status == "env_error" for t in trajectories),
            "episodes": len(trajectories), "env_steps": steps, "seconds": seconds, "steps_per_s": steps / seconds,
            "tokens_per_s": tokens / seconds}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {"devices": devices()}
    available = len(report["devices"]["gpus"])
    if not available:
        print("gpu_check: no CUDA GPU is visible here (torch.cuda.is_available() is False, torch "
              f"{report['devices']['torch']}, CUDA build {report['devices']['cuda_build']}); nothing was run. "
              "Run this on a GPU machine or node (check `nvidia-smi` and CUDA_VISIBLE_DEVICES).", file=sys.stderr)
        return 2
    gpus = args.gpus or available
    if gpus > available:
        print(f"gpu_check: --gpus {gpus} but {available} GPU(s) are visible here", file=sys.stderr)
        return 2
    import ray

    from trajalign.agents.tiny import build_tiny_model
    from trajalign.ray_cluster import init_ray

    init_ray()
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    model = build_tiny_model([args.scenario], work / "tiny", max_tasks_per_scenario=50)
    checks = (("ray_train_nccl_bf16", lambda: ray_train_check(model, gpus, work)),
              ("preference_trainer_on_gpus", lambda: trainer_check(model, gpus, work, args.scenario)),
              ("batched_rollout_bf16", lambda: rollout_check(model, args)))
    for name, check in checks:
        try:
            report[name] = check()
        except Exception as exc:  # noqa: BLE001 -- report every check, then fail
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    ray.shutdown()

    print("GPU check")
    print(f"  torch {report['devices']['torch']}, CUDA {report['devices']['cuda_build']}, "
          f"NCCL {report['devices'].get('nccl')}")
    for gpu in report["devices"]["gpus"]:
        print(f"  GPU {gpu['index']}: {gpu['name']}, {gpu['memory_gib']} GiB, bf16 {gpu['bf16']}")
    for name, _ in checks:
        result = report[name]
        details = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in result.items() if key != "ok")
        print(f"  {'ok  ' if result['ok'] else 'FAIL'} {name}: {details}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(report[name]["ok"] for name, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
