"""Rollouts, evaluation and branching on Ray actors (`--workers N`).

Each actor (`RolloutWorker`) holds the scenario, its environments and its own copy of the agent:
a scripted agent, or an `LLMPolicy` loaded from the model directory (on a GPU when the actor has
one). The driver keeps the queue of planned episodes and hands each idle actor the next few; an
actor streams every trajectory back as soon as it ends (a Ray streaming generator), and the
driver, and only the driver, writes it, through the same `record_rollouts` as the single-process
path: each finished trajectory is written exactly once and a rerun resumes. An LLM actor is sent
a batch's worth of episodes ahead of what each call returns, so its generation batch stays full
from one call to the next and only drains when the queue is empty.

Failures: the driver tracks which actor holds which episode. When an actor dies (killed, out of
memory, its node lost), the episodes it held are put at the front of the queue and played by another actor, and a new
actor replaces the dead one. Each episode is retried at most `max_retries` times; one that kills
its actor every time is recorded with status `env_error` (never silently dropped). The summary
reports worker failures and retried episodes.

Determinism: an episode's trajectory depends only on (task id, seed) and the agent: environments
reset deterministically, scripted agents seed themselves per episode, and `LLMPolicy` seeds each
row's sampling by its sample key, whatever batch it shares. So N workers give the trajectories one
process gives (timings aside), in whatever order they finish; returned lists are in plan order.

Branching (`pairs branch --workers N`) distributes the trajectories to branch from, a few per
call; a chunk's pairs come back together when all its continuations are done, and a chunk whose
actor dies is redone elsewhere. Pairs are released in the order of the input trajectories.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from trajalign.agents.base import Agent
from trajalign.agents.evaluate import EvalSummary, eval_plan, summarize_eval
from trajalign.agents.rollout import Episodes, RolloutSummary, agent_player, episode_plan, record_rollouts
from trajalign.agents.scripted import NoiseRates, NoisyOracleAgent, OracleAgent, RandomAgent
from trajalign.envs import Scenario, load_scenario
from trajalign.envs.scenario import Task
from trajalign.envs.trajectory import EpisodeTiming, Trajectory
from trajalign.ray_cluster import WorkerError, init_ray

SCRIPTED = ("oracle", "noisy", "random")


class WorkerSettings(BaseModel):
    """How many rollout actors, what each one reserves, and how failures are retried."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, ge=1, description="Rollout actors.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each actor reserves (fractions share a core).")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs each actor reserves; > 0 puts its policy on a GPU.")
    chunk_size: int | None = Field(None, gt=0, description="Episodes (or trajectories to branch from) per call to "
                                                            "an actor; default: an LLM actor's batch size, else "
                                                            "1/(workers + 1/2) of what is left.")
    max_retries: int = Field(3, ge=0, description="Times an episode is retried after its actor died.")
    max_worker_failures: int | None = Field(None, ge=0, description="Actor deaths tolerated before giving up; "
                                                                    "default 2 * workers + 2.")


