"""Length bias: dpo, dmpo and stepwise as the rejected trajectory grows (the DMPO paper's length figure).

DESIGN.md §6: with a per-state partition term, dpo's trajectory margin moves by βc(T_w − T_l), so
the longer the rejected side, the more dpo can lower its loss by pushing every action down instead
of fixing the decisive one; per DESIGN.md, dmpo's φ weights and stepwise's per-state anchoring
remove that term. This script measures it on controlled pairs where only the rejected side's
length changes.

The pairs (built-in `filesystem` scenario, every observation from the real environment):

- Tasks: those whose oracle plan has a state-changing action (rename, move, delete, edit, make_dir)
  after at least one look-up. That action's state, after k oracle actions, is the divergence state.
- Shared prefix: the system prompt, the goal, the oracle's first k actions and their observations.
- Chosen: the oracle's rest from the divergence state (the correct action, then the final answer;
  make_dir tasks also move the file): a success.
- Rejected: the same tool on a wrong file (another path the prefix's observations show, drawn per
  task with a fixed seed): a plausible mistake that fails the task. Then L extra turns in which the
  agent loops, re-issuing the prefix's look-ups (find_files, search_text, read_file) in turn and
  getting their observations, as a failing agent does until the step limit. The rejected side has
  1 + L actions; everything else is the same for every L.
- Anchoring: dpo and dmpo train on whole-trajectory pairs (branching after the goal, k = 0, as
  `outcome_pairs` makes them); stepwise trains on the same pairs anchored at the divergence state
  (as `branch_pairs` makes them, values 1 and 0), with the stepwise (dmpo-weighted) loss.

Each (L, algorithm) cell starts from the same policy, with the same seed, steps and settings, and
trains with the project's trainer (`train_preferences`). The policy is a tiny model built offline
and briefly SFT'd on the oracle's train-split episodes (`--sft-steps`; 0 trains from the random
init), or `--model DIR`. Measured on held-out pairs of test-split tasks (never trained on):

- p(correct action), per token: exp(log πθ(a_k | h_k) / |a_k|), the geometric mean of the
  probabilities of the correct action's |a_k| tokens (its stop token included) at the divergence
  state, averaged over held-out pairs. The table also has the whole action's probability
  exp(log πθ(a_k | h_k)), the same average; for a weak policy and ~40-token actions it is near 0.
  And "correct > wrong": the fraction of held-out pairs where the correct action is more likely
  than the mistake at the divergence state.
- Δ log-lik (chosen): Σ_t [log πθ(a_t | h_t) − log π_ref(a_t | h_t)] over every action of the
  held-out chosen trajectory (the look-ups, the correct action, the final answer), in nats,
  averaged over held-out pairs. π_ref is the starting policy. The JSON splits it: the look-ups'
  part (`delta_loglik_chosen_lookups`, the actions the rejected side's loop repeats) and the
  correct action's (`delta_logp_correct`).

Settings shared by every cell: β = 0.1, γ = 0.9, learning rate 5e-4 (cosine, 10% warmup), seed 0,
one pair per forward. Sizes (`MODES`): full 32 train pairs, 14 steps of 4 pairs, SFT 200 steps;
--quick 8 pairs, 5 steps of 2, SFT 60 steps; --smoke 4 pairs, 2 steps of 2, random init, L in {0, 2}.

At L = 40 a rejected side is about 2,800 tokens after a 575-token prefix, more than the tiny
model's 2,048 positions, so the policy's config allows `--max-positions` (default 4,096; Llama's
rotary positions are computed, not learned). Tasks whose longest pair does not fit are not used
(for any L). Results and a diagnosis: docs/benchmarks.md, "Length bias".

    python benchmarks/length_bias.py [--quick | --smoke] [--lengths 0 5 10 20 40] [--algos dpo dmpo stepwise]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, markdown_table, write_results
from trajalign.agents import OracleAgent, run_rollouts
from trajalign.agents.chat import ChatFormat, scenario_system_prompt
from trajalign.agents.sft import SFTConfig, train_sft
from trajalign.agents.tiny import build_tiny_model, quiet_progress_bars
from trajalign.alignment import LossConfig, PreferencePair, TurnLogps, pair_tokens, pair_turn_logps, reference_logps
from trajalign.alignment.logprobs import pad_token_id
from trajalign.alignment.trainer import TrainConfig, train_preferences
from trajalign.envs import Scenario, Task, ToolCall, Turn, load_scenario, make_env
from trajalign.envs.jsonl import JsonlWriter
from transformers import AutoModelForCausalLM, AutoTokenizer

LOOKUP_TOOLS = ("list_dir", "find_files", "search_text", "read_file")
DECISIVE_TOOLS = ("make_dir", "move_file", "rename_file", "replace_in_file", "delete_file")
PATH = re.compile(r"/home/user/[\w./-]*\w")

# Sizes per mode. The cost is the rejected side's attention: a pass over an L = 40 pair costs about 13x one over
# an L = 0 pair, so the sizes are set by the L = 40 cells.
MODES: dict[str, dict[str, Any]] = {
    "full": {"pairs": 32, "eval_pairs": 24, "steps": 14, "batch_size": 4, "sft_steps": 200, "tokenizer_tasks": None,
             "lengths": [0, 5, 10, 20, 40]},
    "quick": {"pairs": 8, "eval_pairs": 12, "steps": 5, "batch_size": 2, "sft_steps": 60, "tokenizer_tasks": None,
              "lengths": [0, 5, 10, 20, 40]},
    "smoke": {"pairs": 4, "eval_pairs": 4, "steps": 2, "batch_size": 2, "sft_steps": 0, "tokenizer_tasks": 40,
              "lengths": [0, 2]},
}


# ---- the pairs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scaffold:
    """Everything of one task's pair except L, so every L shares the prefix, the chosen side and the mistake."""

    task: Task
    lookups: list[ToolCall]  # the oracle's actions before the divergence state (k of them)
    correct: list[ToolCall]  # the oracle's rest, from the correct action to the final answer
    wrong: ToolCall  # the mistake at the divergence state
    loop: list[ToolCall]  # the look-ups a looping agent re-issues, in turn

    @property
    def k(self) -> int:
        return len(self.lookups)


