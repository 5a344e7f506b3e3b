"""Multi-turn preference losses on per-action log-probs: dpo, dmpo, stepwise, ipo, simpo (DESIGN.md §6).

Every loss is per pair, so a trainer that backwards `loss.sum() / global_batch` per micro-batch gets
exactly the full-batch gradient, and a pair's loss never depends on the pairs batched with it.
Each algorithm is a (reward, loss) entry of `LOSSES`; adding one is adding an entry.

Notation (a pair anchored at turn k; i = t − k counts the continuation's actions from 0):
Δ_i = log πθ(a_i | h_i) − log π_ref(a_i | h_i), each a sum over the tokens of action a_i, and
n_x the number of trainable actions of side x.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from trajalign.alignment.logprobs import TurnLogps

Algorithm = Literal["dpo", "dmpo", "stepwise", "ipo", "simpo"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)


class LossConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algo: Algorithm = "stepwise"
    beta: float = Field(0.1, gt=0, description="KL strength β: the scale of the implicit rewards.")
    gamma: float = Field(0.9, gt=0, le=1, description="DMPO discount γ of φ_γ; 1 gives the (n − i)/n weights.")
    alpha: float = Field(0.0, ge=0, description="Weight of the SFT term: mean NLL per token of the chosen actions.")
    simpo_gamma: float = Field(0.5, description="SimPO target reward margin.")
    value_weighted: bool = Field(
        False, description="stepwise: weight each pair's loss by its value gap Q̂_w − Q̂_l, as given (not normalized; "
                           "trajalign's returns lie in [0, 1], so weights do too); pairs without values get weight 1.")

    @model_validator(mode="after")
    def _value_weighting_is_stepwise(self) -> LossConfig:
        if self.value_weighted and self.algo != "stepwise":
            raise ValueError(f"value_weighted applies to algo 'stepwise', not {self.algo!r}")
        return self


def phi(i: torch.Tensor, n: torch.Tensor, gamma: float) -> torch.Tensor:
    """DMPO weight of the i-th action (from 0) of a side with n actions: (γ^i − γ^n)/(1 − γ^n); γ = 1: (n − i)/n.

    Computed in float64 through expm1, so γ → 1 is continuous; returned as float32. φ(0, n) = 1,
    φ(n, n) = 0, and the weights sum to what one unit shift of the occupancy log-ratio needs
    (DESIGN.md §6). Where n = 0 (a padded side) the weight is 0.
    """
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    i, n = torch.as_tensor(i, dtype=torch.float64), torch.as_tensor(n, dtype=torch.float64)
    safe_n = n.clamp(min=1)
    if gamma == 1:
        weights = (safe_n - i) / safe_n
    else:
        log_gamma = math.log(gamma)
        # (γ^i − γ^n)/(1 − γ^n) = (expm1(i·lnγ) − expm1(n·lnγ)) / −expm1(n·lnγ), exact as γ → 1.
        weights = (torch.expm1(i * log_gamma) - torch.expm1(safe_n * log_gamma)) / -torch.expm1(safe_n * log_gamma)
    return torch.where(n > 0, weights, 0.0).float()


# ---- rewards and losses --------------------------------------------------------------------------


@dataclass(frozen=True)
class _SideLogps:
    policy: torch.Tensor  # [B, N] action log-probs, 0 where padded
    reference: torch.Tensor | None  # [B, N]
    mask: torch.Tensor  # [B, N] bool
    tokens: torch.Tensor  # [B, N]

    @property
    def delta(self) -> torch.Tensor:
        return torch.where(self.mask, self.policy - self.reference, 0.0)


def _sum_reward(config: LossConfig, side: _SideLogps) -> torch.Tensor:
    """dpo, ipo: β Σ_i Δ_i."""
    return config.beta * side.delta.sum(-1)


def _occupancy_reward(config: LossConfig, side: _SideLogps) -> torch.Tensor:
    """dmpo, stepwise: β Σ_i φ_γ(i, n) Δ_i, i counted from the branch."""
    steps = torch.arange(side.mask.shape[-1], device=side.mask.device)
    weights = phi(steps, side.mask.sum(-1, keepdim=True), config.gamma).to(side.policy.device)
    return config.beta * (weights * side.delta).sum(-1)


def _length_averaged_reward(config: LossConfig, side: _SideLogps) -> torch.Tensor:
    """simpo: β · (Σ action log-probs) / (number of action tokens); no reference."""
    tokens = torch.where(side.mask, side.tokens, 0.0).sum(-1)
    if bool((tokens <= 0).any()):
        raise ValueError("simpo needs the token count of each action (TurnLogps.*_tokens), and a pair has none")
    return config.beta * torch.where(side.mask, side.policy, 0.0).sum(-1) / tokens


def _sigmoid_loss(config: LossConfig, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(chosen - rejected)


def _ipo_loss(config: LossConfig, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """(h − 1/(2β))² with h = Σ Δ^w − Σ Δ^l, the log-ratio sums before β (IPO, Azar et al. 2023; as TRL)."""
    return ((chosen - rejected) / config.beta - 1 / (2 * config.beta)) ** 2


def _simpo_loss(config: LossConfig, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(chosen - rejected - config.simpo_gamma)


@dataclass(frozen=True)
class LossSpec:
    reward: Callable[[LossConfig, _SideLogps], torch.Tensor]
    loss: Callable[[LossConfig, torch.Tensor, torch.Tensor], torch.Tensor]  # (config, r(w), r(l)) -> [B]
    needs_reference: bool = True


LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(_sum_reward, _sigmoid_loss),
    "dmpo": LossSpec(_occupancy_reward, _sigmoid_loss),
    "stepwise": LossSpec(_occupancy_reward, _sigmoid_loss),
    "ipo": LossSpec(_sum_reward, _ipo_loss),
    "simpo": LossSpec(_length_averaged_reward, _simpo_loss, needs_reference=False),
}
assert set(LOSSES) == set(ALGORITHMS)


def _sides(config: LossConfig, policy: TurnLogps, reference: TurnLogps | None) -> tuple[_SideLogps, _SideLogps]:
    spec = LOSSES[config.algo]
    if spec.needs_reference and reference is None:
        raise ValueError(f"algo {config.algo!r} needs reference log-probs (pair.ref_logps_*, see reference_logps); "
                         "only 'simpo' is reference-free")
    sides = []
    for name in ("chosen", "rejected"):
        logps, mask, tokens = policy.side(name)
        ref = None
        if spec.needs_reference:
            ref, ref_mask, _ = reference.side(name)
            if ref_mask.shape != mask.shape or not bool((ref_mask.to(mask.device) == mask).all()):
                raise ValueError(f"policy and reference disagree on the actions of the {name} sides "
                                 f"(masks {tuple(mask.shape)} vs {tuple(ref_mask.shape)}); build both from the same "
                                 "pairs in the same order")
            ref = ref.to(logps.device)
        sides.append(_SideLogps(logps, ref, mask, tokens))
    return sides[0], sides[1]


def sequence_rewards(config: LossConfig, policy: TurnLogps, reference: TurnLogps | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The implicit rewards r(w), r(l) of each pair [B] under `config.algo`."""
    chosen, rejected = _sides(config, policy, reference)
    reward = LOSSES[config.algo].reward
    return reward(config, chosen), reward(config, rejected)


