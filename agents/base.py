"""The agent interface that rollouts drive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class AgentAction:
    """What an agent produced for one turn.

    Language-model agents also return the exact sampled token ids and their log-probs, so the
    trajectory can be trained on without re-tokenizing text.
    """

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    # A scripted agent's deliberate mistake ("wrong_argument", ...): recorded in the trajectory's
    # metadata, so SFT can imitate the recovery without imitating the mistake.
    mistake: str | None = None


class Agent(Protocol):
    name: str

    def reset(self, observation: str, info: dict[str, Any], seed: int | None = None) -> None:
        """Start an episode; `observation` and `info` are what `env.reset` returned."""
        ...

    def act(self, observation: str, info: dict[str, Any]) -> AgentAction:
        """The next action, given the latest observation and info."""
        ...