def scaffold(env: Any, task: Task, seed: int) -> Scaffold | None:
    """The task's scaffold, or None if its plan has no decisive action after a look-up, or no wrong file to pick."""
    plan = list(task.oracle)
    k = next((i for i, call in enumerate(plan) if call.name in DECISIVE_TOOLS), 0)
    loop = [call for call in plan[:k] if call.name in LOOKUP_TOOLS]
    if not loop:
        return None
    seen = " ".join(turn.text for turn in play(env, task, plan[:k])[2::2])
    target = plan[k].arguments.get("path")
    others = sorted(set(PATH.findall(seen)) - {target})
    if not others:
        return None
    # A seeded pick (not the first path) so the mistake is not always the alphabetically first file.
    wrong_path = random.Random(f"{seed}/{task.id}").choice(others)
    wrong = ToolCall(name=plan[k].name, arguments={**plan[k].arguments, "path": wrong_path})
    return Scaffold(task, plan[:k], plan[k:], wrong, loop)


def play(env: Any, task: Task, calls: list[ToolCall]) -> list[Turn]:
    """[goal, action, observation, action, observation, ...] of `calls` played from the task's start."""
    goal, info = env.reset(options={"task_id": task.id})
    turns = [Turn(role=info.get("observation_role", "user"), text=goal)]
    for call in calls:
        observation, _, _, _, info = env.step(call.to_text())
        turns += [Turn(role="assistant", text=call.to_text(), trainable=True),
                  Turn(role=info.get("observation_role", "tool"), text=observation)]
    return turns