def preference_loss(config: LossConfig, policy: TurnLogps, reference: TurnLogps | None,
                    value_gap: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair loss [B] and per-pair metrics [B] (detached).

    The trainer backwards `loss.sum() / global_batch` per micro-batch. `value_gap` [B] is
    Q̂_w − Q̂_l per pair (NaN where unknown) and is used by `value_weighted` stepwise only.
    """
    chosen_reward, rejected_reward = sequence_rewards(config, policy, reference)
    loss = LOSSES[config.algo].loss(config, chosen_reward, rejected_reward)
    if config.value_weighted:
        loss = loss * _value_weights(value_gap, loss)
    chosen_logps = torch.where(policy.chosen_mask, policy.chosen, 0.0).sum(-1)
    metrics = {
        "rewards/chosen": chosen_reward.detach(),
        "rewards/rejected": rejected_reward.detach(),
        "rewards/margins": (chosen_reward - rejected_reward).detach(),
        "rewards/accuracies": (chosen_reward > rejected_reward).float(),
        "logps/chosen": chosen_logps.detach(),
        "logps/rejected": torch.where(policy.rejected_mask, policy.rejected, 0.0).sum(-1).detach(),
    }
    if config.alpha > 0:
        tokens = torch.where(policy.chosen_mask, policy.chosen_tokens, 0.0).sum(-1)
        if bool((tokens <= 0).any()):
            raise ValueError("the SFT term (alpha > 0) needs the token count of the chosen actions "
                             "(TurnLogps.chosen_tokens from pair_turn_logps), and a pair has none")
        sft = -chosen_logps / tokens
        loss = loss + config.alpha * sft
        metrics["loss/sft"] = sft.detach()
    return loss, metrics


def _value_weights(value_gap: torch.Tensor | None, loss: torch.Tensor) -> torch.Tensor:
    """Per-pair weight: the value gap as given (not normalized by a batch statistic, which would make a
    pair's loss depend on its micro-batch), 1 where the gap is unknown (NaN)."""
    if value_gap is None:
        raise ValueError("value_weighted needs value_gap: Q̂_w − Q̂_l per pair, NaN for pairs without values")
    gap = torch.as_tensor(value_gap, dtype=loss.dtype, device=loss.device)
    if gap.shape != loss.shape:
        raise ValueError(f"value_gap has shape {tuple(gap.shape)}, the batch has {tuple(loss.shape)} pairs")
    known = ~torch.isnan(gap)
    if bool((gap[known] < 0).any()) or bool(torch.isinf(gap).any()):
        raise ValueError("value_gap must be finite and >= 0 (the chosen side's value is the higher); "
                         f"got {gap.tolist()}")
    return torch.where(known, gap, 1.0)


__all__ = ["ALGORITHMS", "LOSSES", "Algorithm", "LossConfig", "LossSpec", "phi", "preference_loss", "sequence_rewards"]
