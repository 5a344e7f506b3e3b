"""Preference-pair training throughput: shared-prefix KV reuse vs one row per side, on the same pairs.

Each timed step is what the trainer does per optimizer step: per micro-batch, `pair_turn_logps`
(forward), the stepwise loss against stored reference log-probs, and backward. Both modes run in
the same process on the same pairs and model, alternating, and report the median over repeats.
Target (DESIGN.md §7): shared prefix >= 1.8x the plain pairs/s on agent pairs, which branch late.

Pairs are real branch pairs: oracle episodes of a built-in scenario and, from the same seeds, a
noisy oracle that calls a wrong tool at action k = (plan length − --branch-from-end) and then
finishes the plan. Prefix: the system prompt, the goal and the first k actions with their
observations (identical in both episodes); chosen: the oracle's rest; rejected: the noisy rest.

Memory: CPU torch has no peak-allocation counter, so the figure is the bytes autograd holds for
backward (activations saved by the forward, unique storages, parameters excluded), the largest over
the micro-batches: the part of training memory that the two modes change. On CUDA the peak
allocated memory of the step is reported too.

    python benchmarks/pair_throughput.py [--size small] [--pairs 8] [--micro-batch 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import markdown_table, write_results
from trajalign.agents import NoiseRates, NoisyOracleAgent, OracleAgent, run_rollouts
from trajalign.agents.chat import ChatFormat, scenario_system_prompt
from trajalign.agents.tiny import quiet_progress_bars, build_tiny_model
from trajalign.alignment import (
    LossConfig,
    PairTokens,
    PreferencePair,
    TurnLogps,
    pair_tokens,
    pair_turn_logps,
    preference_loss,
    reference_logps,
)
from trajalign.alignment.logprobs import pad_token_id
from trajalign.envs import Trajectory, load_scenario
from trajalign.envs.jsonl import read_jsonl
from trajalign.envs.scenario import Scenario
from transformers import AutoModelForCausalLM, AutoTokenizer

NO_NOISE = NoiseRates(wrong_tool=0, wrong_argument=0, premature_answer=0, repeated_call=0)


class LateMistakeAgent(NoisyOracleAgent):
    """The oracle, except that it calls a wrong tool at one late action and then resumes its plan."""

    name = "late_mistake"

    def __init__(self, scenario: Scenario, branch_from_end: int):
        super().__init__(scenario, NO_NOISE)
        self.branch_from_end = branch_from_end
        self._acted = 0

    def reset(self, observation: str, info: dict[str, Any], seed: int | None = None) -> None:
        super().reset(observation, info, seed)
        self._acted = 0

    def act(self, observation: str, info: dict[str, Any]):
        branch = max(1, len(self._plan) - self.branch_from_end)
        self.rates = NoiseRates(wrong_tool=1, wrong_argument=0, premature_answer=0, repeated_call=0) \
            if self._acted == branch else NO_NOISE
        self._acted += 1
        return super().act(observation, info)


def build_pairs(scenario: Scenario, count: int, branch_from_end: int, work: Path) -> list[PreferencePair]:
    """Late branch pairs from oracle and late-mistake episodes of the same tasks and seeds."""
    oracle_file, noisy_file = work / "oracle.jsonl", work / "noisy.jsonl"
    episodes = 2 * count
    run_rollouts(scenario, lambda: OracleAgent(scenario), "train", episodes, 0, oracle_file, progress=False)
    run_rollouts(scenario, lambda: LateMistakeAgent(scenario, branch_from_end), "train", episodes, 0, noisy_file,
                 progress=False)
    pairs = []
    for good, bad in zip(read_jsonl(oracle_file, Trajectory), read_jsonl(noisy_file, Trajectory)):
        split = next((i for i, (a, b) in enumerate(zip(good.turns, bad.turns)) if a.text != b.text), None)
        if split is None or good.turns[split].role != "assistant" or split < 2:
            continue
        pairs.append(PreferencePair(
            id=f"{good.task_id}/{good.seed}", scenario=scenario.name, task_id=good.task_id, prefix=good.turns[:split],
            chosen=good.turns[split:], rejected=bad.turns[split:], value_chosen=good.reward, value_rejected=bad.reward,
            branch_turn=sum(turn.role == "assistant" for turn in good.turns[:split]), source="outcome"))
        if len(pairs) == count:
            break
    if len(pairs) < count:
        print(f"only {len(pairs)} of {count} episodes branched as planned", file=sys.stderr)
    return pairs


def saved_bytes_counter(model: Any) -> tuple[Any, dict[str, int]]:
    """A saved_tensors_hooks context that adds up the unique non-parameter storages autograd keeps."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = {"bytes": 0}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total["bytes"] += storage.nbytes()
        return tensor

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), total