class AgentSpec(BaseModel):
    """What each actor builds: a scripted agent, or an LLM policy from a model directory."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(description="oracle, noisy, random, or a Hugging Face model directory.")
    seed: int = Field(0, description="Seed of a scripted agent (noisy, random).")
    noise: NoiseRates | None = None
    sampling: dict[str, Any] = Field(default_factory=dict, description="`SamplingConfig` fields of an LLM policy "
                                                                       "(temperature, top_p, max_new_tokens, seed).")
    reuse_cache: bool = True
    batch_size: int = Field(8, gt=0, description="Environments an LLM actor steps together.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="LLM weights (on GPU actors).")

    @property
    def scripted(self) -> bool:
        return self.agent in SCRIPTED

    @property
    def name(self) -> str:
        """The agent name recorded in trajectories (what `record_rollouts` resumes by)."""
        return self.agent if self.scripted else (Path(self.agent).name or "llm")

    def make_agent(self, scenario: Scenario, seed: int | None = None) -> Agent:
        seed = self.seed if seed is None else seed
        if self.agent == "oracle":
            return OracleAgent(scenario)
        if self.agent == "noisy":
            return NoisyOracleAgent(scenario, self.noise or NoiseRates(), seed=seed)
        if self.agent == "random":
            return RandomAgent(seed=seed)
        raise ValueError(f"{self.agent!r} is not a scripted agent ({', '.join(SCRIPTED)})")

    def load_policy(self, device: str = "cpu") -> Any:
        import torch

        from trajalign.agents.llm import LLMPolicy, SamplingConfig

        path = Path(self.agent)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json) on this node; "
                                    "every node needs the model at the same path (shared storage)")
        dtype = getattr(torch, self.dtype) if device != "cpu" else torch.float32
        return LLMPolicy.from_pretrained(path, SamplingConfig(**self.sampling), reuse_cache=self.reuse_cache,
                                         dtype=dtype, device=device)


class FaultDrill(BaseModel):
    """Kill a rollout actor on purpose (SIGKILL of its process), to rehearse and test recovery."""

    worker: int = Field(0, ge=0, description="Which of the first actors dies (its replacement does not).")
    after: int = Field(1, ge=0, description="Results it sends back before it dies.")


class RayReport(BaseModel):
    """What the Ray side of a run did: the actors and the failures it recovered from."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    worker_failures: int = Field(0, description="Actors that died and were replaced.")
    retried_episodes: int = Field(0, description="Unfinished units of dead actors played again by another actor.")
    abandoned_episodes: int = Field(0, description="Units given up after max_retries (recorded as env_error).")

    def rows(self) -> list[tuple[str, str]]:
        gpus = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        rows = [("ray workers", f"{self.workers} ({self.cpus_per_worker:g} CPU{gpus} each)"),
                ("worker failures", str(self.worker_failures)),
                ("retried episodes", str(self.retried_episodes))]
        if self.abandoned_episodes:
            rows.append(("abandoned episodes", str(self.abandoned_episodes)))
        return rows


class _WithRayRows:
    """Adds the Ray report's rows to a summary table."""

    def rows(self) -> list[tuple[str, str]]:
        return super().rows() + self.ray.rows()  # type: ignore[misc,attr-defined]


class DistributedRolloutSummary(_WithRayRows, RolloutSummary):
    ray: RayReport


class DistributedEvalSummary(_WithRayRows, EvalSummary):
    ray: RayReport


# ---- the actor ----------------------------------------------------------------------------------