def build_pair(env: Any, system: Turn, item: Scaffold, extra: int, at_divergence: bool) -> PreferencePair:
    """The pair of `item` with `extra` looping turns on the rejected side, anchored after the goal or at s_k."""
    rejected_calls = [*item.lookups, item.wrong, *(item.loop[i % len(item.loop)] for i in range(extra))]
    chosen = play(env, item.task, [*item.lookups, *item.correct])
    rejected = play(env, item.task, rejected_calls)
    split = 1 + 2 * item.k if at_divergence else 1  # turns of the shared prefix after the system prompt
    if chosen[:split] != rejected[:split]:
        raise RuntimeError(f"task {item.task.id}: the environment is not deterministic; the prefixes differ")
    return PreferencePair(
        id=f"{item.task.id}/L{extra}", scenario=env.unwrapped.scenario.name, task_id=item.task.id,
        prefix=[system, *chosen[:split]], chosen=chosen[split:], rejected=rejected[split:],
        branch_turn=item.k if at_divergence else 0, value_chosen=1.0, value_rejected=0.0,
        source="branch_mc" if at_divergence else "outcome", metadata={"extra_turns": extra, "divergence": item.k})


def pair_length(fmt: ChatFormat, pair: PreferencePair) -> int:
    tokens = pair_tokens(fmt, pair, "")
    return len(tokens.prefix) + max(len(tokens.chosen), len(tokens.rejected))


def select_scaffolds(scenario: Scenario, split: str, count: int, longest: int, fmt: ChatFormat, system: Turn,
                     max_positions: int, seed: int) -> list[Scaffold]:
    """The first `count` tasks of `split` with a scaffold whose longest pair (L = `longest`) fits the model."""
    env = make_env(scenario, split, max_turns=10_000, max_invalid_actions=10_000)  # loops run past the limits
    chosen: list[Scaffold] = []
    try:
        for task in scenario.tasks_in(split):
            item = scaffold(env, task, seed)
            if item and pair_length(fmt, build_pair(env, system, item, longest, False)) <= max_positions:
                chosen.append(item)
            if len(chosen) == count:
                break
    finally:
        env.close()
    if len(chosen) < count:
        print(f"only {len(chosen)} of {count} {split} tasks fit L = {longest} in {max_positions} positions",
              file=sys.stderr)
    return chosen


def pairs_for(scenario: Scenario, split: str, system: Turn, items: list[Scaffold], extra: int,
              at_divergence: bool) -> list[PreferencePair]:
    env = make_env(scenario, split, max_turns=10_000, max_invalid_actions=10_000)
    try:
        return [build_pair(env, system, item, extra, at_divergence) for item in items]
    finally:
        env.close()


def with_sliced_reference(branched: list[PreferencePair], whole: list[PreferencePair]) -> list[PreferencePair]:
    """The divergence-anchored pairs with the reference log-probs of their whole-trajectory twins' actions from k on.

    An action's log-prob depends only on the tokens before it, which are the same in both anchorings,
    so this equals computing them again (to float rounding) at half the cost.
    """
    return [pair.model_copy(update={"ref_logps_chosen": twin.ref_logps_chosen[pair.branch_turn:],
                                    "ref_logps_rejected": twin.ref_logps_rejected[pair.branch_turn:]})
            for pair, twin in zip(branched, whole, strict=True)]


def check_sliced_reference(model: Any, fmt: ChatFormat, pair: PreferencePair) -> None:
    """Recompute one sliced pair's reference log-probs; refuse to go on if slicing is not what it claims."""
    direct = reference_logps(model, fmt, [pair.model_copy(update={"ref_logps_chosen": None,
                                                                  "ref_logps_rejected": None})], lambda _: "",
                             progress=False)[0]
    for side in ("chosen", "rejected"):
        sliced, computed = getattr(pair, f"ref_logps_{side}"), getattr(direct, f"ref_logps_{side}")
        gap = max(abs(a - b) for a, b in zip(sliced, computed, strict=True))
        if gap > 1e-3:
            raise RuntimeError(f"pair {pair.id}: sliced reference log-probs of the {side} side differ by {gap:.2g}")


def write_pairs(path: Path, pairs: list[PreferencePair]) -> Path:
    path.unlink(missing_ok=True)
    with JsonlWriter(path) as writer:
        for pair in pairs:
            writer.write(pair)
    return path


# ---- the policy ----------------------------------------------------------------------------------


