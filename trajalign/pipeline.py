"""`trajalign run`: the whole job in one command, from a tiny model to a table of held-out results.

Stages, each writing into the run directory and each skipped when its output is already complete,
so an interrupted run continues where it stopped:

    base-model/           a tiny model built offline for the scenario (or `model.path`)
    sft-data.jsonl        scripted (oracle or noisy-oracle) trajectories of the train tasks
    sft/                  supervised fine-tuning on their successes        -> the SFT policy
    rollouts-greedy.jsonl with rollouts.greedy_probe: one greedy episode per train task
    rollouts.jsonl        the SFT policy sampled on the train tasks (with the probe: those greedy failed)
    expert.jsonl          the oracle on the same tasks
    pairs-outcome.jsonl   outcome pairs: successes and oracle trajectories against failed rollouts (greedy ones
                          with rollouts.greedy_probe)
    pairs-branch.jsonl    branch pairs: per-state Monte-Carlo credit from the rollouts' states
    train-<algo>/         preference training of the SFT policy, one run per algorithm
    eval-<name>.jsonl     greedy episodes on the test tasks, per model
    results.json, .md     the table: SFT against each algorithm (config.yaml: the settings it came from)
    stages.json           the settings each output was made with: a rerun with other settings stops with an
                          error naming what changed and what to delete, instead of reusing stale outputs

With `ray.workers` set (or `trajalign run --workers N`), the rollouts, expert and SFT data,
branching and evaluation run on Ray actors with the same results; with `ray.train_workers`, the
preference training runs on Ray Train (docs/ray.md).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trajalign.agents import NoiseRates, NoisyOracleAgent, OracleAgent, run_rollouts
from trajalign.agents.rollout import agent_player, episode_plan, record_rollouts
from trajalign.agents.sft import RESUMABLE_CHANGES as SFT_RESUMABLE
from trajalign.agents.sft import SFTConfig
from trajalign.alignment.builders import Anchor
from trajalign.alignment.losses import ALGORITHMS, LossConfig
from trajalign.alignment.trainer import RESUMABLE_CHANGES as TRAIN_RESUMABLE
from trajalign.alignment.trainer import TrainConfig, TrainResult
from trajalign.envs import Scenario, ScenarioError, load_scenario
from trajalign.envs.scenario import fresh_instances
from trajalign.envs.jsonl import atomic_jsonl, read_jsonl
from trajalign.envs.trajectory import Trajectory
from trajalign.stages import StageLedger

PairKind = Literal["outcome", "branch", "both"]
# ETO and DMPO train on whole-trajectory outcome pairs; step-wise training needs per-state pairs.
DEFAULT_PAIRS: dict[str, PairKind] = {"dpo": "outcome", "dmpo": "outcome", "ipo": "outcome", "simpo": "outcome",
                                      "stepwise": "branch"}


class PipelineError(ValueError):
    """The pipeline's configuration cannot be used."""


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Settings):
    path: Path | None = Field(None, description="Start from this model directory instead of building a tiny one.")
    size: Literal["tiny", "small"] = "tiny"
    architecture: Literal["llama", "qwen2", "gpt2"] = "llama"
    seed: int = 0
    max_positions: int | None = Field(None, ge=64, description="Longest sequence the model reads; None: the tiny "
                                      "builder's 2048. Web episodes need about 8192.")
    corpus_tasks: int | None = Field(None, gt=0, description="Train tasks whose oracle episodes train the tokenizer; "
                                     "None: all (on a web scenario each one drives Chromium).")


class SFTSettings(_Settings):
    enabled: bool = Field(True, description="False: the model is already fine-tuned; use it as the SFT policy.")
    data: Literal["oracle", "noisy"] = Field("noisy", description="The scripted agent whose successes are imitated.")
    episodes: int | None = Field(None, gt=0, description="Scripted episodes; default: 4 per train task.")
    noise: NoiseRates = Field(default_factory=NoiseRates)
    config: SFTConfig = Field(default_factory=lambda: SFTConfig(learning_rate=5e-3, epochs=3, max_seconds=360))


class SamplingSettings(_Settings):
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(96, gt=0)
    batch_size: int = Field(16, gt=0, description="Environments stepped together.")


