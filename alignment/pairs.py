"""`PreferencePair`: two continuations of one shared conversation prefix, one preferred.

A pair is anchored at the state where its continuations diverge: `prefix` holds every turn up to
that state (the system prompt if recorded, the goal, and the first k actions and their
observations), and `chosen` / `rejected` hold what followed on each side, each starting with the
agent's action at the branch state. Whole-trajectory pairs as ETO and DMPO build them branch at
k = 0, right after the goal. Only the trainable assistant turns of the continuations are ever scored.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from trajalign.envs.trajectory import Turn

Source = Literal["outcome", "branch_mc", "judge", "human"]


class PreferencePair(BaseModel):
    id: str = Field(description="Stable identifier, unique within a pairs file.")
    scenario: str
    task_id: str
    prefix: list[Turn] = Field(description="The shared turns, up to and including the observation before the branch action.")
    chosen: list[Turn] = Field(description="The preferred continuation, starting with an assistant turn.")
    rejected: list[Turn] = Field(description="The dispreferred continuation, starting with an assistant turn.")
    branch_turn: int = Field(0, ge=0, description="k: the number of agent actions in the prefix (0: right after the goal).")
    value_chosen: float | None = Field(None, description="Return or value estimate of the chosen side, where known.")
    value_rejected: float | None = Field(None, description="Return or value estimate of the rejected side, where known.")
    num_samples: int | None = Field(None, ge=1, description="Branch pairs: Monte-Carlo continuations behind each estimate.")
    source: Source
    ref_logps_chosen: list[float] | None = Field(
        None, description="Reference-model log-prob of each trainable action of `chosen` (sum over its tokens).")
    ref_logps_rejected: list[float] | None = Field(None, description="The same for `rejected`.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "PreferencePair":
        if not self.prefix:
            raise ValueError("the prefix is empty; it needs at least the goal")
        if self.prefix[-1].role == "assistant":
            raise ValueError("the prefix ends with an assistant turn; a branch starts at the agent's next action")
        for side in ("chosen", "rejected"):
            turns: list[Turn] = getattr(self, side)
            if not turns or turns[0].role != "assistant":
                raise ValueError(f"{side} must start with the assistant's action at the branch state")
            if not any(_has_action_tokens(turn) for turn in turns):
                raise ValueError(f"{side} has no action tokens (no trainable assistant turn with tokens)")
            reference = getattr(self, f"ref_logps_{side}")
            if reference is not None:
                actions = sum(turn.trainable for turn in turns)
                if len(reference) != actions:
                    raise ValueError(f"ref_logps_{side} has {len(reference)} values for {actions} trainable actions")
                if not all(math.isfinite(value) for value in reference):
                    raise ValueError(f"ref_logps_{side} holds a value that is not finite")
        for name in ("value_chosen", "value_rejected"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} is {value}; value estimates must be finite numbers")
        return self

    @property
    def has_reference(self) -> bool:
        return self.ref_logps_chosen is not None and self.ref_logps_rejected is not None

    def actions(self, side: Literal["chosen", "rejected"]) -> int:
        """n_x: the number of trainable actions of one side (turns t ≥ k of that trajectory)."""
        return sum(turn.trainable for turn in getattr(self, side))


def _has_action_tokens(turn: Turn) -> bool:
    # A text-only assistant turn is rendered with at least the stop token; recorded ids may be empty.
    return turn.trainable and (turn.token_ids is None or len(turn.token_ids) > 0)


__all__ = ["PreferencePair", "Source"]
