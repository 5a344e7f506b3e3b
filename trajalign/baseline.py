"""A non-LLM baseline: RLlib PPO choosing among admissible actions (the "PPO" row of agent tables).

`trajalign baseline ppo --scenario S --iterations N --out DIR` trains RLlib's PPO on the train
tasks of a tool-use scenario through `AdmissibleActionEnv` (each step: pick one of up to K
admissible tool calls, described by fixed-size features), then plays the test split greedily and
reports the same summary as `trajalign eval` (success, reward, turns, statuses, pass^k), with the
random agent's success on the same episodes beside it.

The policy network (`CandidateScorer`) scores every candidate with one shared MLP over [candidate
features, context features], masks the empty slots, and takes a softmax: the same weights rank a
candidate in any slot. The value head reads the context and the mean candidate embedding.

Run directory: `config.json`, `metrics.jsonl` (one line per PPO iteration), `checkpoint/` (RLlib's
algorithm checkpoint), `eval-test.jsonl` (the test trajectories, with the chosen call as each
assistant turn), `result.json`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from trajalign.agents.evaluate import EvalSummary, eval_plan, summarize_eval
from trajalign.agents.rollout import agent_player, record_rollouts
from trajalign.agents.scripted import RandomAgent
from trajalign.envs import Scenario, load_scenario, make_env
from trajalign.envs.admissible import CANDIDATE_FEATURES, CONTEXT_FEATURES, SLOT_WIDTH, AdmissibleActionEnv
from trajalign.envs.rllib import ADMISSIBLE_ENV_ID
from trajalign.envs.trajectory import EpisodeTiming, Trajectory, Turn
from trajalign.ray_cluster import init_ray


class PPOSettings(BaseModel):
    """The PPO baseline's settings (RLlib's new API stack)."""

    model_config = ConfigDict(extra="forbid")

    scenario: str = "retail"
    iterations: int = Field(20, gt=0, description="PPO training iterations (each samples train_batch_size steps).")
    max_candidates: int = Field(32, gt=1, description="K: admissible actions offered per step.")
    shaping: float = Field(1.0, ge=0, description="Potential-based shaping weight (0: the env's reward alone).")
    learning_rate: float = Field(3e-4, gt=0)
    train_batch_size: int = Field(2000, gt=0, description="Env steps sampled per iteration.")
    minibatch_size: int = Field(256, gt=0)
    num_epochs: int = Field(6, gt=0)
    gamma: float = Field(0.99, gt=0, le=1)
    entropy_coeff: float = Field(0.01, ge=0)
    hidden: int = Field(64, gt=0, description="Width of the candidate scorer's hidden layers.")
    env_runners: int = Field(1, ge=0, description="RLlib env-runner actors (0: sample in the driver).")
    envs_per_runner: int = Field(4, gt=0)
    cpus_per_runner: float = Field(1.0, gt=0)
    seed: int = 0
    eval_episodes: int = Field(100, gt=0, description="Test tasks played after training.")


class BaselineResult(BaseModel):
    settings: PPOSettings
    iterations: int
    env_steps: int
    seconds: float
    final: dict[str, float]
    test: EvalSummary
    random_test_success: float
    checkpoint: str


# ---- the policy network -------------------------------------------------------------------------


def _candidate_scorer_class() -> type:
    """`CandidateScorer`, defined on first use (RLlib and torch take seconds to import)."""
    global _SCORER
    if _SCORER is not None:
        return _SCORER
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule

    class CandidateScorer(TorchRLModule, ValueFunctionAPI):
        """Shared-weight scores over the admissible candidates of an `AdmissibleActionEnv` observation."""

        def setup(self) -> None:
            hidden = self.model_config.get("hidden", 64)
            self.slots = self.action_space.n
            width = CANDIDATE_FEATURES + CONTEXT_FEATURES
            self.embed = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.Tanh(),
                                             torch.nn.Linear(hidden, hidden), torch.nn.Tanh())
            self.score = torch.nn.Linear(hidden, 1)
            self.value = torch.nn.Sequential(torch.nn.Linear(hidden + CONTEXT_FEATURES, hidden), torch.nn.Tanh(),
                                             torch.nn.Linear(hidden, 1))

        def _embed(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            slots = obs[:, : self.slots * SLOT_WIDTH].reshape(obs.shape[0], self.slots, SLOT_WIDTH)
            present, features = slots[..., 0], slots[..., 1:]
            context = obs[:, self.slots * SLOT_WIDTH:]
            joined = torch.cat([features, context[:, None, :].expand(-1, self.slots, -1)], dim=-1)
            return self.embed(joined), present, context

        def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            embedded, present, _ = self._embed(batch[Columns.OBS])
            logits = self.score(embedded).squeeze(-1)
            logits = logits.masked_fill(present < 0.5, -1e9)
            return {Columns.ACTION_DIST_INPUTS: logits}

        def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
            embedded, present, context = self._embed(batch[Columns.OBS])
            weights = present / present.sum(dim=1, keepdim=True).clamp(min=1.0)
            pooled = (embedded * weights[..., None]).sum(dim=1)
            return self.value(torch.cat([pooled, context], dim=-1)).squeeze(-1)

    _SCORER = CandidateScorer
    return CandidateScorer


_SCORER: type | None = None


# ---- training ------------------------------------------------------------------------------------


def build_ppo(settings: PPOSettings) -> Any:
    """An RLlib PPO algorithm on the scenario's admissible-action env (train split)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from trajalign.envs.rllib import register_rllib_envs

    init_ray()
    register_rllib_envs()
    scenario = load_scenario(settings.scenario)
    config = (
        PPOConfig()
        .environment(ADMISSIBLE_ENV_ID, env_config={"scenario": str(scenario.file), "split": "train",
                                                    "max_candidates": settings.max_candidates,
                                                    "shaping": settings.shaping})
        .env_runners(num_env_runners=settings.env_runners, num_envs_per_env_runner=settings.envs_per_runner,
                     num_cpus_per_env_runner=settings.cpus_per_runner, sample_timeout_s=1800.0)
        .learners(num_learners=0)
        .training(lr=settings.learning_rate, train_batch_size_per_learner=settings.train_batch_size,
                  minibatch_size=settings.minibatch_size, num_epochs=settings.num_epochs, gamma=settings.gamma,
                  entropy_coeff=settings.entropy_coeff)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=_candidate_scorer_class(),
                                               model_config={"hidden": settings.hidden}))
        .debugging(seed=settings.seed)
    )
    return config.build_algo()


