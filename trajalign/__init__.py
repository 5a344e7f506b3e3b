"""trajalign: align LLM agents on multi-turn tasks.

Environments (`trajalign.envs`) produce trajectories, agents (`trajalign.agents`) act in them, and
`trajalign.alignment` turns trajectories into preference pairs and trains on them.
"""

from trajalign.envs import (  # importing registers the Gymnasium ids
    ENV_IDS,
    Scenario,
    ScenarioError,
    Task,
    ToolUseEnv,
    Trajectory,
    Turn,
    builtin_scenarios,
    load_scenario,
)
from trajalign.envs.jsonl import JsonlReader, JsonlWriter, read_jsonl

__version__ = "0.1.0"

__all__ = [
    "ENV_IDS",
    "JsonlReader",
    "JsonlWriter",
    "Scenario",
    "ScenarioError",
    "Task",
    "ToolUseEnv",
    "Trajectory",
    "Turn",
    "builtin_scenarios",
    "load_scenario",
    "read_jsonl",
]
