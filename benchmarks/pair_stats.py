"""What the pairs of a `trajalign run` directory ask for, per seed: the figures docs/benchmarks.md
quotes about the end-to-end runs' rollouts, pairs and training.

For each seed directory (`<out>/seed-S` of `alignment_e2e.py`, or any `trajalign run` directory):

- rollouts: greedy-probe episodes and how many failed (with `rollouts.greedy_probe`), sampled
  episodes and their success rate;
- outcome pairs: how many, their branch turns k (the shared opening), and actions per side;
- under the reference (the SFT policy; log-probs stored with the pairs of the first outcome-pair
  training run): the median log-prob of each side's first action, how often the chosen first
  action is the likelier, and the mean log-prob of each whole side;
- branch pairs: how many, and their value gaps Q̂_w − Q̂_l;
- per training run: the final validation pair accuracy, and `rewards/chosen` / `rewards/rejected`
  averaged over the second half of the steps.

    python benchmarks/pair_stats.py runs/bench-align-copies-probe2 [--name pair_stats_probe]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from _common import markdown_table, write_results

from trajalign.alignment import PreferencePair
from trajalign.envs import Trajectory
from trajalign.envs.jsonl import read_jsonl


def seed_stats(run: Path) -> dict:
    stats: dict = {"run": str(run)}
    greedy_file = run / "rollouts-greedy.jsonl"
    if greedy_file.is_file():
        greedy = read_jsonl(greedy_file, Trajectory)
        stats["greedy_episodes"] = len(greedy)
        stats["greedy_failed"] = sum(not t.success for t in greedy)
    sampled = read_jsonl(run / "rollouts.jsonl", Trajectory)
    stats["sampled_episodes"] = len(sampled)
    stats["sampled_success"] = sum(t.success for t in sampled) / len(sampled) if sampled else None

    outcome_file = run / "pairs-outcome.jsonl"
    if outcome_file.is_file():
        pairs = read_jsonl(outcome_file, PreferencePair)
        stats["outcome_pairs"] = len(pairs)
        stats["outcome_branch_turns"] = dict(sorted(Counter(p.branch_turn for p in pairs).items()))
        stats["outcome_actions"] = {side: statistics.fmean(p.actions(side) for p in pairs)
                                    for side in ("chosen", "rejected")}
        stats["reference"] = _reference_stats(run)
    branch_file = run / "pairs-branch.jsonl"
    if branch_file.is_file():
        gaps = [p.value_chosen - p.value_rejected for p in read_jsonl(branch_file, PreferencePair)]
        stats["branch_pairs"] = len(gaps)
        stats["branch_value_gap"] = {"min": min(gaps), "mean": statistics.fmean(gaps)} if gaps else None

    stats["training"] = {}
    for train in sorted(run.glob("train-*")):
        result = json.loads((train / "result.json").read_text())
        steps = [m for m in map(json.loads, (train / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
        second_half = steps[len(steps) // 2:]
        stats["training"][train.name.removeprefix("train-")] = {
            "val_accuracy": (result.get("final_val") or {}).get("val_rewards/accuracies"),
            **{name: statistics.fmean(m[name] for m in second_half) for name in ("rewards/chosen", "rewards/rejected")},
        }
    return stats


def _reference_stats(run: Path) -> dict | None:
    """Reference log-probs of the outcome pairs, as the first outcome-pair training run stored them."""
    outcome_ids = {p.id for p in read_jsonl(run / "pairs-outcome.jsonl", PreferencePair)}
    for stored in sorted(run.glob("train-*/pairs.reference.jsonl")):
        pairs = [p for p in read_jsonl(stored, PreferencePair) if p.id in outcome_ids]
        if not pairs:
            continue
        first = {side: [getattr(p, f"ref_logps_{side}")[0] for p in pairs] for side in ("chosen", "rejected")}
        return {"pairs": len(pairs),
                "first_action_median": {side: statistics.median(values) for side, values in first.items()},
                "chosen_first_likelier": sum(c > r for c, r in zip(first["chosen"], first["rejected"])) / len(pairs),
                "side_mean": {side: statistics.fmean(sum(getattr(p, f"ref_logps_{side}")) for p in pairs)
                              for side in ("chosen", "rejected")}}
    return None


def _row(seed: str, s: dict) -> list:
    ref = s.get("reference") or {}
    median = ref.get("first_action_median", {})
    training = "; ".join(f"{name} {t['val_accuracy']:.2f}" for name, t in s["training"].items()
                         if t["val_accuracy"] is not None)
    return [seed,
            f"{s['greedy_failed']} / {s['greedy_episodes']}" if "greedy_episodes" in s else "",
            f"{s['sampled_episodes']} ({s['sampled_success']:.1%})" if s["sampled_success"] is not None else "0",
            s.get("outcome_pairs", ""),
            " ".join(f"{k}:{n}" for k, n in s.get("outcome_branch_turns", {}).items()),
            " / ".join(f"{v:.2f}" for v in median.values()),
            f"{ref['chosen_first_likelier']:.0%}" if ref else "",
            s.get("branch_pairs", ""),
            training]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="an alignment_e2e.py --out directory (seed-S inside) or one run")
    parser.add_argument("--name", default="pair_stats", help="result file name")
    args = parser.parse_args()
    runs = sorted(args.out.glob("seed-*")) or [args.out]
    missing = [run for run in runs if not (run / "rollouts.jsonl").is_file()]
    if missing:
        print(f"error: no rollouts.jsonl in {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    stats = {run.name: seed_stats(run) for run in runs}
    table = markdown_table(["seed", "greedy failed", "sampled (success)", "outcome pairs", "k: pairs",
                            "first action log-prob, chosen / rejected (median)", "chosen first likelier",
                            "branch pairs", "val pair accuracy"],
                           [_row(seed, s) for seed, s in stats.items()])
    print(table)
    print(f"results: {write_results(args.name, {'args': {'out': str(args.out)}, 'seeds': stats}, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