class RolloutWorker:
    """A Ray actor: one scenario, its environments, and a copy of the agent or policy."""

    def __init__(self, scenario: ScenarioRef, spec_json: str, cpus: float, kill_after: int | None = None):
        self.scenario = _load_ref(scenario)
        self.spec = AgentSpec.model_validate_json(spec_json)
        self.cpus = cpus
        self.kill_after = kill_after
        self.sent = 0
        self._policy: Any = None
        self._indices: dict[tuple[str, int | None], deque[int]] = {}  # episodes held, by (task id, seed)
        self._feeds: dict[str, deque] = {}  # per split: episodes waiting for a slot of the LLM player
        self._players: dict[str, Iterator[Trajectory]] = {}

    def ready(self) -> int:
        return os.getpid()

    def play(self, split: str, episodes: list[tuple[int, str, int | None]], results: int | None = None
             ) -> Iterator[tuple[list[int], str]]:
        """Take (index, task id, seed) episodes; yield ([index], trajectory JSON) as episodes end.

        An LLM actor keeps one batched player per split for its whole life and yields `results`
        trajectories per call (all it holds when None); the episodes it holds beyond those stay in
        its batch for the next call, so the batch does not drain between calls. A scripted agent
        plays each call's episodes one at a time, all of them.
        """
        for index, task_id, seed in episodes:
            self._indices.setdefault((task_id, seed), deque()).append(index)
        todo = [(task_id, seed) for _, task_id, seed in episodes]
        if self.spec.scripted:
            trajectories = agent_player(self.scenario, self.spec.make_agent(self.scenario), split)(todo)
            count = len(todo)
        else:
            trajectories = self._llm_player(split, todo)
            count = sum(map(len, self._indices.values())) if results is None else results
        for _ in range(count):
            trajectory = next(trajectories)
            self._maybe_die()
            self.sent += 1
            yield [self._indices[(trajectory.task_id, trajectory.seed)].popleft()], trajectory.model_dump_json()

    def _llm_player(self, split: str, todo: list[tuple[str, int | None]]) -> Iterator[Trajectory]:
        from trajalign.agents.llm_rollout import play_llm_episodes

        if split not in self._players:
            self._feeds[split] = deque()
            self._players[split] = play_llm_episodes(self.policy(), self.scenario, split, self._feeds[split],
                                                     self.spec.batch_size)
        self._feeds[split].extend(todo)
        return self._players[split]

    def branch(self, chunk: list[tuple[int, str]], options: dict[str, Any]) -> Iterator[tuple[list[int], Any]]:
        """Branch from (index, trajectory JSON) recordings; once done, yield (indices, (pairs by index, stats)).

        Each index maps to the JSON of the pairs branched from its trajectory, by branch turn then id.
        """
        from trajalign.alignment.builders import PairStats, branch_pairs

        trajectories = [Trajectory.model_validate_json(text) for _, text in chunk]
        index_of: dict[tuple[Any, ...], int] = {}
        for (index, _), trajectory in zip(chunk, trajectories):
            index_of.setdefault(_identity(trajectory), index)
        stats = PairStats()
        who: dict[str, Any] = ({"agent_factory": lambda seed: self.spec.make_agent(self.scenario, seed)}
                               if self.spec.scripted else {"policy": self.policy()})
        pairs = sorted(branch_pairs(trajectories, self.scenario, batch_size=self.spec.batch_size, stats=stats,
                                    progress=False, **options, **who), key=lambda pair: (pair.branch_turn, pair.id))
        by_index: dict[int, list[str]] = {index: [] for index, _ in chunk}
        for pair in pairs:
            by_index[index_of.get(_pair_identity(pair), chunk[0][0])].append(pair.model_dump_json())
        self._maybe_die()
        self.sent += 1
        yield [index for index, _ in chunk], (by_index, _stats_dict(stats))

    def policy(self) -> Any:
        if self._policy is None:
            import ray
            import torch

            torch.set_num_threads(max(1, int(self.cpus)))
            device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
            self._policy = self.spec.load_policy(device)
        return self._policy

    def _maybe_die(self) -> None:
        if self.kill_after is not None and self.sent >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def _identity(trajectory: Trajectory) -> tuple[Any, ...]:
    return trajectory.scenario, trajectory.task_id, trajectory.agent, trajectory.seed, trajectory.split


def _pair_identity(pair: Any) -> tuple[Any, ...]:
    described = pair.metadata.get("trajectory", {})
    return pair.scenario, pair.task_id, described.get("agent"), described.get("seed"), described.get("split")


def _stats_dict(stats: Any) -> dict[str, Any]:
    return {"trajectories": stats.trajectories, "pairs": stats.pairs, "states": stats.states,
            "continuations": stats.continuations, "skipped": dict(stats.skipped), "notes": dict(stats.notes)}


def _merge_stats(stats: Any, part: dict[str, Any]) -> None:
    for name in ("trajectories", "pairs", "states", "continuations"):
        setattr(stats, name, getattr(stats, name) + part[name])
    stats.skipped.update(part["skipped"])
    stats.notes.update(part["notes"])


# ---- the driver ---------------------------------------------------------------------------------