def starting_policy(scenario: Scenario, work: Path, sft_steps: int, tokenizer_tasks: int | None,
                    max_positions: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """A tiny model built offline, SFT'd for `sft_steps` on the oracle's train episodes; positions widened."""
    started = time.perf_counter()
    model_dir = build_tiny_model([scenario], work / "init", seed=seed, max_tasks_per_scenario=tokenizer_tasks)
    info: dict[str, Any] = {"built_s": time.perf_counter() - started, "sft_steps": sft_steps}
    if sft_steps:
        data = work / "oracle_train.jsonl"
        data.unlink(missing_ok=True)
        run_rollouts(scenario, lambda: OracleAgent(scenario), "train", len(scenario.tasks_in("train")), seed, data,
                     progress=False)
        config = SFTConfig(learning_rate=5e-3, max_steps=sft_steps, batch_size=8, micro_batch_size=4, seed=seed,
                           eval_every=sft_steps, save_every=sft_steps, device="cpu")
        result = train_sft(model_dir, [data], work / "sft", config, progress=False)
        model_dir = Path(result.model_path)
        info.update(sft_s=result.seconds, sft_val_loss=result.final_val_loss,
                    sft_val_token_accuracy=result.final_val_token_accuracy)
    widen_positions(model_dir, max_positions)
    return model_dir, info


def widen_positions(model_dir: Path, max_positions: int) -> None:
    """Let the model take `max_positions` tokens: rotary positions are computed, not learned, so only the config says 2048."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    if config.get("model_type") != "llama":
        raise SystemExit(f"--max-positions needs a Llama model (rotary positions); {model_dir} is {config.get('model_type')}")
    config["max_position_embeddings"] = max(max_positions, config["max_position_embeddings"])
    path.write_text(json.dumps(config, indent=2) + "\n")


def load_model(model_dir: Path) -> Any:
    with quiet_progress_bars():
        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()


# ---- the measurements ----------------------------------------------------------------------------


@torch.no_grad()
def chosen_action_logps(model: Any, fmt: ChatFormat, pairs: list[PreferencePair]) -> tuple[TurnLogps, list[int]]:
    """Per-action log-probs of the held-out pairs (whole trajectories) and, per pair, the divergence index k."""
    tokens = [pair_tokens(fmt, pair, "") for pair in pairs]
    logps = pair_turn_logps(model, tokens, pad_token_id(fmt))
    return logps, [pair.metadata["divergence"] for pair in pairs]


def measure(model: Any, fmt: ChatFormat, held_out: list[PreferencePair], reference: TurnLogps) -> dict[str, float]:
    """The held-out metrics of the module docstring, against the starting policy's log-probs `reference`."""
    policy, divergence = chosen_action_logps(model, fmt, held_out)
    rows = range(len(held_out))
    correct = [float(policy.chosen[i, divergence[i]]) for i in rows]
    wrong = [float(policy.rejected[i, divergence[i]]) for i in rows]
    tokens = [float(policy.chosen_tokens[i, divergence[i]]) for i in rows]
    delta = torch.where(policy.chosen_mask, policy.chosen - reference.chosen, 0.0)
    lookups = [float(delta[i, :divergence[i]].sum()) for i in rows]  # the prefix's look-ups, which the loop repeats
    return {
        "p_correct_per_token": statistics.fmean(math.exp(value / n) for value, n in zip(correct, tokens)),
        "p_correct": statistics.fmean(math.exp(value) for value in correct),
        "logp_correct": statistics.fmean(correct),
        "delta_logp_correct": statistics.fmean(correct[i] - float(reference.chosen[i, divergence[i]]) for i in rows),
        "delta_loglik_chosen": float(delta.sum(-1).mean()),
        "delta_loglik_chosen_lookups": statistics.fmean(lookups),
        "correct_over_wrong": statistics.fmean(float(c > w) for c, w in zip(correct, wrong)),
    }


# ---- one cell ------------------------------------------------------------------------------------


def train_cell(model_dir: Path, pairs_file: Path, out: Path, algo: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one (L, algorithm) cell with the project's trainer; its result's fields that matter here."""
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: the trainer would otherwise report 'already_complete'
    config = TrainConfig(
        loss=LossConfig(algo=algo, beta=args.beta, gamma=args.gamma), learning_rate=args.lr, max_steps=args.steps,
        batch_size=args.batch_size, micro_batch_size=args.micro_batch, val_fraction=0.0, eval_every=args.steps,
        save_every=args.steps, seed=args.seed, device="cpu")
    result = train_preferences(model_dir, pairs_file, out, config, progress=False)
    return {"train_seconds": result.seconds, "steps": result.steps, "final_loss": result.final["loss"],
            "final_margin": result.final["rewards/margins"], "final_accuracy": result.final["rewards/accuracies"],
            "model": result.model_path}


# ---- output --------------------------------------------------------------------------------------


def plot(cells: list[dict[str, Any]], start: dict[str, float], algos: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), dpi=110)
    FigureCanvasAgg(figure)
    panels = [("p_correct_per_token", "p(correct action) per token, at the divergence state"),
              ("delta_loglik_chosen", "Δ log-likelihood of the chosen trajectory (nats)")]
    for index, (key, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 2, index)
        for algo in algos:
            mine = sorted((cell["L"], cell[key]) for cell in cells if cell["algo"] == algo)
            axes.plot([x for x, _ in mine], [y for _, y in mine], marker="o", label=algo)
        axes.axhline(start[key] if key == "p_correct_per_token" else 0.0, color="grey", linestyle="--", label="start policy")
        axes.set_xlabel("L: extra turns on the rejected side")
        axes.set_title(title, fontsize=10)
        axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def table(cells: list[dict[str, Any]], start: dict[str, float]) -> str:
    rows = [["start policy", "", f"{start['p_correct_per_token']:.3f}", f"{start['p_correct']:.2g}", "0.0",
             f"{start['correct_over_wrong']:.0%}", "", ""]]
    rows += [[cell["algo"], cell["L"], f"{cell['p_correct_per_token']:.3f}", f"{cell['p_correct']:.2g}",
              f"{cell['delta_loglik_chosen']:+.1f}", f"{cell['correct_over_wrong']:.0%}", f"{cell['final_loss']:.3f}",
              f"{cell['train_seconds']:.0f}"] for cell in sorted(cells, key=lambda c: (c["algo"], c["L"]))]
    return markdown_table(["algo", "L", "p(correct action) per token", "whole action", "Δ log-lik chosen (nats)",
                           "correct > wrong", "final train loss", "train s"], rows)


# ---- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer pairs and steps (about 3 minutes on 2 CPUs)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, random-init policy (seconds; for CI)")
    parser.add_argument("--lengths", type=int, nargs="+", help="extra rejected turns L (default: per mode)")
    parser.add_argument("--algos", nargs="+", default=["dpo", "dmpo", "stepwise"], choices=["dpo", "dmpo", "stepwise"])
    parser.add_argument("--scenario", default="filesystem")
    parser.add_argument("--model", type=Path, help="start from this Llama model directory instead of building one")
    parser.add_argument("--pairs", type=int, help="train pairs (tasks) per L")
    parser.add_argument("--eval-pairs", type=int, help="held-out pairs (test-split tasks)")
    parser.add_argument("--steps", type=int, help="optimizer steps per cell")
    parser.add_argument("--sft-steps", type=int, help="SFT steps of the built model (0: random init)")
    parser.add_argument("--batch-size", type=int, help="pairs per optimizer step")
    parser.add_argument("--micro-batch", type=int, default=1,
                        help="pairs per forward (1: no padding between pairs of different lengths, fastest on CPU)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--max-positions", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, help="where models and runs go (default: a temporary folder)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON, markdown and PNG go")
    parser.add_argument("--name", default="length_bias", help="results file stem")
    args = parser.parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    for key, value in MODES[mode].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.mode = mode
    return args


def policy_to_start_from(args: argparse.Namespace, scenario: Scenario, work: Path) -> tuple[Path, dict[str, Any]]:
    """The model directory every cell starts from (and the reference), with a note of how it was made."""
    if args.model:
        model_dir = work / "start"
        shutil.copytree(args.model, model_dir, dirs_exist_ok=True)
        widen_positions(model_dir, args.max_positions)
        return model_dir, {"model": str(args.model)}
    return starting_policy(scenario, work, args.sft_steps, args.tokenizer_tasks, args.max_positions, args.seed)


def training_files(start_model: Any, fmt: ChatFormat, scenario: Scenario, system: Turn, items: list[Scaffold],
                   extra: int, work: Path, micro_batch: int) -> tuple[dict[bool, Path], dict[str, float]]:
    """Both anchorings of the train pairs with L = `extra`, with reference log-probs; their mean token counts."""
    whole = reference_logps(start_model, fmt, pairs_for(scenario, "train", system, items, extra, False),
                            lambda _: "", batch_size=micro_batch, progress=False)
    branched = with_sliced_reference(pairs_for(scenario, "train", system, items, extra, True), whole)
    check_sliced_reference(start_model, fmt, branched[0])
    tokens = [pair_tokens(fmt, pair, "") for pair in whole]
    sizes = {"prefix_tokens": statistics.fmean(len(t.prefix) for t in tokens),
             "chosen_tokens": statistics.fmean(len(t.chosen) for t in tokens),
             "rejected_tokens": statistics.fmean(len(t.rejected) for t in tokens)}
    files = {False: write_pairs(work / f"pairs_L{extra}_whole.jsonl", whole),
             True: write_pairs(work / f"pairs_L{extra}_divergence.jsonl", branched)}
    return files, sizes


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)  # a low, steady CPU footprint on a shared machine
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:4.0f}s] {message}", flush=True)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="length_bias_"))
    work.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario(args.scenario)
    progress(f"start policy: {args.model or f'tiny model, SFT {args.sft_steps} steps'}")
    model_dir, policy_info = policy_to_start_from(args, scenario, work)
    fmt = ChatFormat(AutoTokenizer.from_pretrained(str(model_dir)))
    system = Turn(role="system", text=scenario_system_prompt(scenario))

    train_items = select_scaffolds(scenario, "train", args.pairs, max(args.lengths), fmt, system, args.max_positions,
                                   args.seed)
    test_items = select_scaffolds(scenario, "test", args.eval_pairs, 0, fmt, system, args.max_positions, args.seed)
    start_model = load_model(model_dir)
    # Held-out pairs are whole trajectories with L = 0: only their chosen side and the mistake are measured.
    held_out = pairs_for(scenario, "test", system, test_items, 0, False)
    reference, _ = chosen_action_logps(start_model, fmt, held_out)
    start = measure(start_model, fmt, held_out, reference)
    progress(f"{len(train_items)} train / {len(held_out)} held-out tasks; start policy "
             f"p(correct) per token {start['p_correct_per_token']:.3f}")

    cells: list[dict[str, Any]] = []
    sizes: dict[int, dict[str, float]] = {}
    for extra in args.lengths:
        files, sizes[extra] = training_files(start_model, fmt, scenario, system, train_items, extra, work,
                                             args.micro_batch)
        progress(f"L={extra}: pairs ready, rejected side {sizes[extra]['rejected_tokens']:.0f} tokens on average")
        for algo in args.algos:
            trained = train_cell(model_dir, files[algo == "stepwise"], work / "runs" / f"L{extra}_{algo}", algo, args)
            metrics = measure(load_model(Path(trained.pop("model"))), fmt, held_out, reference)
            cells.append({"L": extra, "algo": algo, **metrics, **trained})
            progress(f"L={extra:>2} {algo:<8} p(correct) per token {metrics['p_correct_per_token']:.3f}, "
                     f"Δ log-lik chosen {metrics['delta_loglik_chosen']:+.2f}, final loss {trained['final_loss']:.3f} "
                     f"(trained {trained['train_seconds']:.0f}s)")

    png = args.results_dir / f"{args.name}.png"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    plot(cells, start, args.algos, png)
    wall = time.perf_counter() - started
    command = "python benchmarks/length_bias.py " + " ".join(sys.argv[1:])
    text = table(cells, start)
    payload = {
        "command": command, "mode": args.mode, "wall_seconds": wall, "scenario": args.scenario,
        "policy": policy_info, "settings": {key: str(value) if isinstance(value, Path) else value
                                            for key, value in vars(args).items()},
        "train_pairs": len(train_items), "held_out_pairs": len(held_out), "tokens_by_L": sizes,
        "start_policy": start, "cells": cells, "plot": png.name,
    }
    print(text)
    markdown = write_results(args.name, payload, f"{text}\n\n`{command}`: {wall / 60:.1f} min wall, {png.name}.",
                             results_dir=args.results_dir)
    progress(f"results: {markdown}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
