"""The multi-turn alignment table: Base, SFT, dpo, dmpo, stepwise and PPO per domain, over seeds.

The analogue of the ETO / DMPO / IPR result tables, with one tiny from-scratch model family
(agents/tiny.py, size `tiny`: 2 layers, 128 wide, a tokenizer trained per domain) in every domain.
For each (domain, seed) cell, one `trajalign run` (`run_pipeline`) builds the model, fine-tunes it
on noisy-oracle successes (SFT), samples the SFT policy on train tasks, builds outcome pairs (the
oracle's trajectory against failed rollouts, anchored at the goal: the ETO construction) and branch pairs (per-state
Monte-Carlo credit), trains dpo and dmpo on the outcome pairs and stepwise on the branch pairs, and
evaluates every model greedily on held-out test tasks with `evaluate_policy` (the code of
`trajalign eval`). Base is the untrained model from model init, evaluated the same way. The PPO row
is `trajalign baseline ppo` (RLlib PPO choosing among admissible actions, as
benchmarks/ppo_baseline.py runs it), evaluated on the same test episodes with the same summary.

What a seed controls: model init (weights), the noisy-oracle SFT data, the SFT data order, the
rollouts, both pair builders, preference training, which test tasks are evaluated (a seeded
choice when fewer than all are), and PPO (network init, sampling). The scenarios' task sets are
fixed: they are the benchmark.

Rows: base, sft, dpo (ETO-style), dmpo, stepwise, ppo. Columns: test success and mean reward,
mean ± std over seeds, and test episodes per seed. A row a seed could not train (stepwise when
branching found no value gap, so no branch pairs) is left out of that seed's mean and the table
says how many seeds it has. On a web domain PPO chooses among the actions the page lists, and each
iteration's 2,000 steps drive Chromium (about 2 minutes on 2 cores; docs/benchmarks.md).

Web domains need longer contexts: their episodes (an accessibility tree per observation) are
3,000 to 6,000 tokens, so web models read 8,192 positions instead of 2,048 (same width and depth),
and their rollouts step 4 browsers at a time instead of 16.

    python benchmarks/alignment_table.py [--domains filesystem retail shop] [--seeds 0 1 2] [--jobs N]
        [--quick | --smoke] [--out runs/bench-table] [--name NAME]

Sizes: full (default; docs/benchmarks.md gives its run time), --quick (3 domains x 1 seed, about a
minute of SFT per domain, 30 test episodes, 2 PPO iterations), --smoke (filesystem x 1 seed, the
smallest run that goes through every stage and row; tool use only, since a web cell takes minutes;
its barely trained SFT policy rarely succeeds, so branching usually finds no value gap and the
stepwise row shows n/a after the branch-pair stage ran).
Writes `alignment_table[_quick|_smoke].json/.md/.png` (or `--name`) to the results folder; work
folders go to `<out>/<size>/<domain>/seed-<k>/`, and a rerun reuses every stage a previous run
finished (after editing `SIZES`, the pipeline stops at the first stage made with other settings: use
a fresh --out).

A full table takes hours, so it can be built in parts: run some domains or seeds at a time, keep
each run's result file (rename it, or give `--name`), then assemble the table from their cells:

    python benchmarks/alignment_table.py --merge benchmarks/results/alignment_table_filesystem.json \
        benchmarks/results/alignment_table_retail.json --name alignment_table_tool_use
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import RESULTS, markdown_table, write_results
from alignment_e2e import run_seeds

from trajalign.envs import load_scenario
from trajalign.pipeline import PipelineResult, RunConfig, run_pipeline

ROWS = {
    "base": "Base (untrained)",
    "sft": "SFT",
    "dpo": "SFT + dpo, outcome pairs (ETO-style)",
    "dmpo": "SFT + dmpo, outcome pairs",
    "stepwise": "SFT + stepwise, branch pairs",
    "ppo": "RLlib PPO (admissible actions)",
}
DEFAULT_DOMAINS = ["filesystem", "retail", "shop"]
WEB_MAX_POSITIONS = 8192  # web episodes run 3,000 to 6,000 tokens (measured on the oracle's)
WEB_BATCH = 4  # environments stepped together: each web one is a Chromium process


@dataclass(frozen=True)
class Size:
    """How much of everything one (domain, seed) cell does."""

    corpus_tasks: int  # train tasks whose oracle episodes train the tokenizer
    sft_episodes: int | None  # noisy-oracle episodes on a tool-use domain (None: 4 per train task)
    web_sft_episodes: int  # on a web domain, where each one drives Chromium for a second or two
    sft_seconds: float  # SFT budget per cell
    sft_epochs: int
    rollout_tasks: int | None  # train tasks the SFT policy is sampled on (None: all)
    samples_per_task: int
    max_pairs_per_task: int
    branch_trajectories: int
    states_per_trajectory: int
    branch_samples: int
    tau: float
    train_epochs: int
    train_seconds: float | None  # budget per algorithm
    val_fraction: float
    eval_episodes: int | None  # test tasks (None: all)
    ppo_iterations: int
    ppo_batch: int  # env steps per PPO iteration


SIZES = {
    "full": Size(corpus_tasks=200, sft_episodes=None, web_sft_episodes=400, sft_seconds=600, sft_epochs=8,
                 rollout_tasks=200, samples_per_task=2, max_pairs_per_task=2, branch_trajectories=100,
                 states_per_trajectory=2, branch_samples=4, tau=0.5, train_epochs=2, train_seconds=900,
                 val_fraction=0.1, eval_episodes=None, ppo_iterations=40, ppo_batch=2000),
    # tau 0 in the small sizes: with 2 continuations per state any value gap is all there is to find.
    "quick": Size(corpus_tasks=30, sft_episodes=None, web_sft_episodes=60, sft_seconds=60, sft_epochs=1,
                  rollout_tasks=12, samples_per_task=2, max_pairs_per_task=2, branch_trajectories=6,
                  states_per_trajectory=1, branch_samples=2, tau=0.0, train_epochs=1, train_seconds=120,
                  val_fraction=0.0, eval_episodes=30, ppo_iterations=2, ppo_batch=2000),
    "smoke": Size(corpus_tasks=10, sft_episodes=40, web_sft_episodes=10, sft_seconds=10, sft_epochs=1,
                  rollout_tasks=4, samples_per_task=2, max_pairs_per_task=2, branch_trajectories=4,
                  states_per_trajectory=1, branch_samples=2, tau=0.0, train_epochs=1, train_seconds=60,
                  val_fraction=0.0, eval_episodes=4, ppo_iterations=1, ppo_batch=400),
}
SIZE_DOMAINS = {"full": DEFAULT_DOMAINS, "quick": DEFAULT_DOMAINS, "smoke": ["filesystem"]}
SIZE_SEEDS = {"full": [0, 1, 2], "quick": [0], "smoke": [0]}

# Published results, 7B models: reference points only, not comparable with a tiny CPU model.
PUBLISHED = [
    ["ETO (Song et al. 2024, \"Trial and Error: Exploration-Based Trajectory Optimization for LLM Agents\"), "
     "main results table", "Llama-2-7B-Chat", "WebShop", "average reward", "63.1", "67.4 (ETO)"],
    ["ETO (same table)", "Llama-2-7B-Chat", "ScienceWorld, seen", "average reward", "67.4", "73.8 (ETO)"],
    ["ETO (same table)", "Llama-2-7B-Chat", "ALFWorld, seen", "average reward", "60.0", "68.6 (ETO)"],
    ["DMPO (Shi et al. 2024, \"Direct Multi-Turn Preference Optimization for Language Agents\")", "see paper",
     "WebShop, ScienceWorld, ALFWorld", "see paper", "see paper", "see paper"],
    ["IPR (Xiong et al. 2024, \"Watch Every Step! LLM Agent Learning via Iterative Step-Level Process "
     "Refinement\")", "see paper", "WebShop, InterCodeSQL, ALFWorld", "see paper", "see paper", "see paper"],
]


@dataclass
class Cell:
    """One (domain, seed): where its pipeline and PPO run live."""

    domain: str
    seed: int
    out: Path
    web: bool

    @property
    def label(self) -> str:
        return f"[{self.domain} seed {self.seed}]"


# ---- configuration -------------------------------------------------------------------------------


def pipeline_config(cell: Cell, size: Size) -> RunConfig:
    """One `trajalign run` for the cell; every random stage takes the cell's seed."""
    batch = WEB_BATCH if cell.web else 16
    return RunConfig.model_validate({
        "out": cell.out, "scenario": cell.domain, "seed": cell.seed,
        "model": {"size": "tiny", "seed": cell.seed, "corpus_tasks": size.corpus_tasks,
                  "max_positions": WEB_MAX_POSITIONS if cell.web else None},
        "sft": {"data": "noisy", "episodes": size.web_sft_episodes if cell.web else size.sft_episodes,
                "config": {"learning_rate": 5e-3, "epochs": size.sft_epochs, "max_seconds": size.sft_seconds,
                           "seed": cell.seed}},
        "rollouts": {"tasks": size.rollout_tasks, "samples_per_task": size.samples_per_task, "batch_size": batch},
        "pairs": {"max_pairs_per_task": size.max_pairs_per_task, "branch_trajectories": size.branch_trajectories,
                  "states_per_trajectory": size.states_per_trajectory, "branch_samples": size.branch_samples,
                  "tau": size.tau, "anchor": "start"},  # outcome pairs from the goal, as ETO and DMPO build them
        "train": {"algorithms": ["dpo", "dmpo", "stepwise"],
                  "config": {"epochs": size.train_epochs, "max_seconds": size.train_seconds,
                             "val_fraction": size.val_fraction}},
        "eval": {"episodes": size.eval_episodes, "include_base": True, "batch_size": batch},
    })