def train_ppo_baseline(settings: PPOSettings, out: str | Path, progress: bool = True) -> BaselineResult:
    """Train PPO for `settings.iterations`, save the checkpoint, evaluate on the test split; write `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(settings.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (out / "metrics.jsonl").unlink(missing_ok=True)
    started = time.perf_counter()
    algo = build_ppo(settings)
    final: dict[str, float] = {}
    env_steps = 0
    try:
        for iteration in tqdm(range(1, settings.iterations + 1), desc="ppo", unit="iter", disable=not progress):
            final = _iteration_metrics(algo.train())
            env_steps = int(final.get("env_steps", env_steps))
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as file:
                file.write(json.dumps({"iteration": iteration, **final, "seconds": time.perf_counter() - started})
                           + "\n")
        checkpoint = out / "checkpoint"
        algo.save(str(checkpoint.resolve()))
        module = algo.get_module()
    finally:
        algo.stop()
    seconds = time.perf_counter() - started
    scenario = load_scenario(settings.scenario)
    test, _ = evaluate_module(module, scenario, "test", settings.eval_episodes, settings.seed, settings.max_candidates,
                              out / "eval-test.jsonl", progress=progress)
    random_test = evaluate_random(scenario, "test", settings.eval_episodes, settings.seed)
    result = BaselineResult(settings=settings, iterations=settings.iterations, env_steps=env_steps, seconds=seconds,
                            final=final, test=test, random_test_success=random_test.success_rate,
                            checkpoint=str(checkpoint))
    (out / "result.json").write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return result


def _iteration_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The few numbers of an RLlib result worth a line: returns, episode length, steps, losses."""
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get("default_policy", {})
    picked = {
        "episode_return_mean": runners.get("episode_return_mean"),
        "episode_len_mean": runners.get("episode_len_mean"),
        "episodes": runners.get("num_episodes"),
        "env_steps": result.get("num_env_steps_sampled_lifetime", runners.get("num_env_steps_sampled_lifetime")),
        "policy_loss": learner.get("policy_loss"),
        "vf_loss": learner.get("vf_loss"),
        "entropy": learner.get("entropy"),
    }
    return {name: float(value) for name, value in picked.items()
            if isinstance(value, (int, float)) and math.isfinite(value)}