def train_step(model: Any, batches: list[list[PairTokens]], references: list[TurnLogps], pad_id: int,
               shared_prefix: bool, config: LossConfig) -> dict[str, float]:
    """One optimizer step's forward + backward over the micro-batches (gradients are discarded)."""
    model.zero_grad(set_to_none=True)
    total_pairs = sum(len(batch) for batch in batches)
    peak_saved = 0
    cuda = next(model.parameters()).is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    started = time.perf_counter()
    for batch, reference in zip(batches, references):
        hooks, saved = saved_bytes_counter(model)
        with hooks:
            logps = pair_turn_logps(model, batch, pad_id, shared_prefix=shared_prefix)
            loss, _ = preference_loss(config, logps, reference)
        (loss.sum() / total_pairs).backward()
        peak_saved = max(peak_saved, saved["bytes"])
    if cuda:
        torch.cuda.synchronize()
    result = {"seconds": time.perf_counter() - started, "saved_for_backward_mib": peak_saved / 2**20}
    if cuda:
        result["cuda_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="retail")
    parser.add_argument("--size", choices=["tiny", "small"], default="small", help="tiny model size (random weights)")
    parser.add_argument("--model", type=Path, help="a model directory to use instead of building one")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--branch-from-end", type=int, default=2, help="actions between the branch and the plan's end")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: steady timings on a busy machine)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="pair_throughput_"))
    scenario = load_scenario(args.scenario)
    # A plain-text system prompt (hundreds of tokens, as a pretrained model reads it): the long shared
    # prefix these timings are about, and the setting of the figures in docs/benchmarks.md.
    model_dir = args.model or build_tiny_model([scenario], work / "model", size=args.size, prompt_tokens=False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fmt = ChatFormat(tokenizer)
    with quiet_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(args.device)
    model.train()

    system = scenario_system_prompt(scenario)
    pairs = reference_logps(model, fmt, build_pairs(scenario, args.pairs, args.branch_from_end, work),
                            lambda name: system, batch_size=args.micro_batch, progress=False)
    tokens = [pair_tokens(fmt, pair, system) for pair in pairs]
    pad_id = pad_token_id(fmt)
    batches = [tokens[i:i + args.micro_batch] for i in range(0, len(tokens), args.micro_batch)]
    references = [TurnLogps.from_reference(pairs[i:i + args.micro_batch]).to(args.device)
                  for i in range(0, len(pairs), args.micro_batch)]
    config = LossConfig(algo="stepwise")

    # The two modes compute the same numbers; checked once before timing (also the warm-up).
    with torch.no_grad():
        shared, plain = (pair_turn_logps(model, batches[0], pad_id, shared_prefix=mode) for mode in (True, False))
    max_difference = max(float((shared.chosen - plain.chosen).abs().max()),
                         float((shared.rejected - plain.rejected).abs().max()))

    runs: dict[str, list[dict[str, float]]] = {"shared prefix": [], "plain": []}
    for repeat in range(args.repeats):
        modes = [("shared prefix", True), ("plain", False)]
        for name, mode in modes if repeat % 2 == 0 else reversed(modes):
            runs[name].append(train_step(model, batches, references, pad_id, mode, config))
            print(f"repeat {repeat + 1} {name}: {runs[name][-1]['seconds']:.2f}s", file=sys.stderr)

    prefix = [len(t.prefix) for t in tokens]
    chosen = [len(t.chosen) for t in tokens]
    rejected = [len(t.rejected) for t in tokens]
    fed = {"shared prefix": sum(p - 1 + 2 + c + r for p, c, r in zip(prefix, chosen, rejected)),
           "plain": sum(2 * p + c + r for p, c, r in zip(prefix, chosen, rejected))}
    results = []
    for name, measured in runs.items():
        seconds = statistics.median(run["seconds"] for run in measured)
        entry = {"mode": name, "pairs": len(pairs), "seconds_median": seconds,
                 "seconds_all": [run["seconds"] for run in measured], "pairs_per_s": len(pairs) / seconds,
                 "tokens_fed": fed[name], "saved_for_backward_mib": measured[0]["saved_for_backward_mib"]}
        if "cuda_peak_mib" in measured[0]:
            entry["cuda_peak_mib"] = max(run["cuda_peak_mib"] for run in measured)
        results.append(entry)
    speedup = results[0]["pairs_per_s"] / results[1]["pairs_per_s"]
    memory_ratio = results[0]["saved_for_backward_mib"] / results[1]["saved_for_backward_mib"]
    header = ["mode", "pairs", "median s/step", "pairs/s", "tokens fed", "saved for backward (MiB)"]
    rows = [[r["mode"], r["pairs"], f"{r['seconds_median']:.2f}", f"{r['pairs_per_s']:.2f}", r["tokens_fed"],
             f"{r['saved_for_backward_mib']:.0f}"] for r in results]
    if "cuda_peak_mib" in results[0]:
        header.append("CUDA peak (MiB)")
        for row, r in zip(rows, results):
            row.append(f"{r['cuda_peak_mib']:.0f}")
    table = markdown_table(header, rows) + (
        f"\n\nShared prefix: {speedup:.2f}x the pairs/s of the plain forward (target >= 1.8x), "
        f"{memory_ratio:.2f}x its saved-for-backward memory. "
        f"Tokens per pair: prefix {statistics.mean(prefix):.0f} (min {min(prefix)}, max {max(prefix)}), "
        f"chosen {statistics.mean(chosen):.0f}, rejected {statistics.mean(rejected):.0f}. "
        f"Model: {args.size if args.model is None else args.model}, {args.micro_batch} pairs per micro-batch, "
        f"{args.threads} thread(s), {args.device}, median of {args.repeats}.")
    print(table)
    payload = {
        "model": str(model_dir), "size": args.size if args.model is None else None, "scenario": args.scenario,
        "device": args.device, "threads": args.threads, "micro_batch": args.micro_batch, "repeats": args.repeats,
        "branch_from_end": args.branch_from_end, "loss": config.model_dump(),
        "tokens": {"prefix_mean": statistics.mean(prefix), "prefix_min": min(prefix), "prefix_max": max(prefix),
                   "chosen_mean": statistics.mean(chosen), "rejected_mean": statistics.mean(rejected),
                   "branch_turn_mean": statistics.mean(pair.branch_turn for pair in pairs)},
        "max_abs_logp_difference_between_modes": max_difference,
        "speedup": speedup, "saved_memory_ratio": memory_ratio, "results": results,
        "memory_note": "saved_for_backward_mib: unique non-parameter storages autograd holds for backward, "
                       "largest micro-batch; not process RSS",
    }
    print(f"results: {write_results('pair_throughput', payload, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