def ppo_settings(cell: Cell, size: Size) -> Any:
    """The PPO baseline's settings for the cell, evaluated on as many test tasks as the pipeline."""
    from trajalign.baseline import PPOSettings

    test_tasks = len(load_scenario(cell.domain).tasks_in("test"))
    return PPOSettings(scenario=cell.domain, iterations=size.ppo_iterations, seed=cell.seed,
                       train_batch_size=size.ppo_batch, minibatch_size=min(256, size.ppo_batch),
                       eval_episodes=size.eval_episodes or test_tasks)


# ---- running -------------------------------------------------------------------------------------


def run_pipelines(cells: list[Cell], size: Size, jobs: int) -> dict[tuple[str, int], PipelineResult]:
    """Every cell's pipeline: in this process with progress lines, or `jobs` processes at a time."""
    configs = [pipeline_config(cell, size) for cell in cells]
    if jobs > 1:
        print(f"running {len(cells)} pipelines, {jobs} at a time; each logs to <cell>/pipeline.log:", flush=True)
        for cell in cells:
            print(f"  {cell.label} {cell.out / 'pipeline.log'}", flush=True)
        results = run_seeds(configs, jobs)
    else:
        results = []
        for cell, config in zip(cells, configs):
            results.append(run_pipeline(config, progress=False,
                                        log=lambda line, cell=cell: print(f"{cell.label} {line}", flush=True)))
    return {(cell.domain, cell.seed): result for cell, result in zip(cells, results)}


