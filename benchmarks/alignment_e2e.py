"""Preference training end to end: does dpo, dmpo or stepwise raise held-out success over SFT?

One SFT policy (a tiny from-scratch model fine-tuned on noisy-oracle successes, as in
`sft_tool_use.py`) is the start of every run. For each seed, `trajalign run` samples the SFT
policy on train tasks, builds outcome pairs (oracle against failed rollouts, for dpo and dmpo) and
branch pairs (per-state Monte-Carlo credit, for stepwise), trains each algorithm from the SFT
policy, and evaluates every model greedily on the test split. The table reports mean ± std over
seeds of test success and mean reward.

    python benchmarks/alignment_e2e.py [--scenario filesystem] [--task-count 3000] [--seeds 0 1 2] [--jobs 3]
        [--sft-model DIR] [--algorithms dpo dmpo stepwise] [--rollout-tasks 600] [--eval-episodes 300] [--alpha A]
        [--no-expert] [--anchor start] [--swap-names] [--fresh-instances] [--greedy-probe]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from _common import markdown_table, write_results
from sft_tool_use import with_task_count

from trajalign.alignment.builders import ANCHORS
from trajalign.envs import load_scenario
from trajalign.pipeline import PipelineResult, RunConfig, run_pipeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="filesystem")
    parser.add_argument("--task-count", type=int, default=3000, help="regenerate the scenario with this many tasks")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algorithms", nargs="+", default=["dpo", "dmpo", "stepwise"],
                        help="algorithm names, or ALGO:PAIRS to choose its pairs (stepwise:both also trains on "
                        "the outcome pairs)")
    parser.add_argument("--sft-model", type=Path, help="start from this SFT model instead of training one")
    parser.add_argument("--sft-minutes", type=float, default=9.0)
    parser.add_argument("--rollout-tasks", type=int, default=600, help="train tasks the SFT policy is sampled on")
    parser.add_argument("--samples-per-task", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature of the rollouts and branch continuations (evaluation is greedy)")
    parser.add_argument("--branch-trajectories", type=int, default=500)
    parser.add_argument("--branch-samples", type=int, default=4)
    parser.add_argument("--states-per-trajectory", type=int, default=3)
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-4, help="as in `trajalign run`'s defaults")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--gamma", type=float, default=0.9,
                        help="dmpo and stepwise discount: small values put the weight on the first actions after the "
                        "branch state")
    parser.add_argument("--alpha", type=float, default=0.0, help="weight of the SFT term on the chosen actions")
    parser.add_argument("--no-expert", action="store_true",
                        help="outcome pairs take only the policy's own successes as chosen, never the oracle")
    parser.add_argument("--anchor", choices=ANCHORS, default="divergence",
                        help="outcome pairs: branch where the two episodes first differ, or at the goal (pairs.anchor)")
    parser.add_argument("--swap-names", action="store_true",
                        help="explore on the train tasks with their names swapped for fresh ones (rollouts.swap_names)")
    parser.add_argument("--fresh-instances", action="store_true",
                        help="explore on fresh instances of the train groups, which the SFT policy never saw: the "
                        "scenario's generator run with seed 1000 + the run's seed (rollouts.fresh_seed)")
    parser.add_argument("--greedy-probe", action="store_true",
                        help="play each task greedily first and sample only the tasks that failed; outcome pairs "
                        "reject the greedy failures (rollouts.greedy_probe)")
    parser.add_argument("--eval-episodes", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel (as separate processes)")
    parser.add_argument("--name", help="result file name (in benchmarks/results); default: from the settings")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-align"))
    args = parser.parse_args()

    scenario_path = str(with_task_count(load_scenario(args.scenario), args.task_count, args.out / "scenarios")
                        if args.task_count else args.scenario)
    sft_model = args.sft_model
    if sft_model is None:  # SFT once; every seed starts from it
        sft_run = RunConfig.model_validate({
            "out": args.out / "sft", "scenario": scenario_path, "train": {"algorithms": []},
            "sft": {"data": "noisy", "config": {"learning_rate": 5e-3, "epochs": 8,
                                                "max_seconds": args.sft_minutes * 60, "eval_every": 100,
                                                "save_every": 200}},
            "eval": {"episodes": args.eval_episodes}})
        run_pipeline(sft_run)
        sft_model = args.out / "sft" / "sft" / "model"

    configs = []
    for seed in args.seeds:
        config = RunConfig.model_validate({
            "out": args.out / f"seed-{seed}", "scenario": scenario_path, "seed": seed,
            "model": {"path": sft_model}, "sft": {"enabled": False},
            "rollouts": {"tasks": args.rollout_tasks, "samples_per_task": args.samples_per_task,
                         "temperature": args.temperature, "greedy_probe": args.greedy_probe,
                         "swap_names": args.swap_names, "fresh_seed": 1000 + seed if args.fresh_instances else None},
            "pairs": {"branch_trajectories": args.branch_trajectories, "branch_samples": args.branch_samples,
                      "states_per_trajectory": args.states_per_trajectory, "tau": args.tau,
                      "expert": not args.no_expert, "anchor": args.anchor},
            "train": {"algorithms": [algorithm_settings(name, args.beta, args.alpha, args.gamma)
                                     for name in args.algorithms],
                      "config": {"epochs": args.epochs, "learning_rate": args.lr, "max_seconds": None}},
            "eval": {"episodes": args.eval_episodes}})
        configs.append(config)
    results = run_seeds(configs, args.jobs)

    names = [row.name for row in results[0].rows]
    sft_runs = [next(row for row in result.rows if row.name == "sft") for result in results]
    table_rows = []
    for name in names:
        runs = [next(row for row in result.rows if row.name == name) for result in results]
        success = [row.success_rate for row in runs]
        reward = [row.mean_reward for row in runs]
        pairs = [row.pairs for row in runs if row.pairs is not None]
        # Successes over all seeds' test episodes: rates that round alike can differ by a task or two.
        successes = sum(round(row.success_rate * row.episodes) for row in runs)
        above_sft = sum(row.success_rate > base.success_rate for row, base in zip(runs, sft_runs))
        table_rows.append([name, _mean_std(success, percent=True), _mean_std(reward), runs[0].episodes,
                           f"{successes:,}", "" if name == "sft" else f"{above_sft} of {len(runs)}",
                           " / ".join(map(str, pairs)) if pairs else "", " / ".join(f"{s:.1%}" for s in success)])
    table = markdown_table(["model", "test success", "mean reward", "test episodes", "successes, all seeds",
                            "seeds above sft", "train pairs per seed", "success per seed"], table_rows)
    print(table)
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "sft_model": str(sft_model),
               "runs": [result.model_dump(mode="json") for result in results]}
    # Settings at their defaults keep the names of earlier result files.
    name = f"alignment_e2e_{load_scenario(scenario_path).name}_{len(args.seeds)}seeds"
    name += f"_alpha{args.alpha:g}" if args.alpha else ""
    name += "_onpolicy" if args.no_expert else ""
    name += "_anchorstart" if args.anchor == "start" else ""
    name += "_fresh" if args.fresh_instances else ""
    name += "_greedyprobe" if args.greedy_probe else ""
    name += f"_n{args.branch_samples}" if args.branch_samples != 4 else ""
    name += "_swapnames" if args.swap_names else ""
    name += f"_lr{args.lr:g}" if args.lr != 2e-4 else ""
    name += f"_{args.epochs}ep" if args.epochs != 2 else ""
    name += f"_gamma{args.gamma:g}" if args.gamma != 0.9 else ""
    name += f"_temp{args.temperature:g}" if args.temperature != 1.0 else ""
    print(f"results: {write_results(args.name or name, payload, table)}")
    return 0


def algorithm_settings(name: str, beta: float, alpha: float, gamma: float) -> dict:
    """`dpo` or `stepwise:both` as the pipeline's algorithm settings."""
    algo, _, pairs = name.partition(":")
    loss = {"beta": beta, "alpha": alpha, "gamma": gamma}
    return {"algo": algo, "loss": loss, **({"pairs": pairs} if pairs else {})}


