"""Register trajalign environments with RLlib, so RLlib algorithms find them by id."""

from __future__ import annotations

import gymnasium as gym

# A scenario's tool-use (or listing) env as a discrete choice among admissible actions (envs/admissible.py).
ADMISSIBLE_ENV_ID = "trajalign/Admissible-v0"


def register_rllib_envs() -> list[str]:
    """Register every trajalign env id with `ray.tune.registry.register_env`; return the ids.

    RLlib passes its `env_config` dict as keyword arguments, e.g.
    `config.environment("trajalign/ToolUse-v0", env_config={"scenario": "retail"})`. The text envs
    have text actions, which RLlib's built-in models cannot emit; `trajalign/Admissible-v0`
    (env_config: scenario, split, max_candidates, shaping) wraps a scenario's env as a discrete
    choice among admissible actions with fixed-size features, which PPO can train on.
    """
    from ray.tune.registry import register_env

    from trajalign.envs import ENV_IDS
    from trajalign.envs.admissible import make_admissible_env

    for env_id in ENV_IDS:
        register_env(env_id, lambda config, env_id=env_id: gym.make(env_id, **dict(config or {})))
    register_env(ADMISSIBLE_ENV_ID, lambda config: make_admissible_env(**dict(config or {})))
    return [*ENV_IDS, ADMISSIBLE_ENV_ID]
