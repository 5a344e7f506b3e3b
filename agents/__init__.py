"""Agents that act in trajalign environments, and the rollout loop that records their episodes."""

from trajalign.agents.base import Agent, AgentAction
from trajalign.agents.rollout import RolloutSummary, episode_plan, run_episode, run_rollouts, summarize
from trajalign.agents.scripted import NoiseRates, NoisyOracleAgent, OracleAgent, RandomAgent

__all__ = [
    "Agent",
    "AgentAction",
    "NoiseRates",
    "NoisyOracleAgent",
    "OracleAgent",
    "RandomAgent",
    "RolloutSummary",
    "episode_plan",
    "run_episode",
    "run_rollouts",
    "summarize",
]
