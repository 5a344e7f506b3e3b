"""The record of an episode: typed turns, rewards, and how it ended."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

Role = Literal["system", "user", "assistant", "tool", "observation"]
# `env_error` marks infrastructure failures (a crashed browser, a failing user simulator): such an
# episode says nothing about the agent and must not be read as a reward of 0.
Status = Literal["success", "failure", "truncated", "invalid_action_limit", "env_error"]
STATUSES: tuple[str, ...] = Status.__args__


class Turn(BaseModel):
    role: Role
    text: str
    token_ids: list[int] | None = Field(None, description="Assistant turns: the exact tokens the policy sampled.")
    logprobs: list[float] | None = Field(None, description="Behaviour-policy log-prob of each token in token_ids.")
    trainable: bool = Field(False, description="Whether training scores this turn (assistant actions only).")

    @model_validator(mode="after")
    def _check_tokens(self) -> "Turn":
        if self.logprobs is not None and (self.token_ids is None or len(self.logprobs) != len(self.token_ids)):
            raise ValueError("logprobs needs token_ids of the same length")
        if self.trainable and self.role != "assistant":
            raise ValueError(f"only assistant turns can be trainable, not {self.role} turns")
        return self


class EpisodeTiming(BaseModel):
    started_at: float = Field(description="Unix time of reset().")
    duration_s: float
    env_s: float = Field(description="Seconds spent inside env.step().")


class Trajectory(BaseModel):
    scenario: str
    task_id: str
    split: str
    seed: int | None
    agent: str
    turns: list[Turn]
    rewards: list[float] = Field(description="One reward per agent action.")
    reward: float = Field(description="The episode's final reward.")
    status: Status
    timing: EpisodeTiming
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status == "success"

    @property
    def num_actions(self) -> int:
        return sum(turn.role == "assistant" for turn in self.turns)
