"""The PPO row: RLlib PPO over admissible actions against the random agent, on a tool-use test split.

Trains `trajalign baseline ppo` (RLlib PPO, `CandidateScorer` policy, potential-based shaping) on
the train tasks, plays the test tasks greedily, and plays the random agent on the same test
episodes. Target: PPO's test success above the random agent's.

    python benchmarks/ppo_baseline.py [--scenario retail] [--iterations 40] [--episodes 120] [--out DIR]
    python benchmarks/ppo_baseline.py --from-run DIR   # tabulate a finished `trajalign baseline ppo` run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

from _common import markdown_table, write_results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="retail")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=120, help="test tasks")
    parser.add_argument("--out", type=Path, help="run directory (default: a temporary one)")
    parser.add_argument("--from-run", type=Path, help="only tabulate this finished run directory")
    parser.add_argument("--train-batch-size", type=int, help="env steps per PPO iteration (default: PPOSettings')")
    parser.add_argument("--check", action="store_true", help="exit 1 unless PPO beats the random agent")
    args = parser.parse_args()
    if args.from_run is None:
        from trajalign.baseline import PPOSettings, train_ppo_baseline
        from trajalign.ray_cluster import ray_session

        out = args.out or Path(tempfile.mkdtemp()) / "ppo"
        settings = PPOSettings(scenario=args.scenario, iterations=args.iterations, eval_episodes=args.episodes)
        if args.train_batch_size:  # a minibatch cannot be larger than the batch it splits
            settings = settings.model_copy(update={"train_batch_size": args.train_batch_size,
                                                   "minibatch_size": min(settings.minibatch_size, args.train_batch_size)})
        with ray_session():
            train_ppo_baseline(settings, out, progress=True)
    else:
        out = args.from_run
    result = json.loads((out / "result.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    test, settings = result["test"], result["settings"]
    scenario = Path(settings["scenario"]).parent.name if "/" in settings["scenario"] else settings["scenario"]
    rows = [["ppo (admissible actions)", f"{test['success_rate']:.3f}", f"{test['mean_turns']:.2f}", test["episodes"],
             ", ".join(f"{k} {v}" for k, v in test["status_counts"].items())],
            ["random", f"{result['random_test_success']:.3f}", "", test["episodes"], ""]]
    table = markdown_table(["agent", "test success", "mean turns", "episodes", "statuses"], rows)
    returns = [m["episode_return_mean"] for m in metrics if math.isfinite(m.get("episode_return_mean", math.nan))]
    idle = len(metrics) - len(returns)  # iterations whose sampling timed out (a loaded machine) learn nothing
    trend = (f"Training return (shaped) {returns[0]:.3f} -> {returns[-1]:.3f}" if returns
             else "No iteration sampled a finished episode")
    table += (f"\n\n{scenario}, test split. PPO: {result['iterations']} iterations, {result['env_steps']} env steps, "
              f"{result['seconds'] / 60:.0f} min on this machine; K = {settings['max_candidates']} candidates, "
              f"shaping {settings['shaping']}, lr {settings['learning_rate']}, batch {settings['train_batch_size']}. "
              f"{trend}"
              f"{f'; {idle} iterations sampled nothing (sampling timed out on a loaded machine)' if idle else ''}. "
              f"PPO beats random: {'yes' if test['success_rate'] > result['random_test_success'] else 'NO'}.")
    path = write_results(f"ppo_baseline_{scenario}", {"result": result, "training_returns": returns}, table)
    print(table)
    print(f"written: {path}")
    return 0 if test["success_rate"] > result["random_test_success"] or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