# ---- evaluation ----------------------------------------------------------------------------------


def greedy_action(module: Any, observation: np.ndarray) -> int:
    """The highest-scoring admissible candidate."""
    import torch
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        output = module.forward_inference({Columns.OBS: torch.as_tensor(observation[None], dtype=torch.float32)})
    return int(torch.argmax(output[Columns.ACTION_DIST_INPUTS][0]))


def play_admissible(module: Any, scenario: Scenario, split: str, episodes: list[tuple[str, int]], max_candidates: int,
                    name: str = "ppo") -> Iterator[Trajectory]:
    """Play (task id, seed) episodes greedily with an RLModule; trajectories as `run_episode` records them."""
    env = AdmissibleActionEnv(make_env(scenario, split), max_candidates=max_candidates)
    try:
        for task_id, seed in episodes:
            started_at, started = time.time(), time.perf_counter()
            observation, info = env.reset(seed=seed, options={"task_id": task_id})
            turns = [Turn(role="user", text=info["text_observation"])]
            rewards: list[float] = []
            status = "env_error"
            while True:
                observation, _, terminated, truncated, info = env.step(greedy_action(module, observation))
                turns.append(Turn(role="assistant", text=info["action_text"], trainable=True))
                turns.append(Turn(role=info.get("observation_role", "tool"), text=info["text_observation"]))
                rewards.append(info["env_reward"])
                if terminated or truncated:
                    status = info["status"]
                    break
            yield Trajectory(scenario=scenario.name, task_id=task_id, split=split, seed=seed, agent=name, turns=turns,
                             rewards=rewards, reward=rewards[-1] if rewards else 0.0, status=status,
                             timing=EpisodeTiming(started_at=started_at, duration_s=time.perf_counter() - started,
                                                  env_s=0.0))
    finally:
        env.close()


def evaluate_module(module: Any, scenario: Scenario, split: str, episodes: int, seed: int, max_candidates: int,
                    out: str | Path | None = None, progress: bool = False) -> tuple[EvalSummary, list[Trajectory]]:
    """The `trajalign eval` summary of the greedy PPO policy on `episodes` tasks of `split`."""
    plan = eval_plan(scenario.tasks_in(split), episodes, 1, seed)
    if out is not None:
        Path(out).unlink(missing_ok=True)  # a new policy: nothing to resume
    summary, trajectories = record_rollouts(
        scenario, split, plan, out, "ppo",
        lambda todo: play_admissible(module, scenario, split, todo, max_candidates), progress=progress)
    return summarize_eval(summary, trajectories, 1), trajectories


def evaluate_random(scenario: Scenario, split: str, episodes: int, seed: int) -> EvalSummary:
    """The random agent on the same episodes (the row PPO must beat)."""
    plan = eval_plan(scenario.tasks_in(split), episodes, 1, seed)
    summary, trajectories = record_rollouts(scenario, split, plan, None, "random",
                                            agent_player(scenario, RandomAgent(seed=seed), split), progress=False)
    return summarize_eval(summary, trajectories, 1)


__all__ = ["ADMISSIBLE_ENV_ID", "BaselineResult", "PPOSettings", "build_ppo", "evaluate_module", "evaluate_random",
           "greedy_action", "play_admissible", "train_ppo_baseline"]