class RolloutSettings(SamplingSettings):
    tasks: int | None = Field(None, gt=0, description="Train tasks to roll out on; default: all.")
    samples_per_task: int = Field(2, gt=0)
    swap_names: bool = Field(False, description="Explore on copies of the train tasks with their names swapped for "
                             "fresh ones (the scenario's name_swaps): rollouts, expert episodes and branching meet "
                             "names the SFT policy never trained on, as held-out tasks do.")
    fresh_seed: int | None = Field(None, description="Explore on fresh instances of the train groups instead of "
                                   "the train tasks: the scenario's task generator run with this seed (not its "
                                   "own) gives other files, people and values, which the SFT policy cannot have "
                                   "memorized. Needs a generator-based tool-use scenario.")
    greedy_probe: bool = Field(False, description="First play each task once greedily, as evaluation decodes, and "
                               "sample samples_per_task episodes only of the tasks that failed; outcome pairs then "
                               "reject the greedy failures (chosen: a sampled success), not sampled slips that "
                               "greedy decoding would not make.")


class PairSettings(_Settings):
    expert: bool = Field(True, description="Outcome pairs may take the oracle's trajectory as the chosen side.")
    max_pairs_per_task: int | None = Field(4, gt=0)
    anchor: Anchor = Field("divergence", description="Outcome pairs: branch where the two episodes first differ "
                           "(shared opening actions join the prefix), or at the goal (start), as ETO and DMPO do.")
    branch_samples: int = Field(4, gt=1, description="N: continuations sampled at each branch state.")
    tau: float = Field(0.5, ge=0, description="Minimum Q̂ gap between the two sides of a branch pair.")
    states_per_trajectory: int = Field(2, gt=0, description="Branch states sampled per failed rollout.")
    branch_trajectories: int | None = Field(200, gt=0, description="Rollouts to branch from (failed ones first).")


class AlgorithmSettings(_Settings):
    algo: Literal[ALGORITHMS]  # type: ignore[valid-type]
    pairs: PairKind | None = Field(None, description="Which pairs to train on; default: DEFAULT_PAIRS[algo].")
    loss: dict[str, Any] = Field(default_factory=dict, description="LossConfig overrides (beta, gamma, alpha, ...).")

    @property
    def pair_kind(self) -> PairKind:
        return self.pairs or DEFAULT_PAIRS[self.algo]

    def loss_config(self) -> LossConfig:
        return LossConfig(algo=self.algo, **self.loss)


class TrainSettings(_Settings):
    algorithms: list[AlgorithmSettings] = Field(
        default_factory=lambda: [AlgorithmSettings(algo=algo) for algo in ("dpo", "dmpo", "stepwise")])
    config: TrainConfig = Field(default_factory=lambda: TrainConfig(learning_rate=2e-4, epochs=2, max_seconds=240))

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        # `algorithms: [dpo, stepwise]` is short for [{algo: dpo}, {algo: stepwise}].
        if isinstance(data, dict) and isinstance(data.get("algorithms"), list):
            data = {**data, "algorithms": [{"algo": a} if isinstance(a, str) else a for a in data["algorithms"]]}
        return data


class EvalSettings(SamplingSettings):
    temperature: float = Field(0.0, ge=0, description="0: greedy, as the benchmarks report.")
    episodes: int | None = Field(None, gt=0, description="Test tasks; default: all.")
    include_base: bool = Field(False, description="Also evaluate the model before SFT.")


class RaySettings(_Settings):
    """Where the heavy stages run: in this process (the default), or on Ray (docs/ray.md)."""

    workers: int | None = Field(None, ge=1, description="Ray actors for rollouts, branching and evaluation; "
                                                        "None: in this process.")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    train_workers: int | None = Field(None, ge=1, description="Ray Train (DDP) workers for preference training; "
                                                              "None: in this process.")
    train_cpus_per_worker: float = Field(1.0, gt=0)
    train_gpus_per_worker: float = Field(0.0, ge=0)

    def worker_settings(self) -> Any:
        from trajalign.ray_rollouts import WorkerSettings

        return WorkerSettings(workers=self.workers or 1, cpus_per_worker=self.cpus_per_worker,
                              gpus_per_worker=self.gpus_per_worker)