def run_ppo(cells: list[Cell], size: Size) -> dict[tuple[str, int], Any]:
    """PPO on every cell, one Ray session for all; a finished run with the same settings is reused."""
    from trajalign.baseline import BaselineResult, train_ppo_baseline
    from trajalign.ray_cluster import ray_session

    results: dict[tuple[str, int], Any] = {}
    with ray_session():
        for cell in cells:
            settings, out = ppo_settings(cell, size), cell.out / "ppo"
            previous = out / "result.json"
            if previous.is_file():
                result = BaselineResult.model_validate_json(previous.read_text())
                if result.settings == settings:
                    print(f"{cell.label} ppo: finished before, reused", flush=True)
                    results[(cell.domain, cell.seed)] = result
                    continue
            print(f"{cell.label} == ppo ({settings.iterations} iterations)", flush=True)
            started = time.perf_counter()
            results[(cell.domain, cell.seed)] = train_ppo_baseline(settings, out, progress=False)
            print(f"{cell.label}    ppo: {time.perf_counter() - started:.1f}s", flush=True)
    return results


# ---- the table -----------------------------------------------------------------------------------


def cell_scores(pipeline: PipelineResult, ppo: Any | None) -> dict[str, dict[str, Any]]:
    """Each row's test success, mean reward and episodes in one cell (rows it could not train are absent)."""
    scores = {row.name: {"success": row.success_rate, "reward": row.mean_reward, "episodes": row.episodes,
                         "pairs": row.pairs} for row in pipeline.rows}
    if ppo is not None:
        scores["ppo"] = {"success": ppo.test.success_rate, "reward": ppo.test.mean_reward,
                         "episodes": ppo.test.episodes, "pairs": None}
    return scores