@dataclass
class _Slot:
    actor: Any
    generation: int
    held: set[int] = field(default_factory=set)  # units sent to the actor whose results have not come back
    calls: int = 0  # calls in flight
    owed: int = 0  # results the calls in flight still owe


@dataclass
class _Call:
    slot: int
    owed: int


@dataclass
class RolloutPool:
    """Rollout actors for one scenario and agent, and the driver loop that feeds them work.

    Use as a context manager (the actors are killed on exit). `player(split)` is a `Player` for
    `record_rollouts`; `branch(...)` plays branch continuations.
    """

    scenario: Scenario
    spec: AgentSpec
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    fault: FaultDrill | None = None
    report: RayReport = field(init=False)

    def __post_init__(self) -> None:
        import ray

        init_ray()
        settings = self.settings
        self.report = RayReport(workers=settings.workers, cpus_per_worker=settings.cpus_per_worker,
                                gpus_per_worker=settings.gpus_per_worker)
        _check_resources(settings)
        self._remote = ray.remote(RolloutWorker).options(
            num_cpus=settings.cpus_per_worker, num_gpus=settings.gpus_per_worker, max_restarts=0,
            max_task_retries=0)
        self._scenario_ref = _scenario_ref(self.scenario)
        self._slots = [_Slot(self._start(index, 0), 0) for index in range(settings.workers)]

    # -- public ----------------------------------------------------------------------------------

    def player(self, split: str) -> Callable[[Episodes], Iterator[Trajectory]]:
        return lambda todo: self.play(split, todo)

    def play(self, split: str, episodes: Episodes) -> Iterator[Trajectory]:
        """Play the (task id, seed) episodes on the actors; yield each trajectory as it arrives."""
        units = [(index, task_id, seed) for index, (task_id, seed) in enumerate(episodes)]
        if self.spec.scripted:
            chunk, lead = self._chunking(1, 256), 0
        else:  # an LLM actor keeps a batch's worth of episodes beyond each call's, so its batch stays full
            chunk, lead = (lambda left: self.settings.chunk_size or self.spec.batch_size), self.spec.batch_size
        calls = self._run(units, chunk, lambda actor, part, results: actor.play.remote(split, part, results), lead)
        for indices, payload in calls:
            if payload is None:  # abandoned after max_retries
                task_id, seed = episodes[indices[0]]
                yield _abandoned(self.scenario, split, task_id, seed, self.spec.name, self.settings.max_retries)
            else:
                yield Trajectory.model_validate_json(payload)

    def branch(self, trajectories: Sequence[Trajectory], options: dict[str, Any], stats: Any,
               progress: bool = False) -> Iterator[Any]:
        """`branch_pairs` over the trajectories, spread over the actors; pairs in input order."""
        from trajalign.alignment.pairs import PreferencePair

        units = [(index, trajectory.model_dump_json()) for index, trajectory in enumerate(trajectories)]
        chunk = self._chunking(1, 8)
        ready: dict[int, list[str]] = {}  # index of a finished trajectory -> its pairs, until released in order
        next_index = 0
        with tqdm(total=len(units), disable=not progress, desc=f"{self.scenario.name} branches",
                  unit="traj") as bar:
            calls = self._run(units, chunk, lambda actor, part, results: actor.branch.remote(part, options))
            for indices, payload in calls:
                bar.update(len(indices))
                if payload is None:  # abandoned after max_retries
                    stats.skipped["worker_died"] += len(indices)
                    ready.update({index: [] for index in indices})
                else:
                    by_index, part_stats = payload
                    _merge_stats(stats, part_stats)
                    ready.update({index: by_index.get(index, []) for index in indices})
                while next_index in ready:
                    for text in ready.pop(next_index):
                        yield PreferencePair.model_validate_json(text)
                    next_index += 1
                bar.set_postfix(pairs=stats.pairs, refresh=False)

    def close(self) -> None:
        import ray

        for slot in self._slots:
            ray.kill(slot.actor, no_restart=True)
        self._slots = []

    def __enter__(self) -> RolloutPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _start(self, index: int, generation: int) -> Any:
        fault = self.fault
        kill_after = fault.after if fault is not None and fault.worker == index and generation == 0 else None
        return self._remote.remote(self._scenario_ref, self.spec.model_dump_json(), self.settings.cpus_per_worker,
                                   kill_after)

    def _chunking(self, least: int, most: int) -> Callable[[int], int]:
        """Units per call, given how many are left: `chunk_size`, else guided self-scheduling.

        A call takes 1/(workers + 1/2) of what is left, between `least` and `most`: large calls while
        there is much to do (fewer messages), smaller ones at the end, so the actors finish together.
        """
        fixed, workers = self.settings.chunk_size, self.settings.workers
        if fixed is not None:
            return lambda left: fixed
        if workers == 1:  # nothing to balance: the fewest calls
            return lambda left: max(least, most)
        return lambda left: max(least, min(most, math.ceil(left / (workers + 0.5))))

    def _run(self, units: list[tuple[Any, ...]], chunk: Callable[[int], int],
             start: Callable[[Any, list[tuple[Any, ...]], int], Any], lead: int = 0
             ) -> Iterator[tuple[list[int], Any]]:
        """Feed `units` (each led by its index) to idle actors; yield (indices, payload) as results come back.

        A call sends an actor `chunk(left)` new units and asks for results of all it holds but `lead`
        (all of them once the queue is empty), so an actor with `lead` > 0 keeps that many in
        progress between calls; such an actor also gets its next call before the current one ends,
        so it never waits for the driver. The driver tracks which actor holds which unit: the units a
        dead actor held go back to the front of the queue; after `max_retries` a unit is yielded once
        with payload None. Every unit is yielded exactly once.
        """
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        settings = self.settings
        max_failures = settings.max_worker_failures if settings.max_worker_failures is not None \
            else 2 * settings.workers + 2
        depth = 2 if lead else 1  # calls in flight per actor
        pending = deque(unit[0] for unit in units)
        by_index = {unit[0]: unit for unit in units}
        retries: Counter[int] = Counter()
        running: dict[Any, _Call] = {}
        try:
            while pending or running or any(slot.held for slot in self._slots):
                for number, slot in [pair for _ in range(depth) for pair in enumerate(self._slots)]:
                    # Breadth first: every idle actor gets a call before any gets its second.
                    if slot.calls < depth and (pending or len(slot.held) > slot.owed):
                        size = chunk(len(pending)) + max(0, lead + slot.owed - len(slot.held))
                        part = [pending.popleft() for _ in range(min(size, len(pending)))]
                        slot.held.update(part)
                        owed = len(slot.held) - slot.owed - (lead if pending else 0)
                        running[start(slot.actor, [by_index[index] for index in part], owed)] = _Call(number, owed)
                        slot.calls += 1
                        slot.owed += owed
                ready, _ = ray.wait(list(running), num_returns=1)
                call = running[ready[0]]
                slot = self._slots[call.slot]
                try:
                    indices, payload = ray.get(next(ready[0]))
                except StopIteration:
                    del running[ready[0]]
                    slot.calls -= 1
                    if call.owed > 0:
                        raise WorkerError(f"a rollout actor ended a call {call.owed} results short") from None
                    continue
                except (RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError,
                        ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError) as exc:
                    self.report.worker_failures += 1
                    if self.report.worker_failures > max_failures:
                        raise WorkerError(f"{self.report.worker_failures} rollout actors died (the limit is "
                                          f"{max_failures}); the last: {type(exc).__name__}: {exc}") from None
                    for generator in [g for g, c in running.items() if c.slot == call.slot]:
                        del running[generator]  # the dead actor's other call, if any, died with it
                    self._replace(call.slot)
                    for index in sorted(slot.held, reverse=True):
                        retries[index] += 1
                        if retries[index] > settings.max_retries:
                            self.report.abandoned_episodes += 1
                            yield [index], None
                        else:
                            self.report.retried_episodes += 1
                            pending.appendleft(index)
                    continue
                except RayTaskError as exc:
                    raise WorkerError(f"a rollout actor failed: {exc}") from None
                fresh = [index for index in indices if index in slot.held]
                slot.held.difference_update(fresh)
                call.owed -= len(indices)
                slot.owed -= len(indices)
                if fresh:
                    yield fresh, payload
        finally:
            for generator in running:  # calls left behind by an early exit or an error
                try:
                    ray.cancel(generator)
                except Exception:  # noqa: BLE001, S110 -- best effort: the pool kills its actors on close anyway
                    pass
            if pending or running or any(slot.held for slot in self._slots):
                # An early exit leaves episodes inside the actors: the next play starts on fresh ones.
                for number in range(len(self._slots)):
                    self._replace(number)

    def _replace(self, number: int) -> None:
        import ray

        slot = self._slots[number]
        ray.kill(slot.actor, no_restart=True)
        self._slots[number] = _Slot(self._start(number, slot.generation + 1), slot.generation + 1)


