"""The `trajalign` command line (also `python -m trajalign`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from trajalign.agents import Agent, NoiseRates, NoisyOracleAgent, OracleAgent, RandomAgent, run_rollouts
from trajalign.agents.rollout import Player, episode_plan, record_rollouts
from trajalign.envs import Scenario, ScenarioError, builtin_scenarios, load_scenario
from trajalign.pairs_cli import add_pairs_commands
from trajalign.ray_cluster import WorkerError, add_worker_arguments, check_worker_arguments


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WorkerError as exc:  # Ray workers (--workers) failed beyond what retries fix
        print(f"error: {exc}", file=sys.stderr)
        return 1


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
    rollout.add_argument("--task", help="with --scenario miniwob: the MiniWoB++ task, e.g. click-test "
                         "(see `trajalign scenarios list --kind miniwob`)")
    rollout.add_argument("--agent", default="oracle", metavar="oracle|noisy|random|MODEL_DIR",
                         help="a scripted agent, or a Hugging Face model directory to sample actions from")
    rollout.add_argument("--split", default="train", choices=["train", "test"])
    rollout.add_argument("--episodes", type=int, default=20)
    rollout.add_argument("--seed", type=int, default=0)
    rollout.add_argument("--out", required=True, type=Path, help="JSONL file; finished episodes already in it are kept and skipped")
    rollout.add_argument("--summary-json", type=Path, help="also write the summary to this JSON file")
    rollout.add_argument("--noise", type=json.loads, default=None, metavar="JSON",
                         help='noisy agent rates, e.g. \'{"wrong_tool": 0.1, "premature_answer": 0.0}\'')
    rollout.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_model_arguments(rollout, default_temperature=1.0)
    add_worker_arguments(rollout)
    rollout.set_defaults(handler=_rollout)

    evaluate = commands.add_parser("eval", help="evaluate a model on held-out tasks: success, reward, pass^k")
    evaluate.add_argument("--model", required=True, type=Path, help="Hugging Face model directory")
    evaluate.add_argument("--scenario", required=True, help="built-in name, scenario folder, or YAML file")
    evaluate.add_argument("--split", default="test", choices=["train", "test"])
    evaluate.add_argument("--episodes", type=int, default=50, help="number of tasks")
    evaluate.add_argument("--samples", type=int, default=1, help="attempts per task; pass^k is reported for k = 1..samples")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--out", type=Path, help="also append the trajectories to this JSONL file")
    evaluate.add_argument("--summary-json", type=Path, help="also write the summary to this JSON file")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_model_arguments(evaluate, default_temperature=None)
    add_worker_arguments(evaluate)
    evaluate.set_defaults(handler=_eval)

    model = commands.add_parser("model", help="build local models").add_subparsers(dest="model_command", required=True)
    init = model.add_parser("init", help="train a tokenizer on scenarios and save a randomly initialized tiny model")
    init.add_argument("--scenario", action="append", required=True,
                      help="built-in name, scenario folder, or YAML file; repeat for several")
    init.add_argument("--out", required=True, type=Path, help="directory to save the model and tokenizer in")
    init.add_argument("--size", default="tiny", choices=["tiny", "small"])
    init.add_argument("--architecture", default="llama", choices=["llama", "qwen2", "gpt2"])
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--max-tasks", type=int, default=None, metavar="N",
                      help="train the tokenizer on at most N train tasks per scenario (default: all)")
    init.add_argument("--name-swap-tokens", action="store_true",
                      help="add the scenarios' name_swaps replacements to the tokenizer (for `trajalign augment` data)")
    init.add_argument("--no-prompt-tokens", action="store_true",
                      help="tokenize the system prompt as ordinary text instead of one token per line")
    init.set_defaults(handler=_model_init)

    sft = commands.add_parser("sft", help="fine-tune a model on trajectories (supervised, successful ones by default)")
    sft.add_argument("--model", required=True, type=Path, help="Hugging Face model directory to start from")
    sft.add_argument("--data", action="append", required=True, type=Path,
                     help="trajectory JSONL file; repeat for several")
    sft.add_argument("--out", required=True, type=Path,
                     help="run directory; running again with the same one resumes from its latest checkpoint")
    sft.add_argument("--epochs", type=int, help="passes over the training data (default 3)")
    sft.add_argument("--max-steps", type=int, help="optimizer steps; overrides --epochs")
    sft.add_argument("--lr", type=float, help="peak learning rate (default 1e-3; with muon, of embeddings and norms)")
    sft.add_argument("--optimizer", choices=["adamw", "muon"],
                     help="adamw (default), or muon on the hidden matrices and AdamW on the rest")
    sft.add_argument("--muon-lr", type=float, help="peak learning rate of the Muon matrices (default 0.02)")
    sft.add_argument("--batch-size", type=int, help="trajectories per optimizer step (default 8)")
    sft.add_argument("--micro-batch-size", type=int, help="trajectories per forward pass (default 4)")
    sft.add_argument("--max-minutes", type=float, help="stop, save and report after this many minutes")
    sft.add_argument("--seed", type=int, help="data order and dropout (default 0)")
    sft.add_argument("--scenario", action="append", default=[], metavar="PATH",
                     help="folder or YAML file of a scenario the data comes from that is not built in; repeat for several")
    sft.add_argument("--train-on-mistakes", action="store_true",
                     help="also imitate the turns a noisy oracle marked as its deliberate mistakes")
    sft.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sft.set_defaults(handler=_sft)

    augment = commands.add_parser("augment", help="copy SFT data with the scenario's task names swapped for fresh ones")
    augment.add_argument("--data", required=True, type=Path, help="trajectory JSONL file to copy")
    augment.add_argument("--scenario", required=True,
                         help="built-in scenario name, or folder or YAML file; its name_swaps lists the names")
    augment.add_argument("--copies", type=int, default=3, help="swapped copies per trajectory (default 3)")
    augment.add_argument("--seed", type=int, default=0, help="which replacements each copy gets (default 0)")
    augment.add_argument("--out", required=True, type=Path,
                         help="new JSONL file: each trajectory as recorded, then its copies")
    augment.set_defaults(handler=_augment)

    train = commands.add_parser("train", help="train a model on preference pairs (dpo, dmpo, stepwise, ipo, simpo)")
    train.add_argument("--model", required=True, type=Path, help="model directory to start from; also the reference")
    train.add_argument("--pairs", action="append", required=True, type=Path,
                       help="PreferencePair JSONL file; repeat for several")
    train.add_argument("--algo", default="stepwise", choices=["dpo", "dmpo", "stepwise", "ipo", "simpo"])
    train.add_argument("--out", required=True, type=Path,
                       help="run directory; running again with the same one resumes from its latest checkpoint")
    train.add_argument("--beta", type=float, help="inverse temperature of the implicit reward (default 0.1)")
    train.add_argument("--gamma", type=float, help="dmpo/stepwise discount of the occupancy weights, 0 < gamma <= 1")
    train.add_argument("--alpha", type=float, help="weight of the SFT term on chosen actions (default 0)")
    train.add_argument("--value-weighted", action="store_true", help="stepwise: weight pairs by their value gap")
    train.add_argument("--epochs", type=int, help="passes over the pairs (default 2)")
    train.add_argument("--max-steps", type=int, help="optimizer steps; overrides --epochs")
    train.add_argument("--lr", type=float, help="peak learning rate (default 2e-4)")
    train.add_argument("--batch-size", type=int, help="pairs per optimizer step (default 16)")
    train.add_argument("--micro-batch-size", type=int, help="pairs per forward pass (default 4)")
    train.add_argument("--max-minutes", type=float, help="stop, save and report after this many minutes")
    train.add_argument("--no-shared-prefix", action="store_true",
                       help="score each side as its own sequence instead of computing the shared prefix once")
    train.add_argument("--seed", type=int, help="data order and dropout (default 0)")
    train.add_argument("--scenario", action="append", default=[], metavar="PATH",
                       help="folder or YAML file of a scenario the pairs come from that is not built in")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_worker_arguments(train, "Train workers (DDP: gloo on CPU, nccl on GPU)")
    train.add_argument("--max-failures", type=int, default=3,
                       help="with --workers: worker-group restarts (from the last checkpoint) before giving up")
    train.set_defaults(handler=_train)
    add_pairs_commands(commands)

    run = commands.add_parser("run", help="the whole job: tiny model, SFT, rollouts, pairs, preference training, eval")
    run.add_argument("--config", type=Path, help="YAML file of settings (see docs/alignment.md); default: the small default")
    run.add_argument("--out", type=Path, help="run directory (overrides the config's `out`)")
    run.add_argument("--scenario", help="scenario (overrides the config's `scenario`)")
    run.add_argument("--seed", type=int, help="seed of rollouts, pairs and training (overrides the config's `seed`)")
    run.add_argument("--algorithms", type=lambda text: text.split(","), metavar="A,B,...",
                     help="comma-separated algorithms to train side by side, e.g. dpo,dmpo,stepwise")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_worker_arguments(run, "actors for rollouts, branching and evaluation (overrides the config's `ray`)")
    run.set_defaults(handler=_run)

    baseline = commands.add_parser("baseline", help="non-LLM baselines on the same tasks").add_subparsers(
        dest="baseline_command", required=True)
    ppo = baseline.add_parser("ppo", help="RLlib PPO choosing among admissible actions (tool calls, or a web "
                                          "page's listed actions); evaluated on the test split like `trajalign "
                                          "eval` (docs/ray.md)")
    ppo.add_argument("--scenario", required=True, help="a tool-use or web scenario: built-in name, folder, or YAML "
                                                        "file")
    ppo.add_argument("--iterations", type=int, default=20, help="PPO training iterations")
    ppo.add_argument("--out", required=True, type=Path, help="run directory (metrics, checkpoint, test trajectories)")
    ppo.add_argument("--episodes", type=int, default=100, help="test tasks to evaluate on")
    ppo.add_argument("--train-batch-size", type=int, default=2000, help="env steps per iteration")
    ppo.add_argument("--lr", type=float, default=3e-4)
    ppo.add_argument("--max-candidates", type=int, default=32, help="admissible actions offered per step")
    ppo.add_argument("--shaping", type=float, default=1.0, help="potential-based reward shaping weight (0: off)")
    ppo.add_argument("--env-runners", type=int, default=1, help="RLlib env-runner actors (0: sample in the driver)")
    ppo.add_argument("--seed", type=int, default=0)
    ppo.add_argument("--summary-json", type=Path, help="also write the test summary to this JSON file")
    ppo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ppo.set_defaults(handler=_baseline_ppo)
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
    if args.kind == "miniwob":
        return _miniwob_list(args)
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


def _miniwob_list(args: argparse.Namespace) -> int:
    """The MiniWoB++ tasks that load and reset in Chromium (probed once per install, then cached)."""
    from trajalign.envs.miniwob import TEST_SEEDS, TRAIN_SEEDS, loadable_tasks

    rows = [{"name": f"miniwob/{task}", "kind": "miniwob", "train_tasks": TRAIN_SEEDS, "test_tasks": TEST_SEEDS,
             "tools": ["click", "type", "select", "scroll", "go_back", "answer"],
             "description": f"MiniWoB++ {task}; run with --scenario miniwob --task {task}"}
            for task in loadable_tasks()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(rows)} MiniWoB++ tasks load and reset; train/test count seeds")
    for row in rows:
        print(f"{row['name']:<36}{row['kind']:<10}{row['train_tasks']:>6}{row['test_tasks']:>6}")
    return 0


def _scenarios_check(args: argparse.Namespace) -> int:
    row = _scenario_row(load_scenario(args.scenario))
    print(f"ok: {row['name']} ({row['kind']}): {row['train_tasks']} train and {row['test_tasks']} test tasks, "
          f"every oracle succeeds; tools: {', '.join(row['tools'])}")
    return 0


def _add_model_arguments(parser: argparse.ArgumentParser, default_temperature: float | None) -> None:
    group = parser.add_argument_group("language-model agents")
    group.add_argument("--batch-size", type=int, default=8, help="environments stepped together (batched generation)")
    group.add_argument("--temperature", type=float, default=default_temperature,
                       help="0 is greedy" + ("" if default_temperature is not None else
                                             " (default: 0 with --samples 1, else 1.0)"))
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--max-new-tokens", type=int, default=96, help="an action is cut at this many tokens")
    group.add_argument("--no-cache-reuse", action="store_true",
                       help="recompute the whole conversation each turn instead of keeping its KV cache")


def _load_policy(model_dir: Path, args: argparse.Namespace, temperature: float) -> Any:
    # Imported here: torch and transformers take seconds to import and scripted agents do not need them.
    from trajalign.agents.llm import LLMPolicy, SamplingConfig

    sampling = SamplingConfig(temperature=temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                              seed=args.seed)
    return LLMPolicy.from_pretrained(model_dir, sampling, reuse_cache=not args.no_cache_reuse)


def _play_with_policy(policy: Any, scenario: Scenario, split: str, batch_size: int) -> Player:
    from trajalign.agents.llm_rollout import play_llm_episodes

    return lambda todo: play_llm_episodes(policy, scenario, split, todo, batch_size)


def _rollout_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario to roll out: a scenario by name or path, or a MiniWoB++ task (`--scenario miniwob --task T`)."""
    name = str(args.scenario)
    if args.task and name != "miniwob":
        raise ScenarioError("--task picks a MiniWoB++ task and needs --scenario miniwob")
    if name == "miniwob" or name.startswith("miniwob/"):
        from trajalign.envs.miniwob import miniwob_scenario

        task = args.task or name.removeprefix("miniwob/").removeprefix("miniwob")
        if not task:
            raise ScenarioError("--scenario miniwob needs --task NAME (see `trajalign scenarios list --kind miniwob`)")
        try:
            return miniwob_scenario(task)
        except (ValueError, RuntimeError) as exc:
            raise ScenarioError(str(exc)) from None
    return load_scenario(args.scenario)


