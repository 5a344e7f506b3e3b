"""`trajalign pairs ...`: build preference pairs from trajectories, and export or import them.

    trajalign pairs outcome --data ROLLOUTS.jsonl [--expert ORACLE.jsonl] --out PAIRS.jsonl
    trajalign pairs branch  --scenario retail --data ROLLOUTS.jsonl (--model DIR | --agent noisy)
                            --samples 8 --tau 0.25 --out PAIRS.jsonl
    trajalign pairs export  --format trl|openai|sharegpt PAIRS.jsonl OUT.jsonl
    trajalign pairs import  --format trl|openai|sharegpt IN.jsonl PAIRS.jsonl [--scenario NAME]

Pairs files are appended to (each pair flushed as it is made); pairs whose id the file already
holds are not written again, so a command run twice does not duplicate its pairs. Bad lines of
input files are reported with their line numbers and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from trajalign.envs.jsonl import BadLine, JsonlReader, JsonlWriter
from trajalign.envs.trajectory import Trajectory
from trajalign.ray_cluster import add_worker_arguments, check_worker_arguments

# The formats of trajalign.alignment.formats, listed here so building the parser imports no torch.
FORMATS = ("trl", "openai", "sharegpt")
ANCHORS = ("divergence", "start")  # trajalign.alignment.builders.ANCHORS


def add_pairs_commands(commands: Any) -> None:
    """Add the `pairs` command group to the subparsers object of the `trajalign` parser."""
    pairs = commands.add_parser("pairs", help="build, export and import trajectory preference pairs").add_subparsers(
        dest="pairs_command", required=True)

    outcome = pairs.add_parser("outcome", help="whole-trajectory pairs: a success (or expert) against a failure of "
                                               "the same task (ETO, DMPO)")
    outcome.add_argument("--data", nargs="+", required=True, type=Path, help="trajectory JSONL file(s)")
    outcome.add_argument("--expert", nargs="+", default=[], type=Path,
                         help="trajectory JSONL file(s) always eligible as the chosen side (e.g. oracle rollouts)")
    outcome.add_argument("--out", required=True, type=Path, help="pairs JSONL file (appended to)")
    outcome.add_argument("--max-per-task", type=int, help="keep a seeded sample of at most N pairs per task")
    outcome.add_argument("--seed", type=int, default=0)
    outcome.add_argument("--anchor", choices=ANCHORS, default="divergence",
                         help="branch where the two episodes first differ (default), or right after the goal as "
                         "ETO and DMPO build their pairs")
    outcome.set_defaults(handler=_outcome)

    branch = pairs.add_parser("branch", help="step-wise pairs: branch N continuations at recorded states and pair "
                                             "actions by their Monte-Carlo value (IPR)")
    branch.add_argument("--scenario", required=True, help="built-in name, scenario folder, or YAML file")
    branch.add_argument("--data", nargs="+", required=True, type=Path, help="trajectory JSONL file(s) to branch from")
    who = branch.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", type=Path, help="Hugging Face model directory that samples the continuations")
    who.add_argument("--agent", choices=["noisy", "random", "oracle"], help="a scripted agent for the continuations")
    branch.add_argument("--samples", type=int, required=True, help="continuations per state (N)")
    branch.add_argument("--tau", type=float, default=0.0,
                        help="pair only when the best and worst actions' values differ by more than this")
    branch.add_argument("--states-per-trajectory", type=int, metavar="M",
                        help="branch at a seeded sample of M states per trajectory (default: every state)")
    branch.add_argument("--max-trajectories", type=int, metavar="N", help="use only the first N trajectories")
    branch.add_argument("--out", required=True, type=Path, help="pairs JSONL file (appended to)")
    branch.add_argument("--seed", type=int, default=0, help="seeds state sampling and every continuation")
    branch.add_argument("--noise", type=json.loads, default=None, metavar="JSON",
                        help='noisy agent rates, e.g. \'{"wrong_argument": 0.2}\'')
    group = branch.add_argument_group("language-model continuations")
    group.add_argument("--batch-size", type=int, default=8, help="continuations generated together")
    group.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (every continuation the same)")
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--max-new-tokens", type=int, default=96, help="an action is cut at this many tokens")
    group.add_argument("--no-cache-reuse", action="store_true", help="recompute the whole conversation each turn")
    branch.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_worker_arguments(branch, "actors for the continuations")
    branch.set_defaults(handler=_branch)

    export = pairs.add_parser("export", help="write a pairs file in another tool's format (the output is replaced)")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("input", type=Path, help="pairs JSONL file")
    export.add_argument("output", type=Path, help="file to write")
    export.add_argument("--openai-multi-turn", choices=["error", "first_action"], default="error",
                        help="openai holds one assistant message per side: refuse multi-action continuations (error), "
                             "or keep each side's first action (first_action)")
    export.add_argument("--add-system-prompt", action="store_true",
                        help="give pairs recorded without a system turn their scenario's system prompt")
    export.add_argument("--scenario", action="append", default=[], metavar="PATH",
                        help="folder or YAML file of a scenario that is not built in (for --add-system-prompt)")
    export.set_defaults(handler=_export)

    imports = pairs.add_parser("import", help="read pairs from another tool's format into a pairs file")
    imports.add_argument("--format", required=True, choices=FORMATS)
    imports.add_argument("input", type=Path, help="file in that format")
    imports.add_argument("output", type=Path, help="pairs JSONL file (appended to)")
    imports.add_argument("--scenario", default="imported", help="scenario name recorded on the pairs")
    imports.add_argument("--source", default="human", choices=["human", "judge", "outcome", "branch_mc"],
                         help="how the preferences were made")
    imports.set_defaults(handler=_import)


# ---- handlers ---------------------------------------------------------------------------------------


def _outcome(args: argparse.Namespace) -> int:
    from trajalign.alignment.builders import PairStats, outcome_pairs

    if args.max_per_task is not None and args.max_per_task < 1:
        return _error("--max-per-task must be at least 1")
    missing = [path for path in [*args.data, *args.expert] if not path.is_file()]
    if missing:
        return _error(f"no such file: {', '.join(map(str, missing))}")
    bad: list[BadLine] = []
    stats = PairStats()
    pairs = outcome_pairs(_read(args.data, bad), _read(args.expert, bad), args.max_per_task, args.seed, stats,
                          anchor=args.anchor)
    written, duplicates = _write_pairs(pairs, args.out)
    _print_summary(stats.summary(), written, duplicates, bad, args.out)
    return 0


def _branch(args: argparse.Namespace) -> int:
    from trajalign.agents import NoiseRates, NoisyOracleAgent, OracleAgent, RandomAgent
    from trajalign.alignment.builders import PairStats, branch_pairs
    from trajalign.envs import ScenarioError, load_scenario

    if args.samples < 2:
        return _error("--samples must be at least 2")
    if args.tau < 0:
        return _error("--tau must be non-negative")
    for name in ("states_per_trajectory", "max_trajectories", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return _error(f"--{name.replace('_', '-')} must be at least 1")
    missing = [path for path in args.data if not path.is_file()]
    if missing:
        return _error(f"no such file: {', '.join(map(str, missing))}")
    if (problem := check_worker_arguments(args)) is not None:
        return _error(problem)
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        return _error(str(exc))
    bad: list[BadLine] = []
    trajectories = list(_read(args.data, bad))[:args.max_trajectories]
    if args.workers is not None:
        return _branch_on_ray(args, scenario, trajectories, bad)
    options: dict[str, Any] = {}
    if args.model is not None:
        from trajalign.agents.llm import LLMPolicy, SamplingConfig

        if not (args.model / "config.json").is_file():
            return _error(f"{args.model} is not a Hugging Face model directory (no config.json)")
        sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                                  seed=args.seed)
        options["policy"] = LLMPolicy.from_pretrained(args.model, sampling, reuse_cache=not args.no_cache_reuse)
        if args.temperature == 0:
            print("warning: greedy decoding makes every continuation of a state the same; no pairs can differ",
                  file=sys.stderr)
    elif args.agent == "noisy":
        rates = NoiseRates.model_validate(args.noise or {})
        options["agent_factory"] = lambda seed: NoisyOracleAgent(scenario, rates, seed=seed)
    elif args.agent == "random":
        options["agent_factory"] = lambda seed: RandomAgent(seed=seed)
    else:
        options["agent_factory"] = lambda seed: OracleAgent(scenario)
    stats = PairStats()
    pairs = branch_pairs(trajectories, scenario, samples=args.samples, tau=args.tau,
                         max_states_per_trajectory=args.states_per_trajectory, batch_size=args.batch_size,
                         seed=args.seed, stats=stats, progress=not args.no_progress, **options)
    written, duplicates = _write_pairs(pairs, args.out)
    _print_summary(stats.summary(), written, duplicates, bad, args.out)
    return 0


def _branch_on_ray(args: argparse.Namespace, scenario: Any, trajectories: list[Trajectory], bad: list[BadLine]) -> int:
    """`pairs branch --workers N`: the same pairs, with the continuations played on Ray actors."""
    from trajalign.alignment.builders import PairStats
    from trajalign.ray_rollouts import AgentSpec, RolloutPool, WorkerSettings

    if args.model is not None and not (args.model / "config.json").is_file():
        return _error(f"{args.model} is not a Hugging Face model directory (no config.json)")
    if args.model is not None and args.temperature == 0:
        print("warning: greedy decoding makes every continuation of a state the same; no pairs can differ",
              file=sys.stderr)
    spec = AgentSpec(agent=str(args.model) if args.model is not None else args.agent, noise=args.noise,
                     sampling={"temperature": args.temperature, "top_p": args.top_p,
                               "max_new_tokens": args.max_new_tokens, "seed": args.seed},
                     reuse_cache=not args.no_cache_reuse, batch_size=args.batch_size)
    settings = WorkerSettings(workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                              gpus_per_worker=args.gpus_per_worker)
    options = {"samples": args.samples, "tau": args.tau, "max_states_per_trajectory": args.states_per_trajectory,
               "seed": args.seed}
    stats = PairStats()
    with RolloutPool(scenario, spec, settings) as pool:
        written, duplicates = _write_pairs(pool.branch(trajectories, options, stats, not args.no_progress), args.out)
        report = pool.report
    _print_summary(stats.summary(), written, duplicates, bad, args.out)
    print("ray: " + ", ".join(f"{name} {value}" for name, value in report.rows()))
    return 0


def _export(args: argparse.Namespace) -> int:
    from trajalign.alignment.formats import FormatError, export_pairs
    from trajalign.alignment.pairs import PreferencePair

    if not args.input.is_file():
        return _error(f"no such file: {args.input}")
    reader = JsonlReader(args.input, PreferencePair)
    system_prompt = _system_prompts(args.scenario) if args.add_system_prompt else None
    try:
        stats = export_pairs(reader, args.output, args.format, openai_multi_turn=args.openai_multi_turn,
                             system_prompt=system_prompt)
    except FormatError as exc:
        return _error(str(exc))
    print(f"{args.format}: {stats.summary()}")
    _print_bad_lines(reader.bad_lines)
    print(f"output: {args.output}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from trajalign.alignment.formats import import_pairs

    if not args.input.is_file():
        return _error(f"no such file: {args.input}")
    bad: list[BadLine] = []
    pairs = import_pairs(args.input, args.format, args.scenario, source=args.source, bad_lines=bad)
    written, duplicates = _write_pairs(pairs, args.output)
    _print_summary(f"{len(pairs)} pairs read from {args.input} ({args.format})", written, duplicates, bad, args.output)
    return 0


# ---- helpers ----------------------------------------------------------------------------------------


def _read(paths: Iterable[Path], bad: list[BadLine]) -> Iterator[Trajectory]:
    for path in paths:
        reader = JsonlReader(path, Trajectory)
        yield from reader
        bad.extend(reader.bad_lines)


def _write_pairs(pairs: Iterable[Any], out: Path) -> tuple[int, int]:
    """Append pairs whose id `out` does not hold yet; returns (written, duplicates)."""
    from trajalign.alignment.pairs import PreferencePair

    seen = {pair.id for pair in JsonlReader(out, PreferencePair)} if out.exists() else set()
    duplicates = 0
    with JsonlWriter(out) as writer:
        for pair in pairs:
            if pair.id in seen:
                duplicates += 1
                continue
            seen.add(pair.id)
            writer.write(pair)
        return writer.written, duplicates


def _system_prompts(scenario_paths: list[str]) -> Any:
    """scenario name -> its rendered system prompt, for pairs recorded without a system turn."""
    from trajalign.agents.chat import scenario_system_prompt
    from trajalign.alignment.formats import FormatError
    from trajalign.envs import ScenarioError, load_scenario

    paths = {load_scenario(path).name: path for path in scenario_paths}
    prompts: dict[str, str] = {}

    def system_prompt(name: str) -> str:
        if name not in prompts:
            try:
                prompts[name] = scenario_system_prompt(load_scenario(paths.get(name, name)))
            except ScenarioError as exc:
                raise FormatError(f"pairs of scenario '{name}' have no system turn and the scenario cannot be "
                                  f"loaded to render one ({exc}); pass --scenario PATH") from None
        return prompts[name]

    return system_prompt


def _print_summary(summary: str, written: int, duplicates: int, bad: list[BadLine], out: Path) -> None:
    print(summary)
    already = f" ({duplicates} already there)" if duplicates else ""
    print(f"written: {written} pairs to {out}{already}")
    _print_bad_lines(bad)


def _print_bad_lines(bad: list[BadLine]) -> None:
    if not bad:
        return
    files = Counter(line.path for line in bad)
    print(f"bad lines skipped: {len(bad)} (" + ", ".join(f"{path}: {count}" for path, count in files.items()) + ")")
    for line in bad[:5]:
        print(f"  {line.path}:{line.line}: {line.problem}")
    if len(bad) > 5:
        print(f"  ... and {len(bad) - 5} more")


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


__all__ = ["add_pairs_commands"]