def _check_resources(settings: WorkerSettings) -> None:
    """Say so when no node of the cluster (as it is now) can hold even one actor: it would wait forever."""
    import sys

    import ray

    total = ray.cluster_resources()
    for name, wanted in (("CPU", settings.cpus_per_worker), ("GPU", settings.gpus_per_worker)):
        if wanted > total.get(name, 0):
            print(f"warning: each rollout actor asks for {wanted:g} {name} but the Ray cluster has "
                  f"{total.get(name, 0):g}; the actors wait until nodes with enough {name}s join "
                  "(an autoscaling cluster) and otherwise forever: check --cpus-per-worker/--gpus-per-worker",
                  file=sys.stderr)


@dataclass(frozen=True)
class _FileWithTasks:
    """A scenario file's tools with other tasks (name-swapped copies): its tool functions live in a module
    imported from the folder, which does not unpickle in another process, so actors import it themselves."""

    path: str
    tasks: list[Task]

    def load(self) -> Scenario:
        return load_scenario(self.path).with_tasks(self.tasks)


ScenarioRef = Union[str, _FileWithTasks, Scenario]


def _scenario_ref(scenario: Scenario) -> ScenarioRef:
    """What actors load the scenario from: its file when that loads the same scenario (actors on other
    nodes read the same path), the file and the tasks when only the tasks differ, else the object itself
    (scenarios built in memory, e.g. a MiniWoB++ task)."""
    if scenario.file is None:
        return scenario
    loaded = load_scenario(scenario.file)
    if [t.id for t in loaded.tasks] == [t.id for t in scenario.tasks]:
        return str(scenario.file)
    return _FileWithTasks(str(scenario.file), list(scenario.tasks))


