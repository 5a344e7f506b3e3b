"""Gymnasium environments for multi-turn agent tasks.

Importing this package registers the environment ids with Gymnasium. The entry points are
strings, so `gym.make("trajalign/ToolUse-v0", ...)` also works in Ray workers and subprocesses
(use `gym.make("trajalign:trajalign/ToolUse-v0", ...)` where `trajalign` may not be imported yet).
"""

import gymnasium as gym

from trajalign.envs.actions import ActionError, ToolCall, parse_action
from trajalign.envs.scenario import (
    HiddenDetail,
    Limits,
    Scenario,
    ScenarioError,
    Task,
    builtin_scenarios,
    load_scenario,
)
from trajalign.envs.spaces import UnicodeText
from trajalign.envs.tool_use import ToolUseEnv
from trajalign.envs.tools import ToolError
from trajalign.envs.trajectory import Status, Trajectory, Turn
from trajalign.envs.user_sim import ScriptedUser, UserSimulator

ENV_IDS = {"trajalign/ToolUse-v0": "trajalign.envs.tool_use:ToolUseEnv"}

for _env_id, _entry_point in ENV_IDS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry_point, disable_env_checker=False)

__all__ = [
    "ENV_IDS",
    "ActionError",
    "HiddenDetail",
    "Limits",
    "Scenario",
    "ScenarioError",
    "ScriptedUser",
    "Status",
    "Task",
    "ToolCall",
    "ToolError",
    "ToolUseEnv",
    "Trajectory",
    "Turn",
    "UnicodeText",
    "UserSimulator",
    "builtin_scenarios",
    "load_scenario",
    "parse_action",
]
