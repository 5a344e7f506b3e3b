"""Optimizers for SFT and preference training, chosen by name.

`adamw`: AdamW on every parameter. `muon`: Muon on the hidden weight matrices (attention and MLP) and
AdamW on everything else (embeddings, a tied or separate output head, norms, biases), the split of
Keller Jordan's Muon. Muon replaces each matrix's momentum by its nearest semi-orthogonal matrix
(five Newton-Schulz iterations), so every direction of the update moves at the same rate; on the tiny
from-scratch models it learns more per step than AdamW (docs/benchmarks.md, SFT section).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch

OptimizerName = Literal["adamw", "muon"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)

ADAMW_BETAS = (0.9, 0.95)
ADAMW_EPS = 1e-8
MUON_MOMENTUM = 0.95
# The quintic iteration's coefficients (Keller Jordan): singular values are pushed to about [0.7, 1.2] in
# five steps, which is as orthogonal as the update needs to be.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5


def make_optimizer(model: Any, learning_rate: float, weight_decay: float, name: OptimizerName = "adamw",
                   muon_learning_rate: float = 0.02) -> torch.optim.Optimizer:
    """The named optimizer over `model`'s trainable parameters; weight decay on matrices only.

    `learning_rate` is AdamW's (for `muon`: of the embeddings, head, norms and biases), and
    `muon_learning_rate` the Muon matrices'. Both follow the same schedule.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if name == "adamw":
        decay = [p for _, p in params if p.ndim >= 2]
        no_decay = [p for _, p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=ADAMW_BETAS, eps=ADAMW_EPS)
    if name == "muon":
        embeddings = _embedding_weights(model)
        hidden = [p for _, p in params if p.ndim == 2 and id(p) not in embeddings]
        others = [p for _, p in params if p.ndim != 2 or id(p) in embeddings]
        return MuonWithAdamW([
            {"params": hidden, "lr": muon_learning_rate, "weight_decay": weight_decay, "use_muon": True},
            {"params": [p for p in others if p.ndim >= 2], "lr": learning_rate, "weight_decay": weight_decay},
            {"params": [p for p in others if p.ndim < 2], "lr": learning_rate, "weight_decay": 0.0},
        ])
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _embedding_weights(model: Any) -> set[int]:
    """ids of the token and position embeddings and the output head: they stay with AdamW under Muon."""
    found = {id(module.weight) for module in model.modules() if isinstance(module, torch.nn.Embedding)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        found.add(id(head.weight))
    return found


def orthogonalize(matrix: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to `matrix`, approximately (singular values near 1)."""
    a, b, c = NEWTON_SCHULZ
    x = matrix / (matrix.norm() + 1e-7)  # singular values at most 1, where the iteration converges
    wide = x.size(0) <= x.size(1)
    if not wide:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the groups marked `use_muon` (2-D parameters only), AdamW for the others.

    Muon: Nesterov momentum, orthogonalized, scaled by sqrt(max(1, rows / cols)) so tall and wide
    matrices get updates of similar size per element. AdamW: torch.optim.AdamW's update, with
    decoupled weight decay.
    """

    def __init__(self, groups: list[dict[str, Any]]):
        for group in groups:
            group.setdefault("use_muon", False)
            if group["use_muon"] and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon updates matrices only; put other parameters in an AdamW group")
        super().__init__(groups, {"weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise ValueError("MuonWithAdamW.step takes no closure")
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = self._muon_update(p) if group["use_muon"] else self._adamw_update(p)
                p.mul_(1 - lr * decay)
                p.add_(update, alpha=-lr)

    def _muon_update(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if not state:
            state["momentum"] = torch.zeros_like(p)
        momentum = state["momentum"]
        momentum.lerp_(p.grad, 1 - MUON_MOMENTUM)
        nesterov = p.grad.lerp(momentum, MUON_MOMENTUM)
        return orthogonalize(nesterov) * max(1.0, p.size(0) / p.size(1)) ** 0.5

    def _adamw_update(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        beta1, beta2 = ADAMW_BETAS
        state["step"] += 1
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        first = state["exp_avg"] / (1 - beta1 ** state["step"])
        second = state["exp_avg_sq"] / (1 - beta2 ** state["step"])
        return first / (second.sqrt() + ADAMW_EPS)


__all__ = ["OPTIMIZERS", "MuonWithAdamW", "OptimizerName", "make_optimizer", "orthogonalize"]