def _load_ref(ref: ScenarioRef) -> Scenario:
    if isinstance(ref, str):
        return load_scenario(ref)
    return ref.load() if isinstance(ref, _FileWithTasks) else ref


def _abandoned(scenario: Scenario, split: str, task_id: str, seed: int | None, agent: str, retries: int) -> Trajectory:
    return Trajectory(scenario=scenario.name, task_id=task_id, split=split, seed=seed, agent=agent, turns=[],
                      rewards=[], reward=0.0, status="env_error",
                      timing=EpisodeTiming(started_at=time.time(), duration_s=0.0, env_s=0.0),
                      metadata={"error": f"the rollout actor died every time it played this episode "
                                         f"({retries + 1} attempts)"})


# ---- entry points -------------------------------------------------------------------------------


def ray_record_rollouts(scenario: Scenario, split: str, plan: Episodes, out: str | Path | None, spec: AgentSpec,
                        settings: WorkerSettings, progress: bool = True, fault: FaultDrill | None = None
                        ) -> tuple[DistributedRolloutSummary, list[Trajectory]]:
    """`record_rollouts` on Ray actors: the same file, resumption and summary, plus the Ray report.

    The returned trajectories are in plan order (episodes `out` already held included).
    """
    with RolloutPool(scenario, spec, settings, fault) as pool:
        summary, trajectories = record_rollouts(scenario, split, plan, out, spec.name, pool.player(split), progress)
        report = pool.report
    position = {key: index for index, key in enumerate(plan)}
    trajectories.sort(key=lambda t: position.get((t.task_id, t.seed), len(plan)))
    return DistributedRolloutSummary(**summary.model_dump(), ray=report), trajectories