def run_seeds(configs: list[RunConfig], jobs: int) -> list[PipelineResult]:
    """Each seed's pipeline, `jobs` at a time as `trajalign run` processes (one at a time: in this process)."""
    if jobs <= 1:
        return [run_pipeline(config) for config in configs]
    pending, running = list(configs), []
    while pending or running:
        while pending and len(running) < jobs:
            config = pending.pop(0)
            config.out.mkdir(parents=True, exist_ok=True)
            path = config.out / "pipeline.yaml"
            path.write_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
            log = open(config.out / "pipeline.log", "a")  # a rerun that reuses stages keeps the first run's log
            running.append((subprocess.Popen([sys.executable, "-m", "trajalign", "run", "--config", str(path),
                                              "--no-progress"], stdout=log, stderr=subprocess.STDOUT), config))
        for process, config in list(running):
            if process.poll() is not None:
                running.remove((process, config))
                if process.returncode != 0:
                    raise SystemExit(f"seed {config.seed} failed; see {config.out / 'pipeline.log'}")
        time.sleep(1)
    return [PipelineResult.model_validate_json((config.out / "results.json").read_text()) for config in configs]


def _mean_std(values: list[float], percent: bool = False) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1%} ± {std:.1%}" if percent else f"{mean:.3f} ± {std:.3f}"


if __name__ == "__main__":
    sys.exit(main())