def aggregate(scores: dict[tuple[str, int], dict[str, dict[str, Any]]], domains: list[str]) -> list[dict[str, Any]]:
    """Mean and std over a domain's seeds for each (domain, row); rows with no seed are kept with n = 0."""
    summary = []
    for domain in domains:
        seeds = sorted(seed for cell_domain, seed in scores if cell_domain == domain)
        for row in ROWS:
            runs = [scores[(domain, seed)][row] for seed in seeds if row in scores[(domain, seed)]]
            success = [run["success"] for run in runs]
            reward = [run["reward"] for run in runs]
            summary.append({
                "domain": domain, "row": row, "seeds": len(runs), "domain_seeds": len(seeds),
                "success_mean": statistics.fmean(success) if runs else None,
                "success_std": statistics.stdev(success) if len(runs) > 1 else 0.0,
                "reward_mean": statistics.fmean(reward) if runs else None,
                "reward_std": statistics.stdev(reward) if len(runs) > 1 else 0.0,
                "episodes": sorted({run["episodes"] for run in runs}),
                "success_per_seed": success,
                "pairs_per_seed": [run["pairs"] for run in runs if run["pairs"] is not None],
            })
    return summary


def results_table(summary: list[dict[str, Any]]) -> str:
    rows = []
    for entry in summary:
        if entry["seeds"] == 0:
            rows.append([entry["domain"], ROWS[entry["row"]], "n/a (no pairs in any seed)", "", "", "", ""])
            continue
        seeds = str(entry["seeds"]) if entry["seeds"] == entry["domain_seeds"] else \
            f"{entry['seeds']} of {entry['domain_seeds']}"
        rows.append([entry["domain"], ROWS[entry["row"]],
                     f"{entry['success_mean']:.1%} ± {entry['success_std']:.1%}",
                     f"{entry['reward_mean']:.3f} ± {entry['reward_std']:.3f}",
                     " / ".join(map(str, entry["episodes"])), seeds,
                     " / ".join(map(str, entry["pairs_per_seed"]))])
    return markdown_table(["domain", "model", "test success", "mean reward", "test episodes per seed", "seeds",
                           "train pairs per seed"], rows)


def published_table() -> str:
    return markdown_table(["paper, table", "model", "benchmark", "metric", "SFT", "method"], PUBLISHED)


def plot(summary: list[dict[str, Any]], domains: list[str], path: Path, title: str) -> None:
    """Grouped bars: test success per row, one group per domain, std over seeds as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.0 + 2.0 * len(domains), 4.2), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(ROWS)
    tops = [5.0]  # percent; an all-zero table still gets a readable axis
    for index, row in enumerate(ROWS):
        entries = [next(e for e in summary if e["domain"] == domain and e["row"] == row) for domain in domains]
        positions = [d + (index - (len(ROWS) - 1) / 2) * width for d in range(len(domains))]
        heights = [100 * (e["success_mean"] or 0.0) for e in entries]
        errors = [100 * e["success_std"] for e in entries]
        axes.bar(positions, heights, width, yerr=errors, capsize=3, label=ROWS[row])
        tops += [h + e for h, e in zip(heights, errors)]
        for x, entry in zip(positions, entries):
            if entry["seeds"] == 0:  # a row this domain could not run: say so instead of a zero bar
                axes.text(x, 0.3, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="grey")
    axes.set_xticks(range(len(domains)), domains)
    axes.set_ylabel("held-out test success (%)")
    axes.set_ylim(0, 1.15 * max(tops))
    axes.set_title(title, fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    figure.savefig(path, bbox_inches="tight")


# ---- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="3 domains x 1 seed at much reduced sizes")
    mode.add_argument("--smoke", action="store_true", help="the smallest run through every row (filesystem only)")
    mode.add_argument("--merge", type=Path, nargs="+", metavar="RESULT_JSON",
                      help="run nothing: one table from the cells of earlier runs' result files (same size)")
    parser.add_argument("--domains", nargs="+", help=f"default: {' '.join(DEFAULT_DOMAINS)} (smoke: filesystem)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (quick and smoke: 0)")
    parser.add_argument("--jobs", type=int, default=1, help="(domain, seed) pipelines run in parallel as processes")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-table"), help="work folders go under <out>/<size>")
    parser.add_argument("--name", help="result file name (default: alignment_table[_quick|_smoke])")
    args = parser.parse_args(argv)
    if args.merge and (args.domains or args.seeds):
        parser.error("--merge takes its domains and seeds from the result files; drop --domains and --seeds")
    args.size = "smoke" if args.smoke else "quick" if args.quick else "full"
    if not args.merge:
        args.domains = args.domains or SIZE_DOMAINS[args.size]
        args.seeds = args.seeds or SIZE_SEEDS[args.size]
    return args


def run_cells(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (domain, seed) cell's pipeline and PPO run, as the records a result file keeps."""
    size = SIZES[args.size]
    cells = [Cell(domain, seed, args.out / args.size / domain / f"seed-{seed}", load_scenario(domain).kind == "web")
             for domain in args.domains for seed in args.seeds]
    print(f"alignment table ({args.size}): domains {', '.join(args.domains)}; seeds {' '.join(map(str, args.seeds))}",
          flush=True)
    pipelines = run_pipelines(cells, size, args.jobs)
    ppo = run_ppo(cells, size)
    return [{"domain": domain, "seed": seed, "scores": cell_scores(pipelines[(domain, seed)], ppo.get((domain, seed))),
             "pipeline": pipelines[(domain, seed)].model_dump(mode="json"),
             "ppo": ppo[(domain, seed)].model_dump(mode="json") if (domain, seed) in ppo else None}
            for domain, seed in pipelines]