def _rollout(args: argparse.Namespace) -> int:
    if args.episodes <= 0:
        print("error: --episodes must be positive", file=sys.stderr)
        return 2
    if (problem := check_worker_arguments(args)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    scenario = _rollout_scenario(args)
    if scenario.kind == "miniwob" and args.agent in ("oracle", "noisy"):
        print("error: MiniWoB++ tasks have no oracle solutions; use --agent random or a model directory",
              file=sys.stderr)
        return 2
    if args.workers is not None and (args.agent in SCRIPTED_AGENTS or Path(args.agent).is_dir()):
        from trajalign.ray_rollouts import ray_run_rollouts

        summary = ray_run_rollouts(scenario, _agent_spec(args, args.agent, args.temperature), args.split,
                                   args.episodes, args.seed, args.out, _worker_settings(args),
                                   progress=not args.no_progress)
    elif args.agent in SCRIPTED_AGENTS:
        summary = run_rollouts(scenario, _agent_factory(args, scenario), args.split, args.episodes, args.seed,
                               args.out, progress=not args.no_progress)
    elif Path(args.agent).is_dir():
        policy = _load_policy(Path(args.agent), args, args.temperature)
        plan = episode_plan(scenario.tasks_in(args.split), args.episodes, args.seed)
        summary, _ = record_rollouts(scenario, args.split, plan, args.out, policy.name,
                                     _play_with_policy(policy, scenario, args.split, args.batch_size),
                                     progress=not args.no_progress)
    else:
        print(f"error: --agent must be one of {', '.join(SCRIPTED_AGENTS)} or a model directory; "
              f"{args.agent!r} is neither", file=sys.stderr)
        return 2
    if summary.resumed_episodes:
        print(f"{summary.resumed_episodes} episode(s) were already in {args.out} and were kept.")
    print(summary.table())
    print(f"trajectories: {args.out}")
    _write_summary(args.summary_json, summary)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from trajalign.agents.evaluate import evaluate_policy

    if args.episodes <= 0 or args.samples <= 0:
        print("error: --episodes and --samples must be positive", file=sys.stderr)
        return 2
    scenario = load_scenario(args.scenario)
    temperature = args.temperature if args.temperature is not None else (0.0 if args.samples == 1 else 1.0)
    if temperature == 0 and args.samples > 1:
        print("warning: greedy decoding makes every sample of a task the same; pass^k then equals pass^1",
              file=sys.stderr)
    if (problem := check_worker_arguments(args)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.workers is not None:
        from trajalign.ray_rollouts import ray_evaluate

        if not (args.model / "config.json").is_file():
            print(f"error: {args.model} is not a Hugging Face model directory (no config.json)", file=sys.stderr)
            return 2
        result, _ = ray_evaluate(_agent_spec(args, str(args.model), temperature), scenario, args.split, args.episodes,
                                 args.samples, args.seed, args.out, _worker_settings(args),
                                 progress=not args.no_progress)
    else:
        policy = _load_policy(args.model, args, temperature)
        result, _ = evaluate_policy(policy, scenario, args.split, args.episodes, args.samples, args.seed, args.out,
                                    args.batch_size, progress=not args.no_progress)
    print(result.table())
    _write_summary(args.summary_json, result)
    return 0


def _write_summary(path: Path | None, summary: Any) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(summary.model_dump_json(indent=2) + "\n")


def _model_init(args: argparse.Namespace) -> int:
    if args.max_tasks is not None and args.max_tasks <= 0:
        print("error: --max-tasks must be positive", file=sys.stderr)
        return 2
    # Imported here: torch and transformers take seconds to import and only this command needs them.
    from trajalign.agents.tiny import build_tiny_model, read_model_info

    out = build_tiny_model(args.scenario, args.out, size=args.size, seed=args.seed, architecture=args.architecture,
                           max_tasks_per_scenario=args.max_tasks, prompt_tokens=not args.no_prompt_tokens,
                           name_swap_tokens=args.name_swap_tokens)
    info = read_model_info(out)
    print(f"model: {out}")
    print(f"architecture: {info['architecture']} ({info['size']}), {info['num_parameters']:,} parameters")
    print(f"vocab size: {info['vocab_size']} ({info['prompt_line_tokens']} of them system-prompt lines)")
    print(f"scenarios: {', '.join(info['scenarios'])}")
    return 0


def _sft(args: argparse.Namespace) -> int:
    # Imported here: torch and transformers take seconds to import and only this command needs them.
    from pydantic import ValidationError

    from trajalign.agents.sft import SFTConfig, SFTError, train_sft

    settings = {"epochs": args.epochs, "max_steps": args.max_steps, "learning_rate": args.lr,
                "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size, "seed": args.seed,
                "max_seconds": args.max_minutes * 60 if args.max_minutes is not None else None,
                "train_on_mistakes": args.train_on_mistakes or None, "optimizer": args.optimizer,
                "muon_learning_rate": args.muon_lr}
    try:
        config = SFTConfig(**{key: value for key, value in settings.items() if value is not None})
    except ValidationError as exc:
        return _settings_error(exc)
    scenario_paths = {load_scenario(path).name: path for path in args.scenario}
    try:
        result = train_sft(args.model, args.data, args.out, config, scenario_paths, progress=not args.no_progress)
    except SFTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = result.counts
    state = "complete" if result.complete else "stopped at the time limit; run again to continue"
    print(f"model: {result.model_path}")
    print(f"steps: {result.steps}/{result.total_steps} ({state}), {result.seconds:.1f}s, "
          f"{result.tokens_per_second:,.0f} tokens/s")
    print(f"data: {counts.train} train and {counts.val} validation trajectories ({counts.not_successful} not "
          f"successful, {counts.too_long} too long, {counts.bad_lines} bad lines skipped)")
    if result.final_train_loss is not None:
        print(f"train loss: {result.final_train_loss:.4f}")
    if result.final_val_loss is not None:
        print(f"val loss: {result.final_val_loss:.4f} (token accuracy {result.final_val_token_accuracy:.3f})")
    return 0


def _augment(args: argparse.Namespace) -> int:
    from trajalign.agents.augment import AugmentError, augment_file

    scenario = load_scenario(args.scenario)
    if scenario.name_swaps is None:
        print(f"error: scenario {scenario.name} has no name_swaps in its scenario.yaml, so there is nothing to swap "
              "(docs/scenarios.md)", file=sys.stderr)
        return 2
    try:
        counts = augment_file(args.data, args.out, scenario.name_swaps, args.copies, args.seed)
    except AugmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {counts.written} trajectories to {args.out}: {counts.records} as recorded and {counts.swapped} "
          f"copies with swapped names ({counts.without_names} mention no name and were not copied, "
          f"{counts.bad_lines} bad lines skipped)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from trajalign.alignment.trainer import TrainConfig, TrainError, train_preferences

    loss = {"algo": args.algo, "beta": args.beta, "gamma": args.gamma, "alpha": args.alpha,
            "value_weighted": args.value_weighted or None}
    settings = {"epochs": args.epochs, "max_steps": args.max_steps, "learning_rate": args.lr,
                "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size, "seed": args.seed,
                "shared_prefix": False if args.no_shared_prefix else None,
                "max_seconds": args.max_minutes * 60 if args.max_minutes is not None else None}
    try:
        config = TrainConfig(loss={key: value for key, value in loss.items() if value is not None},
                             **{key: value for key, value in settings.items() if value is not None})
    except ValidationError as exc:
        return _settings_error(exc)
    scenario_paths = {load_scenario(path).name: path for path in args.scenario}
    if (problem := check_worker_arguments(args)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.workers is not None:
            from trajalign.ray_train import train_preferences_on_ray

            result = train_preferences_on_ray(args.model, args.pairs, args.out, config, scenario_paths,
                                              workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                                              gpus_per_worker=args.gpus_per_worker, max_failures=args.max_failures,
                                              progress=not args.no_progress)
        else:
            result = train_preferences(args.model, args.pairs, args.out, config, scenario_paths,
                                       progress=not args.no_progress)
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = result.counts
    state = "complete" if result.complete else "stopped at the time limit; run again to continue"
    print(f"model: {result.model_path}")
    print(f"{result.algo}: {result.steps}/{result.total_steps} steps ({state}), {result.seconds:.1f}s, "
          f"{result.pairs_per_second:.1f} pairs/s")
    print(f"pairs: {counts.train} train and {counts.val} validation ({counts.bad_lines} bad lines, "
          f"{counts.too_long} too long skipped)")
    for name, metrics in (("train", result.final), ("validation", result.final_val or {})):
        prefix = "val_" if name == "validation" else ""
        if f"{prefix}loss" in metrics:
            print(f"{name}: loss {metrics[f'{prefix}loss']:.4f}, margin {metrics[f'{prefix}rewards/margins']:.4f}, "
                  f"accuracy {metrics[f'{prefix}rewards/accuracies']:.3f}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from trajalign.pipeline import PipelineError, load_config, run_pipeline

    overrides: dict[str, Any] = {"out": args.out, "scenario": args.scenario, "seed": args.seed}
    if (problem := check_worker_arguments(args)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.workers is not None:
        overrides["ray"] = {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker,
                            "gpus_per_worker": args.gpus_per_worker}
    try:
        config = load_config(args.config, overrides)
        if args.algorithms:
            config = load_config(None, {**config.model_dump(), "train": {
                **config.train.model_dump(), "algorithms": args.algorithms}})
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from trajalign.agents.sft import SFTError
    from trajalign.alignment.trainer import TrainError
    from trajalign.stages import StageLedgerError

    try:
        run_pipeline(config, progress=not args.no_progress)
    except (SFTError, TrainError, StageLedgerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"results: {config.out / 'results.md'}")
    return 0


def _baseline_ppo(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    scenario = load_scenario(args.scenario)
    # Imported here: Ray, RLlib and torch take seconds to import.
    from trajalign.baseline import PPOSettings, train_ppo_baseline
    from trajalign.ray_cluster import ray_session

    try:
        settings = PPOSettings(scenario=str(scenario.file), iterations=args.iterations, eval_episodes=args.episodes,
                               train_batch_size=args.train_batch_size, learning_rate=args.lr,
                               max_candidates=args.max_candidates, shaping=args.shaping, env_runners=args.env_runners,
                               minibatch_size=min(256, args.train_batch_size), seed=args.seed)
    except ValidationError as exc:
        return _settings_error(exc)
    with ray_session():
        result = train_ppo_baseline(settings, args.out, progress=not args.no_progress)
    print(result.test.table())
    print(f"random agent on the same episodes: success rate {result.random_test_success:.3f}")
    print(f"ppo: {result.iterations} iterations, {result.env_steps} env steps, {result.seconds:.0f}s; "
          f"checkpoint: {result.checkpoint}")
    _write_summary(args.summary_json, result.test)
    return 0


def _settings_error(exc: Any) -> int:
    error = exc.errors(include_url=False)[0]
    print(f"error: {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
    return 2


SCRIPTED_AGENTS = ("oracle", "noisy", "random")


def _agent_spec(args: argparse.Namespace, agent: str, temperature: float | None) -> Any:
    """What each Ray actor builds: the agent `_agent_factory` or `_load_policy` builds here."""
    from trajalign.ray_rollouts import AgentSpec

    sampling = {"top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    if temperature is not None:
        sampling["temperature"] = temperature
    return AgentSpec(agent=agent, seed=args.seed, noise=getattr(args, "noise", None), sampling=sampling,
                     reuse_cache=not args.no_cache_reuse, batch_size=args.batch_size)


def _worker_settings(args: argparse.Namespace) -> Any:
    from trajalign.ray_rollouts import WorkerSettings

    return WorkerSettings(workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                          gpus_per_worker=args.gpus_per_worker)


def _agent_factory(args: argparse.Namespace, scenario: Scenario) -> Callable[[], Agent]:
    if args.agent == "oracle":
        return lambda: OracleAgent(scenario)
    if args.agent == "noisy":
        rates = NoiseRates.model_validate(args.noise or {})
        return lambda: NoisyOracleAgent(scenario, rates, seed=args.seed)
    return lambda: RandomAgent(seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