class RunConfig(_Settings):
    out: Path = Path("runs/pipeline")
    scenario: str = Field("filesystem", description="Built-in name, scenario folder, or YAML file.")
    seed: int = Field(0, description="Seeds the rollouts, pairs and preference training.")
    model: ModelSettings = Field(default_factory=ModelSettings)
    sft: SFTSettings = Field(default_factory=SFTSettings)
    rollouts: RolloutSettings = Field(default_factory=RolloutSettings)
    pairs: PairSettings = Field(default_factory=PairSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    ray: RaySettings = Field(default_factory=RaySettings)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A `RunConfig` from a YAML file (or the defaults), with `overrides` applied on top; errors name the field."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise PipelineError(f"no config file {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise PipelineError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise PipelineError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        # A section given on the command line updates the file's section instead of replacing it.
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(config)'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise PipelineError(f"{where}{problems}") from None


class ModelResult(BaseModel):
    name: str
    model_path: str
    success_rate: float
    mean_reward: float
    episodes: int
    status_counts: dict[str, int]
    pairs: int | None = None


class PipelineResult(BaseModel):
    scenario: str
    seed: int
    rows: list[ModelResult]
    stage_seconds: dict[str, float]
    pair_counts: dict[str, int]

    def table(self) -> str:
        lines = ["| model | test success | mean reward | episodes | pairs |", "|---|---|---|---|---|"]
        for row in self.rows:
            pairs = "" if row.pairs is None else str(row.pairs)
            lines.append(f"| {row.name} | {row.success_rate:.1%} | {row.mean_reward:.3f} | {row.episodes} | {pairs} |")
        return "\n".join(lines)


# ---- the pipeline --------------------------------------------------------------------------------


def run_pipeline(config: RunConfig, progress: bool = True, log: Callable[[str], None] = print) -> PipelineResult:
    from trajalign.agents.evaluate import evaluate_policy
    from trajalign.agents.llm import LLMPolicy, SamplingConfig
    from trajalign.agents.sft import train_sft
    from trajalign.agents.tiny import build_tiny_model
    from trajalign.alignment.trainer import train_preferences

    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario(config.scenario)
    if config.rollouts.swap_names and scenario.name_swaps is None:
        raise PipelineError(f"rollouts.swap_names needs a scenario with name_swaps (scenario.yaml); "
                            f"'{scenario.name}' has none")
    explored = _exploration_scenario(scenario, config, log)
    scenario_paths = {scenario.name: scenario.file}
    seconds: dict[str, float] = {}

    def stage(name: str) -> _Stage:
        return _Stage(name, seconds, log)

    def policy(model_dir: Path, sampling: SamplingSettings, seed: int) -> LLMPolicy:
        return LLMPolicy.from_pretrained(model_dir, SamplingConfig(
            temperature=sampling.temperature, top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens, seed=seed))

    on_ray = config.ray.workers is not None  # rollouts, branching and evaluation on Ray actors
    ledger = StageLedger(out)  # a rerun with other settings stops instead of reusing stale outputs
    ledger.note_input("scenario", _scenario_identity(scenario))

    # -- 1. the starting model
    with stage("model"):
        if config.model.path is not None:
            base, base_stage = config.model.path, "model"
            ledger.note_input(base_stage, _model_identity(base))
        else:
            base, base_stage = out / "base-model", "base-model"
            ledger.check_and_record(base, _recorded(config.model, "path"), "scenario")
            if not (base / "config.json").is_file():
                build_tiny_model([scenario], base, size=config.model.size, seed=config.model.seed,
                                 architecture=config.model.architecture,
                                 max_tasks_per_scenario=config.model.corpus_tasks,
                                 max_positions=config.model.max_positions)

    # -- 2. SFT on scripted successes
    if config.sft.enabled:
        with stage("sft data"):
            sft_data = out / "sft-data.jsonl"
            episodes = config.sft.episodes or 4 * len(scenario.tasks_in("train"))
            ledger.check_and_record(sft_data, {
                "data": config.sft.data, "episodes": episodes, "seed": config.model.seed,
                **({"noise": config.sft.noise.model_dump()} if config.sft.data == "noisy" else {})}, "scenario")
            if on_ray:
                from trajalign.ray_rollouts import AgentSpec, ray_run_rollouts

                ray_run_rollouts(scenario, AgentSpec(agent=config.sft.data, seed=config.model.seed,
                                                     noise=config.sft.noise), "train", episodes, config.model.seed,
                                 sft_data, config.ray.worker_settings(), progress=progress)
            else:
                run_rollouts(scenario, _scripted(scenario, config.sft.data, config.sft.noise, config.model.seed),
                             "train", episodes, config.model.seed, sft_data, progress=progress)
        with stage("sft"):
            # A finished run is kept as it is, even if it stopped at its time budget: later stages used it.
            sft_model = out / "sft" / "model"
            sft_finished = _finished(out / "sft")
            ledger.check_and_record(out / "sft", _recorded(config.sft.config), base_stage, sft_data.name,
                                    free=() if sft_finished else SFT_RESUMABLE)
            if not sft_finished:
                train_sft(base, sft_data, out / "sft", config.sft.config, scenario_paths, progress=progress)
    else:
        sft_data, sft_model = None, base
    policy_stage = "sft" if config.sft.enabled else base_stage

    # A run without algorithms fine-tunes and evaluates only.
    trained: list[_Candidate] = []
    pair_counts: dict[str, int] = {}
    if config.train.algorithms:
        # -- 3. the SFT policy's own attempts at the train tasks
        def record(plan: list[tuple[str, int]], path: Path, sampling: SamplingSettings) -> tuple[Any, list[Trajectory]]:
            """Play the plan with the SFT policy (on Ray actors or here); returns the policy and the episodes."""
            if on_ray:
                from trajalign.ray_rollouts import ray_record_rollouts

                spec = _llm_spec(sft_model, sampling, config.seed)
                return spec, ray_record_rollouts(explored, "train", plan, path, spec, config.ray.worker_settings(),
                                                 progress=progress)[1]
            player = policy(sft_model, sampling, config.seed)
            return player, record_rollouts(explored, "train", plan, path, player.name,
                                           _llm_player(player, explored, "train", config.rollouts.batch_size),
                                           progress=progress)[1]

        with stage("rollouts"):
            train_tasks = explored.tasks_in("train")[: config.rollouts.tasks]
            sampled_tasks, greedy = train_tasks, []
            rollout_settings = {**_recorded(config.rollouts, "tasks"), "tasks": len(train_tasks), "seed": config.seed}
            rollout_inputs = ["scenario", policy_stage]
            if config.rollouts.greedy_probe:
                greedy_settings = {k: v for k, v in rollout_settings.items() if k not in ("temperature", "top_p")}
                ledger.check_and_record(out / "rollouts-greedy.jsonl", greedy_settings, *rollout_inputs)
                rollout_inputs.append("rollouts-greedy.jsonl")
                # A seed past all the sampled plan can use: branching seeds continuations by (task, episode seed).
                probe_seed = config.seed + len(train_tasks) * config.rollouts.samples_per_task
                _, greedy = record([(task.id, probe_seed) for task in train_tasks], out / "rollouts-greedy.jsonl",
                                   config.rollouts.model_copy(update={"temperature": 0.0}))
                failed = {trajectory.task_id for trajectory in greedy if not trajectory.success}
                sampled_tasks = [task for task in train_tasks if task.id in failed]
                log(f"   greedy probe: {len(failed)} of {len(train_tasks)} tasks failed; sampling those")
            plan = episode_plan(sampled_tasks, len(sampled_tasks) * config.rollouts.samples_per_task, config.seed)
            ledger.check_and_record(out / "rollouts.jsonl", rollout_settings, *rollout_inputs)
            sampler, sampled = record(plan, out / "rollouts.jsonl", config.rollouts)
            if config.rollouts.greedy_probe:  # pairs reject only what greedy decoding did, never a sampled slip
                outcome_sources = greedy + [t for t in sampled if t.success]
                branch_sources = [t for t in greedy if not t.success]
            else:
                outcome_sources = branch_sources = sampled

        # -- 4. preference pairs
        kinds = {settings.pair_kind for settings in config.train.algorithms}
        pair_files: dict[str, Path] = {}
        if kinds & {"outcome", "both"}:
            with stage("outcome pairs"):
                from trajalign.alignment.builders import outcome_pairs

                expert: list[Trajectory] = []
                outcome_inputs = rollout_inputs + ["rollouts.jsonl"]
                if config.pairs.expert:  # the ETO construction: expert trajectories against the policy's failures
                    expert_file = out / "expert.jsonl"
                    ledger.check_and_record(expert_file, {
                        "tasks": len(train_tasks), "fresh_seed": config.rollouts.fresh_seed,
                        "swap_names": config.rollouts.swap_names, "seed": config.seed}, "scenario")
                    outcome_inputs.append(expert_file.name)
                    oracle = OracleAgent(explored)
                    expert_plan = [(task.id, config.seed) for task in train_tasks]
                    if on_ray:
                        from trajalign.ray_rollouts import AgentSpec, ray_record_rollouts

                        ray_record_rollouts(explored, "train", expert_plan, expert_file, AgentSpec(agent="oracle"),
                                            config.ray.worker_settings(), progress=progress)
                    else:
                        record_rollouts(explored, "train", expert_plan, expert_file, oracle.name,
                                        agent_player(explored, oracle, "train"), progress=progress)
                    expert = read_jsonl(expert_file, Trajectory)
                pair_files["outcome"] = out / "pairs-outcome.jsonl"
                ledger.check_and_record(pair_files["outcome"], {**_recorded(config.pairs, *_BRANCH_PAIR_FIELDS),
                                                                "seed": config.seed}, *outcome_inputs)
                pair_counts["outcome"] = _write_once(pair_files["outcome"], lambda: outcome_pairs(
                    outcome_sources, expert=expert, max_pairs_per_task=config.pairs.max_pairs_per_task,
                    seed=config.seed, anchor=config.pairs.anchor))
        if kinds & {"branch", "both"}:
            with stage("branch pairs"):
                pair_files["branch"] = out / "pairs-branch.jsonl"
                ledger.check_and_record(pair_files["branch"], {**_recorded(config.pairs, *_OUTCOME_PAIR_FIELDS),
                                                               "seed": config.seed}, *rollout_inputs, "rollouts.jsonl")
                pair_counts["branch"] = _write_once(pair_files["branch"], lambda: _branch_pairs(
                    config, explored, sampler, branch_sources, progress))

        # -- 5. preference training, one run per algorithm
        for settings in config.train.algorithms:
            name = settings.algo if settings.pairs is None else f"{settings.algo}-{settings.pairs}"
            files = [pair_files[kind] for kind in _kinds(settings.pair_kind) if pair_counts.get(kind, 0)]
            if not any(pair_counts.get(kind, 0) for kind in _kinds(settings.pair_kind)):
                log(f"   {name}: no {settings.pair_kind} pairs to train on; skipped (the SFT policy's rollouts gave no "
                    "preference: more rollouts, more branch samples or a lower tau give some)")
                continue
            with stage(f"train {name}"):
                train_config = config.train.config.model_copy(update={"loss": settings.loss_config(), "seed": config.seed})
                run_dir = out / f"train-{name}"
                finished = _finished(run_dir)
                ledger.check_and_record(run_dir, {**_recorded(train_config), "pairs": settings.pair_kind},
                                        policy_stage, *(path.name for path in files),
                                        free=() if finished else TRAIN_RESUMABLE)
                if finished:
                    result = TrainResult.model_validate_json((run_dir / "result.json").read_text(encoding="utf-8"))
                elif config.ray.train_workers is not None:
                    from trajalign.ray_train import train_preferences_on_ray

                    result = train_preferences_on_ray(
                        sft_model, files, run_dir, train_config, scenario_paths, workers=config.ray.train_workers,
                        cpus_per_worker=config.ray.train_cpus_per_worker,
                        gpus_per_worker=config.ray.train_gpus_per_worker, progress=progress)
                else:
                    result = train_preferences(sft_model, files, run_dir, train_config, scenario_paths,
                                               progress=progress)
            trained.append(_Candidate(name, run_dir.name, Path(result.model_path), result.counts.train))

    # -- 6. held-out evaluation
    models = [_Candidate("base", base_stage, base)] if config.eval.include_base and config.sft.enabled else []
    models += [_Candidate("sft", policy_stage, sft_model), *trained]
    rows = []
    for name, stage_name, model_dir, pairs in models:
        with stage(f"eval {name}"):
            test_episodes = config.eval.episodes or len(scenario.tasks_in("test"))
            # The first tasks of the test plan stay the same for any episode count, so a count may change.
            ledger.check_and_record(out / f"eval-{name}.jsonl", {**_recorded(config.eval), "seed": config.seed},
                                    "scenario", stage_name)
            if on_ray:
                from trajalign.ray_rollouts import ray_evaluate

                summary, _ = ray_evaluate(_llm_spec(model_dir, config.eval, config.seed), scenario, "test",
                                          test_episodes, 1, config.seed, out / f"eval-{name}.jsonl",
                                          config.ray.worker_settings(), progress)
            else:
                summary, _ = evaluate_policy(policy(model_dir, config.eval, config.seed), scenario, "test",
                                             test_episodes, 1, config.seed, out / f"eval-{name}.jsonl",
                                             config.eval.batch_size, progress)
        rows.append(ModelResult(name=name, model_path=str(model_dir), success_rate=summary.success_rate,
                                mean_reward=summary.mean_reward, episodes=summary.episodes,
                                status_counts=summary.status_counts, pairs=pairs))
    result = PipelineResult(scenario=scenario.name, seed=config.seed, rows=rows, stage_seconds=seconds,
                            pair_counts=pair_counts)
    # Written last: a run stopped by a stale output leaves the config of the results in place.
    (out / "config.yaml").write_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
    (out / "results.json").write_text(result.model_dump_json(indent=2) + "\n")
    (out / "results.md").write_text(result.table() + "\n")
    log(result.table())
    return result


class _Stage:
    """Times a stage and says when it starts and ends."""

    def __init__(self, name: str, seconds: dict[str, float], log: Callable[[str], None]):
        self.name, self.seconds, self.log = name, seconds, log

    def __enter__(self) -> None:
        self.log(f"== {self.name}")
        self.started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self.seconds[self.name] = time.perf_counter() - self.started
        if exc_info[0] is None:
            self.log(f"   {self.name}: {self.seconds[self.name]:.1f}s")


class _Candidate(NamedTuple):
    """A model the table evaluates."""

    name: str
    stage: str  # the stage or input that made it (stages.json)
    path: Path
    pairs: int | None = None  # train pairs, for preference-trained models


# Fields that do not change what a stage makes (how much to compute at once, how often to log and
# save, where, which models to evaluate, how many test tasks: the test plan's first tasks stay the
# same). Every other field is recorded in stages.json. The trainers resume with these changed too, and
# an unfinished trainer run also with its other resumable changes (a new budget or length).
_UNRECORDED: dict[type[BaseModel], frozenset[str]] = {
    RolloutSettings: frozenset({"batch_size"}),
    EvalSettings: frozenset({"batch_size", "episodes", "include_base"}),
    SFTConfig: frozenset({"eval_every", "save_every", "device"}),
    TrainConfig: frozenset({"eval_every", "save_every", "device"}),
}
_OUTCOME_PAIR_FIELDS = ("expert", "max_pairs_per_task", "anchor")
_BRANCH_PAIR_FIELDS = ("branch_samples", "tau", "states_per_trajectory", "branch_trajectories")


def _recorded(settings: BaseModel, *exclude: str) -> dict[str, Any]:
    """The settings a stage is recorded with: all but the unrecorded ones."""
    return settings.model_dump(mode="json", exclude=_UNRECORDED.get(type(settings), frozenset()) | set(exclude))


def _scenario_identity(scenario: Scenario) -> dict[str, Any]:
    tasks = hashlib.sha256("\n".join(task.model_dump_json() for task in scenario.tasks).encode()).hexdigest()
    file = hashlib.sha256(scenario.file.read_bytes()).hexdigest() if scenario.file is not None else None
    return {"name": scenario.name, "tasks": tasks[:16], "file": file and file[:16]}


def _model_identity(model_dir: Path) -> dict[str, Any]:
    """A model given from outside, by the content of its files: a rebuild in place changes it, a copy or
    a move does not. Files past 64 MiB (large weights) are known by their size and first and last MiB."""
    identity = {}
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest = hashlib.sha256(str(path.stat().st_size).encode())
        with open(path, "rb") as file:
            if path.stat().st_size <= 64 << 20:
                digest.update(file.read())
            else:
                digest.update(file.read(1 << 20))
                file.seek(-(1 << 20), 2)
                digest.update(file.read())
        identity[str(path.relative_to(model_dir))] = digest.hexdigest()[:16]
    return identity


def _kinds(kind: PairKind) -> tuple[str, ...]:
    return ("outcome", "branch") if kind == "both" else (kind,)


def _finished(run_dir: Path) -> bool:
    return (run_dir / "result.json").is_file() and (run_dir / "model" / "config.json").is_file()


def _exploration_scenario(scenario: Scenario, config: RunConfig, log: Callable[[str], None]) -> Scenario:
    """Where the SFT policy explores: the train tasks, or fresh instances of their groups, with names as
    they are or swapped."""
    explored = scenario
    if config.rollouts.fresh_seed is not None:
        try:
            explored = fresh_instances(scenario, config.rollouts.fresh_seed)
        except ScenarioError as exc:
            raise PipelineError(f"rollouts.fresh_seed: {exc}") from None
        log(f"   exploring {len(explored.tasks)} fresh instances of the train groups "
            f"(generator seed {config.rollouts.fresh_seed})")
    if config.rollouts.swap_names:
        from trajalign.agents.augment import name_swapped_scenario

        explored, dropped = name_swapped_scenario(explored, "train", seed=config.seed)
        log(f"   exploring {len(explored.tasks)} train tasks with swapped names"
            + (f" ({dropped} dropped: a swap broke their oracle)" if dropped else ""))
    return explored


def _scripted(scenario: Scenario, kind: str, noise: NoiseRates, seed: int) -> Callable[[], Any]:
    if kind == "oracle":
        return lambda: OracleAgent(scenario)
    return lambda: NoisyOracleAgent(scenario, noise, seed=seed)


def _llm_spec(model_dir: Path, sampling: SamplingSettings, seed: int) -> Any:
    """What each Ray actor loads: the policy `run_pipeline`'s `policy()` loads in this process."""
    from trajalign.ray_rollouts import AgentSpec

    return AgentSpec(agent=str(model_dir), batch_size=sampling.batch_size,
                     sampling={"temperature": sampling.temperature, "top_p": sampling.top_p,
                               "max_new_tokens": sampling.max_new_tokens, "seed": seed})


def _llm_player(policy: Any, scenario: Scenario, split: str, batch_size: int) -> Callable[..., Iterator[Trajectory]]:
    from trajalign.agents.llm_rollout import play_llm_episodes

    return lambda todo: play_llm_episodes(policy, scenario, split, todo, batch_size)


def _write_once(path: Path, build: Callable[[], Iterable[BaseModel]]) -> int:
    """Write the records to `path` unless a previous run completed it; returns the number of records.

    Records go to a staging file first, so an interrupted build is redone rather than half-used.
    """
    if path.is_file():
        return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    with atomic_jsonl(path) as writer:
        for record in build():
            writer.write(record)
    return writer.written


def _branch_pairs(config: RunConfig, scenario: Scenario, policy: Any, rollouts: list[Trajectory],
                  progress: bool) -> Iterator[BaseModel]:
    """Branch from the failed rollouts first: their states are where a better action changes the outcome.

    With the greedy probe, `rollouts` are the failed greedy episodes, and each pair's rejected side is
    the greedy episode's own continuation: what greedy decoding did at the branch state."""
    from trajalign.alignment.builders import branch_pairs

    ordered = sorted(rollouts, key=lambda t: (t.success, t.task_id, t.seed or 0))[: config.pairs.branch_trajectories]
    options = {"samples": config.pairs.branch_samples, "tau": config.pairs.tau, "seed": config.seed,
               "max_states_per_trajectory": config.pairs.states_per_trajectory,
               "against_recorded": config.rollouts.greedy_probe}
    if config.ray.workers is not None:  # `policy` is then the AgentSpec each actor loads
        from trajalign.ray_rollouts import ray_branch_pairs

        return ray_branch_pairs(ordered, scenario, policy, config.ray.worker_settings(), progress=progress, **options)
    return branch_pairs(ordered, scenario, policy=policy, batch_size=config.rollouts.batch_size, progress=progress,
                        **options)


__all__ = ["DEFAULT_PAIRS", "PipelineError", "PipelineResult", "RaySettings", "RunConfig", "load_config",
           "run_pipeline"]
