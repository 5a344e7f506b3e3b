"""The `trajalign` command line (also `python -m trajalign`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from trajalign.agents import Agent, NoiseRates, NoisyOracleAgent, OracleAgent, RandomAgent, run_rollouts
from trajalign.envs import Scenario, ScenarioError, builtin_scenarios, load_scenario


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trajalign", description="Align LLM agents on multi-turn tasks.")
    commands = parser.add_subparsers(dest="command", required=True)

    scenarios = commands.add_parser("scenarios", help="list and check scenarios").add_subparsers(
        dest="scenarios_command", required=True)
    listing = scenarios.add_parser("list", help="list the built-in scenarios")
    listing.add_argument("--kind", help="only scenarios of this kind (e.g. tool_use)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_scenarios_list)
    check = scenarios.add_parser("check", help="load a scenario, replay every oracle, print its task counts")
    check.add_argument("scenario", help="built-in name, scenario folder, or YAML file")
    check.set_defaults(handler=_scenarios_check)

    rollout = commands.add_parser("rollout", help="roll out an agent and append trajectories to a JSONL file")
    rollout.add_argument("--scenario", required=True, help="built-in name, scenario folder, or YAML file")
    rollout.add_argument("--agent", default="oracle", choices=["oracle", "noisy", "random"])
    rollout.add_argument("--split", default="train", choices=["train", "test"])
    rollout.add_argument("--episodes", type=int, default=20)
    rollout.add_argument("--seed", type=int, default=0)
    rollout.add_argument("--out", required=True, type=Path, help="JSONL file; finished episodes already in it are kept and skipped")
    rollout.add_argument("--summary-json", type=Path, help="also write the summary to this JSON file")
    rollout.add_argument("--noise", type=json.loads, default=None, metavar="JSON",
                         help='noisy agent rates, e.g. \'{"wrong_tool": 0.1, "premature_answer": 0.0}\'')
    rollout.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    rollout.set_defaults(handler=_rollout)
    return parser


def _scenario_row(scenario: Scenario) -> dict:
    return {
        "name": scenario.name,
        "kind": scenario.kind,
        "train_tasks": len(scenario.tasks_in("train")),
        "test_tasks": len(scenario.tasks_in("test")),
        "tools": list(scenario.tools),
        "description": " ".join(scenario.description.split()),
    }


def _scenarios_list(args: argparse.Namespace) -> int:
    rows = [_scenario_row(load_scenario(name)) for name in builtin_scenarios()]
    rows = [row for row in rows if args.kind in (None, row["kind"])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':<14}{'kind':<10}{'train':>6}{'test':>6}  description"
    print(header)
    for row in rows:
        description = row["description"][:70] + ("..." if len(row["description"]) > 70 else "")
        print(f"{row['name']:<14}{row['kind']:<10}{row['train_tasks']:>6}{row['test_tasks']:>6}  {description}")
    return 0


def _scenarios_check(args: argparse.Namespace) -> int:
    row = _scenario_row(load_scenario(args.scenario))
    print(f"ok: {row['name']} ({row['kind']}): {row['train_tasks']} train and {row['test_tasks']} test tasks, "
          f"every oracle succeeds; tools: {', '.join(row['tools'])}")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    if args.episodes <= 0:
        print("error: --episodes must be positive", file=sys.stderr)
        return 2
    scenario = load_scenario(args.scenario)
    make_agent = _agent_factory(args, scenario)
    summary = run_rollouts(scenario, make_agent, args.split, args.episodes, args.seed, args.out,
                           progress=not args.no_progress)
    if summary.resumed_episodes:
        print(f"{summary.resumed_episodes} episode(s) were already in {args.out} and were kept.")
    print(summary.table())
    print(f"trajectories: {args.out}")
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(summary.model_dump_json(indent=2) + "\n")
    return 0


def _agent_factory(args: argparse.Namespace, scenario: Scenario) -> Callable[[], Agent]:
    if args.agent == "oracle":
        return lambda: OracleAgent(scenario)
    if args.agent == "noisy":
        rates = NoiseRates.model_validate(args.noise or {})
        return lambda: NoisyOracleAgent(scenario, rates, seed=args.seed)
    return lambda: RandomAgent(seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
