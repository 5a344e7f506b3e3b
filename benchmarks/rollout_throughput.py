"""Batched LLM rollout throughput: env steps per second at batch 1, 4 and 8, in one run.

The same planned episodes are played at each batch size with the same model, so the rows differ
only in how many environments share a generation batch. A last row turns off KV-cache reuse
across turns at the largest batch, to show what reuse buys. Target: batch 8 >= 3x batch 1.

    python benchmarks/rollout_throughput.py [--model DIR] [--scenario retail] [--episodes 32]

Without --model, a tiny model is built with `trajalign model init` defaults (random weights).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import markdown_table, write_results

from trajalign.agents.llm import LLMPolicy, SamplingConfig
from trajalign.agents.llm_rollout import play_llm_episodes
from trajalign.agents.rollout import episode_plan
from trajalign.agents.tiny import build_tiny_model
from trajalign.envs import load_scenario


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: build a tiny one)")
    parser.add_argument("--scenario", default="retail")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    scenario = load_scenario(args.scenario)
    model = args.model or build_tiny_model([args.scenario], Path(tempfile.mkdtemp()) / "tiny")
    plan = episode_plan(scenario.tasks_in("train"), args.episodes, seed=0)
    sampling = SamplingConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens)

    runs = [(batch, True) for batch in args.batch_sizes] + [(max(args.batch_sizes), False)]
    results, rows = [], []
    list(play_llm_episodes(LLMPolicy.from_pretrained(model, sampling), scenario, "train", plan[:2], 2))  # warm up
    for batch, reuse in runs:
        policy = LLMPolicy.from_pretrained(model, sampling, reuse_cache=reuse)
        started = time.perf_counter()
        trajectories = list(play_llm_episodes(policy, scenario, "train", plan, batch))
        seconds = time.perf_counter() - started
        steps = sum(len(t.rewards) for t in trajectories)
        tokens = sum(len(turn.token_ids) for t in trajectories for turn in t.turns if turn.role == "assistant")
        results.append({"batch_size": batch, "kv_reuse": reuse, "episodes": len(trajectories), "env_steps": steps,
                        "generated_tokens": tokens, "seconds": round(seconds, 3), "steps_per_s": steps / seconds,
                        "tokens_per_s": tokens / seconds})
        print(f"batch {batch} reuse={reuse}: {steps / seconds:.1f} steps/s", file=sys.stderr)
    base = results[0]["steps_per_s"]
    for result in results:
        result["speedup_vs_batch_1"] = result["steps_per_s"] / base
        rows.append([result["batch_size"], "yes" if result["kv_reuse"] else "no", result["env_steps"],
                     result["generated_tokens"], f"{result['seconds']:.1f}", f"{result['steps_per_s']:.1f}",
                     f"{result['tokens_per_s']:.0f}", f"{result['speedup_vs_batch_1']:.2f}x"])
    table = markdown_table(["batch", "KV reuse", "env steps", "generated tokens", "seconds", "env steps/s",
                            "tokens/s", "vs batch 1"], rows)
    print(table)
    payload = {"model": str(model), "scenario": args.scenario, "max_new_tokens": args.max_new_tokens,
               "temperature": args.temperature, "threads": torch.get_num_threads(), "results": results}
    print(f"results: {write_results('rollout_throughput', payload, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
