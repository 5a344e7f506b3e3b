"""SFT a tiny from-scratch model on one tool-use domain, then evaluate it on the held-out test split.

Pipeline (the same steps as the CLI): `model init` on the scenario, oracle (or noisy-oracle)
rollouts of every train task, SFT within a wall-clock budget, greedy evaluation on test tasks.

    python benchmarks/sft_tool_use.py [--scenario retail] [--size tiny] [--minutes 9] [--lr 3e-3] [--task-count N]
        [--weight-decay 0.01] [--seed 0] [--swap-copies N] [--optimizer muon] [--muon-lr 0.02]

Results: benchmarks/results/sft_<scenario>_<size>_<layers>layer_<tasks>tasks_lr<lr>_<data>.json/.md, with
`_<minutes>min` appended when the budget is not the default 9 minutes, `_wd<decay>` when the weight
decay is not SFTConfig's default, `_batch<N>` for batches other than 8 and `_seed<N>` for a seed
other than 0, `_swap<N>` when the train data gets N name-swapped copies (`trajalign augment`), and
`_muon<lr>` for the Muon optimizer at that learning rate.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import yaml
from _common import markdown_table, write_results

from trajalign.agents import NoiseRates, NoisyOracleAgent, OracleAgent, run_rollouts
from trajalign.agents.augment import augment_file
from trajalign.agents.evaluate import eval_plan, summarize_eval
from trajalign.agents.llm import LLMPolicy, SamplingConfig
from trajalign.agents.llm_rollout import play_llm_episodes
from trajalign.agents.optim import OPTIMIZERS
from trajalign.agents.rollout import record_rollouts
from trajalign.agents.sft import SFTConfig, train_sft
from trajalign.agents.tiny import build_tiny_model, read_model_info
from trajalign.envs import Scenario, load_scenario


def with_task_count(scenario: Scenario, count: int, root: Path, seed: int | None = None) -> Path:
    """A copy of a generator-based scenario folder that generates `count` tasks (from another `seed`: other
    instances; tasks keep their groups' splits, which hash the group)."""
    copy = root / (f"{scenario.name}-{count}" + (f"-seed{seed}" if seed is not None else ""))
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(scenario.path, copy, ignore=shutil.ignore_patterns("__pycache__"))
    spec = yaml.safe_load((copy / "scenario.yaml").read_text())
    if not isinstance(spec.get("tasks"), dict):
        raise SystemExit(f"--task-count needs a scenario whose tasks come from a generator; {scenario.name}'s do not")
    spec["tasks"]["count"] = count
    if seed is not None:
        spec["tasks"]["seed"] = seed
    (copy / "scenario.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="retail")
    parser.add_argument("--size", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--minutes", type=float, default=9.0, help="SFT wall-clock budget")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--epochs", type=int, default=7,
                        help="sized so the learning-rate schedule ends within the budget")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--weight-decay", type=float, default=SFTConfig().weight_decay)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw",
                        help="muon: Muon on the hidden matrices at --muon-lr, AdamW at --lr on the rest")
    parser.add_argument("--muon-lr", type=float, default=SFTConfig().muon_learning_rate)
    parser.add_argument("--seed", type=int, default=0, help="the model's initial weights and the SFT data order")
    parser.add_argument("--data", choices=["oracle", "noisy"], default="oracle")
    parser.add_argument("--eval-episodes", type=int, default=1000, help="test tasks to evaluate (capped at the split)")
    parser.add_argument("--task-count", type=int, help="regenerate the scenario with this many tasks (more train data)")
    parser.add_argument("--swap-copies", type=int, default=0,
                        help="add N copies of each train trajectory with the scenario's names swapped (name_swaps)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-sft"))
    args = parser.parse_args()
    if args.swap_copies < 0:
        parser.error(f"--swap-copies must be 0 or more, got {args.swap_copies}")

    scenario_path = args.scenario
    if args.task_count:
        scenario_path = with_task_count(load_scenario(args.scenario), args.task_count, args.out / "scenarios")
    scenario = load_scenario(scenario_path)
    out = args.out / f"{scenario.name}-{args.size}-{args.data}"
    timings = {}

    started = time.perf_counter()
    model_dir = build_tiny_model([scenario], out / "init", size=args.size, seed=args.seed,
                                 name_swap_tokens=bool(args.swap_copies))
    timings["model_init_s"] = time.perf_counter() - started

    started = time.perf_counter()
    data = out / "train.jsonl"
    train_tasks = len(scenario.tasks_in("train"))
    make_agent = (lambda: OracleAgent(scenario)) if args.data == "oracle" else (
        lambda: NoisyOracleAgent(scenario, NoiseRates(), seed=0))
    run_rollouts(scenario, make_agent, "train", train_tasks, seed=0, out=data, progress=False)
    timings["rollouts_s"] = time.perf_counter() - started
    if args.swap_copies:
        if scenario.name_swaps is None:
            raise SystemExit(f"--swap-copies needs name_swaps in {scenario.name}'s scenario.yaml")
        started = time.perf_counter()
        augmented = out / f"train_swap{args.swap_copies}.jsonl"
        augment_file(data, augmented, scenario.name_swaps, args.swap_copies, seed=args.seed)
        data = augmented
        timings["augment_s"] = time.perf_counter() - started

    # The validation slice grows with the copies; validating less often keeps its share of the budget.
    config = SFTConfig(learning_rate=args.lr, epochs=args.epochs, batch_size=args.batch_size, micro_batch_size=4,
                       weight_decay=args.weight_decay, optimizer=args.optimizer, muon_learning_rate=args.muon_lr,
                       seed=args.seed, max_seconds=args.minutes * 60,
                       eval_every=100 * (1 + args.swap_copies), save_every=200)
    sft = train_sft(model_dir, [data], out / "sft", config, scenario_paths={scenario.name: scenario_path},
                    progress=True)
    timings["sft_s"] = sft.seconds

    started = time.perf_counter()
    policy = LLMPolicy.from_pretrained(sft.model_path, SamplingConfig(temperature=0.0, max_new_tokens=96))
    plan = eval_plan(scenario.tasks_in("test"), args.eval_episodes, samples=1, seed=0)
    summary, trajectories = record_rollouts(scenario, "test", plan, out / "eval.jsonl", policy.name,
                                            lambda todo: play_llm_episodes(policy, scenario, "test", todo, 8),
                                            progress=True)
    result = summarize_eval(summary, trajectories, samples=1)
    timings["eval_s"] = time.perf_counter() - started

    row = [scenario.name, args.size, args.data, sft.steps, f"{sft.seconds / 60:.1f}", f"{sft.final_val_loss:.3f}",
           result.episodes, f"{result.success_rate:.1%}", f"{result.mean_reward:.3f}",
           ", ".join(f"{k} {v}" for k, v in result.status_counts.items())]
    table = markdown_table(["scenario", "size", "data", "SFT steps", "SFT minutes", "val loss", "test episodes",
                            "test success", "mean reward", "statuses"], [row])
    print(table)
    layers = read_model_info(model_dir)["layers"]
    payload = {"model": read_model_info(model_dir), "args": {k: str(v) for k, v in vars(args).items()},
               "timings": timings, "sft": sft.model_dump(mode="json"), "eval": result.model_dump(mode="json")}
    # Settings at their defaults keep the names of earlier result files.
    budget = "" if args.minutes == 9.0 else f"_{args.minutes:g}min"
    decay = "" if args.weight_decay == SFTConfig().weight_decay else f"_wd{args.weight_decay:g}"
    batch = "" if args.batch_size == 8 else f"_batch{args.batch_size}"
    seed = f"_seed{args.seed}" if args.seed else ""
    swap = f"_swap{args.swap_copies}" if args.swap_copies else ""
    muon = "" if args.optimizer == "adamw" else f"_muon{args.muon_lr:g}"
    name = (f"sft_{scenario.name}_{args.size}_{layers}layer_{len(scenario.tasks)}tasks_lr{args.lr:g}_{args.data}"
            f"{budget}{decay}{batch}{seed}{swap}{muon}")
    print(f"results: {write_results(name, payload, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