def merged_cells(files: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """The cells of earlier result files, their common size, and where each file came from.

    A cell found in two files must have the same scores in both; files of different sizes are refused.
    """
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    origin: dict[tuple[str, int], Path] = {}
    size, size_file, sources = None, None, []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--merge {path}: cannot read it as JSON ({exc})") from None
        if not isinstance(data, dict) or not str(data.get("benchmark", "")).startswith("alignment_table") \
                or "cells" not in data or "size" not in data:
            raise SystemExit(f"--merge {path}: not an alignment_table result file (no 'cells' and 'size')")
        if size is None:
            size, size_file = data["size"], path
        elif data["size"] != size:
            changed = sorted(key for key in size if data["size"].get(key) != size[key])
            raise SystemExit(f"--merge: {path} and {size_file} ran at different sizes ({', '.join(changed)} "
                             "differ); their cells cannot share a table")
        for cell in data["cells"]:
            key = (cell["domain"], cell["seed"])
            if key in cells and cells[key]["scores"] != cell["scores"]:
                raise SystemExit(f"--merge: {key[0]} seed {key[1]} has different scores in {origin[key]} and {path}")
            cells.setdefault(key, cell)
            origin.setdefault(key, path)
        sources.append({"file": str(path), "date": data.get("date"), "seconds": data.get("seconds")})
    return list(cells.values()), size, sources


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.merge:
        cells, size, sources = merged_cells(args.merge)
        domains = list(dict.fromkeys(cell["domain"] for cell in cells))
        size_name = next((name for name, known in SIZES.items() if asdict(known) == size), "unknown")
    else:
        cells, size, sources = run_cells(args), asdict(SIZES[args.size]), []
        domains, size_name = args.domains, args.size
    scores = {(cell["domain"], cell["seed"]): cell["scores"] for cell in cells}
    summary = aggregate(scores, domains)
    seconds = time.perf_counter() - started
    if args.merge:
        how = "assembled from " + ", ".join(f"{Path(source['file']).name} ({source['date']})" for source in sources)
    else:
        how = f"seeds {' '.join(map(str, args.seeds))}, wall time {seconds / 60:.1f} min"

    name = args.name or ("alignment_table" if size_name == "full" else f"alignment_table_{size_name}")
    table = (f"{results_table(summary)}\n\nSize {size_name}, {how}.\n\n"
             "Published results, for reference only: 7B models fine-tuned on expert data, not comparable with a "
             f"tiny model trained from scratch on CPU.\n\n{published_table()}")
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(summary, domains, RESULTS / f"{name}.png",
         f"Held-out test success, tiny model, mean ± std over seeds ({size_name})")
    payload = {"args": {key: str(value) for key, value in vars(args).items()}, "size": size,
               "seconds": round(seconds, 1), "sources": sources, "summary": summary, "cells": cells,
               "published": PUBLISHED}
    print(f"results: {write_results(name, payload, table)} (plot: {RESULTS / f'{name}.png'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
