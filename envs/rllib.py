"""Register trajalign environments with RLlib, so RLlib algorithms find them by id."""

from __future__ import annotations

import gymnasium as gym


def register_rllib_envs() -> list[str]:
    """Register every trajalign env id with `ray.tune.registry.register_env`; return the ids.

    RLlib passes its `env_config` dict as keyword arguments, e.g.
    `config.environment("trajalign/ToolUse-v0", env_config={"scenario": "retail"})`.
    """
    from ray.tune.registry import register_env

    from trajalign.envs import ENV_IDS

    for env_id in ENV_IDS:
        register_env(env_id, lambda config, env_id=env_id: gym.make(env_id, **dict(config or {})))
    return list(ENV_IDS)
