"""Gymnasium environments for multi-turn agent tasks.

Importing this package registers the environment ids with Gymnasium: `trajalign/ToolUse-v0`,
`trajalign/Web-v0` (web scenarios in Chromium, docs/web.md) and `trajalign/MiniWoB-v0`. The entry
points are strings, so `gym.make("trajalign/ToolUse-v0", ...)` also works in Ray workers and
subprocesses (use `gym.make("trajalign:trajalign/ToolUse-v0", ...)` where `trajalign` may not be
imported yet), and the browser modules are imported only when a web environment is made.
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

ENV_IDS = {
    "trajalign/ToolUse-v0": "trajalign.envs.tool_use:ToolUseEnv",
    "trajalign/Web-v0": "trajalign.envs.web:WebEnv",
    "trajalign/MiniWoB-v0": "trajalign.envs.miniwob:MiniWoBEnv",
}

# Scenario kind -> the environment id that serves it.
ENV_ID_BY_KIND = {"tool_use": "trajalign/ToolUse-v0", "web": "trajalign/Web-v0", "miniwob": "trajalign/MiniWoB-v0"}

for _env_id, _entry_point in ENV_IDS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry_point)


def make_env(scenario: str | Scenario, split: str = "train", **kwargs) -> gym.Env:
    """`gym.make` the environment that serves a scenario's kind."""
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    return gym.make(ENV_ID_BY_KIND[scenario.kind], scenario=scenario, split=split, **kwargs)

__all__ = [
    "ENV_IDS",
    "ENV_ID_BY_KIND",
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
    "make_env",
    "parse_action",
]
