"""Regenerate every benchmark table and plot, at full size, at reduced size (--quick) or as a smoke run.

    python benchmarks/run_all.py [--quick | --smoke] [--only NAME ...] [--skip NAME ...] [--results-dir DIR]
    python benchmarks/run_all.py --list

Each benchmark runs as its own process (`python benchmarks/<script> <args of the mode>`), one after
the other, with its output streamed; a failing benchmark does not stop the others, and the exit
status is 1 if any failed. Results go to `benchmarks/results/` (full size), `benchmarks/results/quick/`
(--quick, so reduced sizes never replace full-size results) or a temporary folder (--smoke), unless
--results-dir says otherwise; every script reads the folder from `TRAJALIGN_RESULTS_DIR`. Work
folders (models, runs) go under `runs/bench-all-<mode>/`. The run ends with `run_all_<mode>.json/.md`:
each benchmark's command, exit status and wall time.

Sizes: --quick regenerates every table at reduced size in under 30 minutes on 2 CPU cores; full
size takes roughly half a day, most of it the alignment table (docs/benchmarks.md, "Full-size run
time per script"). --smoke exists so the scripts cannot rot: it runs each at the smallest size that
still exercises its whole path. Benchmarks marked heavy (Ray actors, RLlib, the whole
`trajalign run` pipeline) take a minute or more even then; `--smoke --light` leaves them out (the
fast test suite), `--smoke --only <heavy names>` runs them (the slow test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import RESULTS, markdown_table, write_results

HERE = Path(__file__).resolve().parent
MODES = ("full", "quick", "smoke")


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    smoke: tuple[str, ...]
    heavy: bool = False  # Ray, RLlib or the whole pipeline: a minute or more even as a smoke run
    work_flag: str | None = None  # the script's option for its work folder, if it has one

    def args(self, mode: str) -> tuple[str, ...]:
        return {"full": self.full, "quick": self.quick, "smoke": self.smoke}[mode]


BENCHMARKS = [
    Benchmark("env_throughput", "env_throughput.py",
              full=("--steps", "20000", "--web-episodes", "30"),
              quick=("--steps", "5000", "--web-episodes", "8"),
              smoke=("--steps", "200", "--kinds", "tool_use,web", "--web-episodes", "1")),
    Benchmark("oracle_sweep", "oracle_sweep.py",
              full=(), quick=("--kind", "tool_use"), smoke=("--scenario", "filesystem")),
    Benchmark("rollout_throughput", "rollout_throughput.py",
              full=(), quick=("--episodes", "16"),
              smoke=("--episodes", "2", "--batch-sizes", "1", "2", "--max-new-tokens", "8")),
    Benchmark("pair_throughput", "pair_throughput.py",
              full=(), quick=("--size", "tiny", "--repeats", "2"),
              smoke=("--size", "tiny", "--pairs", "2", "--micro-batch", "2", "--repeats", "1")),
    Benchmark("trl_comparison", "trl_comparison.py", full=(), quick=("--quick",), smoke=("--smoke",)),
    Benchmark("length_bias", "length_bias.py", full=(), quick=("--quick",), smoke=("--smoke",),
              work_flag="--work-dir"),
    Benchmark("sft_tool_use", "sft_tool_use.py",
              full=("--scenario", "filesystem", "--task-count", "3000", "--epochs", "12", "--lr", "5e-3",
                    "--data", "noisy", "--eval-episodes", "150"),
              quick=("--scenario", "filesystem", "--epochs", "8", "--lr", "5e-3", "--data", "noisy",
                     "--minutes", "2", "--eval-episodes", "40"),
              smoke=("--scenario", "filesystem", "--epochs", "1", "--minutes", "0.1", "--eval-episodes", "1"),
              work_flag="--out"),
    Benchmark("alignment_e2e", "alignment_e2e.py",
              # its default result name belongs to a committed run with other settings (docs/benchmarks.md)
              full=("--name", "alignment_e2e_filesystem_3seeds_defaults"),
              quick=("--task-count", "0", "--seeds", "0", "--sft-minutes", "1.5", "--rollout-tasks", "60",
                     "--branch-trajectories", "60", "--epochs", "1", "--eval-episodes", "30"),
              smoke=("--task-count", "0", "--seeds", "0", "--sft-minutes", "0.1", "--rollout-tasks", "4",
                     "--samples-per-task", "1", "--branch-trajectories", "4", "--branch-samples", "2",
                     "--epochs", "1", "--eval-episodes", "2", "--algorithms", "dpo", "dmpo", "stepwise",
                     "stepwise:both"),
              heavy=True, work_flag="--out"),
    Benchmark("alignment_table", "alignment_table.py", full=(), quick=("--quick",), smoke=("--smoke",),
              heavy=True, work_flag="--out"),
    Benchmark("rollout_scaling", "rollout_scaling.py",
              full=(), quick=("--episodes", "128", "--scripted-episodes", "500", "--repeats", "1"),
              smoke=("--episodes", "4", "--scripted-episodes", "20", "--repeats", "1", "--max-new-tokens", "8"),
              heavy=True),
    Benchmark("ppo_baseline", "ppo_baseline.py",
              full=("--check",), quick=("--iterations", "4", "--episodes", "40"),
              smoke=("--iterations", "1", "--episodes", "4", "--train-batch-size", "256"),
              heavy=True, work_flag="--out"),
]


def select(names: list[str] | None, skip: list[str], light_only: bool) -> list[Benchmark]:
    known = {b.name for b in BENCHMARKS}
    unknown = sorted((set(names or []) | set(skip)) - known)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = [b for b in BENCHMARKS if (not names or b.name in names) and b.name not in skip]
    return [b for b in chosen if not (light_only and b.heavy)]


def run_one(benchmark: Benchmark, mode: str, results_dir: Path, work_root: Path) -> dict:
    command = [sys.executable, str(HERE / benchmark.script), *benchmark.args(mode)]
    if benchmark.work_flag:
        command += [benchmark.work_flag, str(work_root / benchmark.name)]
    env = {**os.environ, "TRAJALIGN_RESULTS_DIR": str(results_dir)}
    print(f"\n==> {benchmark.name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    status = subprocess.run(command, env=env, cwd=HERE.parent, check=False).returncode
    seconds = time.perf_counter() - started
    print(f"<== {benchmark.name}: {'ok' if status == 0 else f'FAILED (exit {status})'} in {seconds:.0f} s", flush=True)
    shown = " ".join(["python", *command[1:]]).replace(f"{HERE.parent}/", "")  # paths as from the repository root
    return {"name": benchmark.name, "command": shown, "exit_status": status,
            "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="every table at reduced size (< 30 min on 2 CPUs)")
    size.add_argument("--smoke", action="store_true", help="smallest sizes, results in a temporary folder")
    parser.add_argument("--light", action="store_true", help="leave out the heavy benchmarks (Ray, RLlib, pipeline)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="leave these benchmarks out")
    parser.add_argument("--results-dir", type=Path,
                        help="default: benchmarks/results, results/quick for --quick, a temporary folder for --smoke")
    parser.add_argument("--list", action="store_true", help="print the benchmarks and their arguments, then exit")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    chosen = select(args.only, args.skip, args.light)
    if args.list:
        for benchmark in chosen:
            print(f"{benchmark.name:20} {'heavy' if benchmark.heavy else 'light':6} {' '.join(benchmark.args(mode))}")
        return 0

    with tempfile.TemporaryDirectory(prefix="trajalign-bench-") as scratch:
        default_dir = {"full": RESULTS, "quick": RESULTS / "quick", "smoke": Path(scratch) / "results"}[mode]
        results_dir = (args.results_dir or default_dir).resolve()  # the scripts run from the repository root
        work_root = Path(scratch) / "work" if mode == "smoke" else HERE.parent / "runs" / f"bench-all-{mode}"
        started = time.perf_counter()
        runs = [run_one(benchmark, mode, results_dir, work_root) for benchmark in chosen]
        total = time.perf_counter() - started
        failed = [run["name"] for run in runs if run["exit_status"] != 0]
        table = markdown_table(["benchmark", "command", "exit status", "seconds"],
                               [[r["name"], f"`{r['command']}`", r["exit_status"], r["seconds"]] for r in runs])
        summary = write_results(f"run_all_{mode}", {"mode": mode, "runs": runs, "seconds": round(total, 1),
                                                    "failed": failed}, table, results_dir)
        print(f"\n{table}\n\n{len(runs)} benchmarks in {total / 60:.1f} min; "
              f"{'all ok' if not failed else 'FAILED: ' + ', '.join(failed)}; summary: {summary}")
        if mode == "smoke" and not args.results_dir:
            print(json.dumps({"runs": runs}, indent=None))  # the temporary folder goes away with this process
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