def ray_run_rollouts(scenario: Scenario, spec: AgentSpec, split: str, episodes: int, seed: int,
                     out: str | Path, settings: WorkerSettings, progress: bool = True,
                     fault: FaultDrill | None = None) -> DistributedRolloutSummary:
    """`run_rollouts` (the same episode plan) on Ray actors, for scripted agents and LLM policies alike."""
    plan = episode_plan(scenario.tasks_in(split), episodes, seed)
    return ray_record_rollouts(scenario, split, plan, out, spec, settings, progress, fault)[0]


def ray_evaluate(spec: AgentSpec, scenario: Scenario, split: str = "test", episodes: int = 50, samples: int = 1,
                 seed: int = 0, out: str | Path | None = None, settings: WorkerSettings | None = None,
                 progress: bool = True, fault: FaultDrill | None = None) -> tuple[DistributedEvalSummary,
                                                                                  list[Trajectory]]:
    """`evaluate_policy` on Ray actors: the same plan, summary and pass^k."""
    plan = eval_plan(scenario.tasks_in(split), episodes, samples, seed)
    summary, trajectories = ray_record_rollouts(scenario, split, plan, out, spec, settings or WorkerSettings(),
                                                progress, fault)
    evaluated: EvalSummary = summarize_eval(summary, trajectories, samples)
    return DistributedEvalSummary(**evaluated.model_dump(), ray=summary.ray), trajectories


def ray_branch_pairs(trajectories: Iterable[Trajectory], scenario: Scenario, spec: AgentSpec,
                     settings: WorkerSettings, *, samples: int, tau: float = 0.0,
                     max_states_per_trajectory: int | None = None, seed: int = 0, against_recorded: bool = False,
                     stats: Any = None, progress: bool = False, fault: FaultDrill | None = None) -> Iterator[Any]:
    """`branch_pairs` with the continuations played on Ray actors; the same pairs, in input order.

    `stats` (a `PairStats`) receives the merged counts of every actor; `stats.skipped["worker_died"]`
    counts trajectories given up after their actors died `max_retries` times. To see the actors'
    failures and retries, use `RolloutPool(...).branch` and read the pool's `report`.
    """
    from trajalign.alignment.builders import PairStats

    if samples < 2:
        raise ValueError(f"samples must be at least 2 to compare continuations, got {samples}")
    stats = stats if stats is not None else PairStats()
    options = {"samples": samples, "tau": tau, "max_states_per_trajectory": max_states_per_trajectory, "seed": seed,
               "against_recorded": against_recorded}
    with RolloutPool(scenario, spec, settings, fault) as pool:
        yield from pool.branch(list(trajectories), options, stats, progress)


__all__ = [
    "AgentSpec",
    "DistributedEvalSummary",
    "DistributedRolloutSummary",
    "FaultDrill",
    "RayReport",
    "RolloutPool",
    "RolloutWorker",
    "WorkerError",
    "WorkerSettings",
    "ray_branch_pairs",
    "ray_evaluate",
    "ray_record_rollouts",
    "ray_run_rollouts",
]
