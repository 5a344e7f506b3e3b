"""Per-action log-probs of preference pairs, with the shared prefix computed once.

A pair is one prefix and two continuations. Every loss of `losses.py` needs, per side, the sum of
log-probs of each trainable action's tokens (token j predicted at position j-1); observation,
tool, user and system tokens are context and are never scored.

`pair_turn_logps` computes them in one of two ways that agree to float rounding:

- shared prefix (default): the micro-batch's prefixes run once, left-padded, without their last
  token; their KV cache is repeated for the two sides, and all 2B continuations run right-padded
  behind it, each led by its prefix's last token (so the first continuation token is predicted
  inside this forward, even when it starts an action). Agent pairs branch late, so the prefix is
  most of the tokens and its cost is paid once instead of twice (DESIGN.md §7).
- plain: each side is one row, prefix + continuation; the baseline the shared path is checked and
  timed against.

Logits are computed only at the positions that predict an action token (`logits_to_keep`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm
from trajalign.agents.chat import ChatFormat
from trajalign.agents.llm import cache_argument, output_cache
from trajalign.agents.sft import _accepts_logits_to_keep
from trajalign.alignment.pairs import PreferencePair
from trajalign.envs.trajectory import Turn
from transformers import DynamicCache

Side = Literal["chosen", "rejected"]
SIDES: tuple[Side, Side] = ("chosen", "rejected")


@dataclass(frozen=True)
class PairTokens:
    """One pair in the model's token layout."""

    prefix: list[int]
    chosen: list[int]
    rejected: list[int]
    chosen_turn: list[int]  # per token of `chosen`: index of its trainable action, -1 for context tokens
    rejected_turn: list[int]
    n_chosen: int  # trainable actions per side
    n_rejected: int

    def tokens(self, side: Side) -> list[int]:
        return self.chosen if side == "chosen" else self.rejected

    def turns(self, side: Side) -> list[int]:
        return self.chosen_turn if side == "chosen" else self.rejected_turn

    def actions(self, side: Side) -> int:
        return self.n_chosen if side == "chosen" else self.n_rejected

    def action_tokens(self, side: Side) -> list[int]:
        """Token count of each trainable action of `side` (for length-averaged losses)."""
        counts = [0] * self.actions(side)
        for index in self.turns(side):
            if index >= 0:
                counts[index] += 1
        return counts


def pair_tokens(fmt: ChatFormat, pair: PreferencePair, system: str) -> PairTokens:
    """The pair as token ids: `fmt.turn_segments` of prefix + each side, split where the prefix ends.

    `system` is the system prompt for prefixes recorded without a system turn. Both sides must
    render the prefix to the same ids, since the prefix is computed once for both.
    """
    has_system = pair.prefix[0].role == "system"
    if all(turn.role == "system" for turn in pair.prefix):
        raise ValueError(f"pair {pair.id}: the prefix has no goal (user) turn after the system prompt")
    prefix_segments = len(pair.prefix) + (0 if has_system else 1)  # turn_segments adds the system segment
    layouts: dict[str, tuple[list[int], list[int], list[int], int]] = {}
    for side in SIDES:
        segments = fmt.turn_segments([*pair.prefix, *getattr(pair, side)], system)
        prefix = [token for _, ids in segments[:prefix_segments] for token in ids]
        layouts[side] = (prefix, *_continuation(segments[prefix_segments:]))
    if layouts["chosen"][0] != layouts["rejected"][0]:
        raise ValueError(f"pair {pair.id}: the chat format renders the shared prefix to different token ids before "
                         "the chosen and the rejected continuation; the prefix must not depend on what follows it")
    (prefix, chosen, chosen_turn, n_chosen), (_, rejected, rejected_turn, n_rejected) = (
        layouts["chosen"], layouts["rejected"])
    return PairTokens(prefix, chosen, rejected, chosen_turn, rejected_turn, n_chosen, n_rejected)


def _continuation(segments: list[tuple[Turn, list[int]]]) -> tuple[list[int], list[int], int]:
    """Concatenated ids, per-token action index (-1 for context), and the number of trainable actions."""
    ids: list[int] = []
    action: list[int] = []
    actions = 0
    for turn, segment in segments:
        ids.extend(segment)
        if turn.trainable:
            action.extend([actions] * len(segment))
            actions += 1
        else:
            action.extend([-1] * len(segment))
    return ids, action, actions


@dataclass
class TurnLogps:
    """Per-action log-prob sums of a batch of pairs, padded to the longest side in the batch."""

    chosen: torch.Tensor  # [B, Nc] float32, 0 where padded
    rejected: torch.Tensor  # [B, Nr]
    chosen_mask: torch.Tensor  # [B, Nc] bool: a real action
    rejected_mask: torch.Tensor
    chosen_tokens: torch.Tensor  # [B, Nc] token count of each action; zeros for stored references
    rejected_tokens: torch.Tensor

    @classmethod
    def from_lists(cls, chosen: Sequence[Sequence[float]] | Sequence[torch.Tensor],
                   rejected: Sequence[Sequence[float]] | Sequence[torch.Tensor],
                   chosen_tokens: Sequence[Sequence[int]] | None = None,
                   rejected_tokens: Sequence[Sequence[int]] | None = None) -> TurnLogps:
        """Pad per-pair lists (or 1-d tensors, keeping autograd) of action log-probs into a batch."""
        fields: dict[str, torch.Tensor] = {}
        for side, values, tokens in (("chosen", chosen, chosen_tokens), ("rejected", rejected, rejected_tokens)):
            rows = [torch.as_tensor(row, dtype=torch.float32) for row in values]
            width = max((len(row) for row in rows), default=0)
            fields[side] = torch.stack([F.pad(row, (0, width - len(row))) for row in rows]) if rows \
                else torch.zeros((0, 0))
            fields[f"{side}_mask"] = torch.tensor([[i < len(row) for i in range(width)] for row in rows],
                                                  dtype=torch.bool).reshape(len(rows), width)
            counts = tokens if tokens is not None else [[0] * len(row) for row in rows]
            fields[f"{side}_tokens"] = torch.tensor([list(row) + [0] * (width - len(row)) for row in counts],
                                                    dtype=torch.float32).reshape(len(rows), width)
        return cls(**fields)

    @classmethod
    def from_reference(cls, pairs: Sequence[PreferencePair]) -> TurnLogps:
        """The stored reference log-probs of `pairs` (see `reference_logps`)."""
        for pair in pairs:
            if not pair.has_reference:
                raise ValueError(f"pair {pair.id} has no reference log-probs (ref_logps_chosen/ref_logps_rejected); "
                                 "compute them with trajalign.alignment.reference_logps first")
        return cls.from_lists([pair.ref_logps_chosen for pair in pairs], [pair.ref_logps_rejected for pair in pairs])

    def to(self, device: torch.device | str) -> TurnLogps:
        return TurnLogps(**{name: getattr(self, name).to(device) for name in self.__dataclass_fields__})

    def side(self, side: Side) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probs, mask, token counts) of one side."""
        return getattr(self, side), getattr(self, f"{side}_mask"), getattr(self, f"{side}_tokens")


# ---- scoring -------------------------------------------------------------------------------------


def action_logp_sums(logits: torch.Tensor, targets: torch.Tensor, action: torch.Tensor, n_actions: int) -> torch.Tensor:
    """Per-action sums of log p(target) [R, n_actions] from `logits` [R, K, V] at K predicting positions.

    `targets` [R, K] is the token each position predicts and `action` [R, K] the index of the action
    it belongs to, -1 where it is not scored: those positions contribute nothing and get exactly
    zero gradient. Computed in float32 whatever the logits' dtype.
    """
    scored = action >= 0
    nll = F.cross_entropy(logits.float().flatten(0, 1), torch.where(scored, targets, -100).flatten(),
                          ignore_index=-100, reduction="none").view_as(targets)
    sums = nll.new_zeros((targets.shape[0], n_actions + 1))  # slot 0 collects the unscored positions (all 0)
    return -sums.scatter_add(1, (action + 1).clamp(min=0), nll)[:, 1:]


def pair_turn_logps(model: Any, batch: Sequence[PairTokens], pad_id: int, shared_prefix: bool = True) -> TurnLogps:
    """Per-action log-prob sums of both sides of each pair, with autograd.

    Both ways give the same numbers (to float rounding); `shared_prefix=True` computes each prefix
    once. A batch with a prefix of fewer than 2 tokens takes the plain path.
    """
    if not batch:
        raise ValueError("pair_turn_logps needs at least one pair")
    device = next(model.parameters()).device
    n = len(batch)
    widths = {side: max(pair.actions(side) for pair in batch) for side in SIDES}
    forward = _shared_prefix_sums if shared_prefix and min(len(pair.prefix) for pair in batch) >= 2 else _plain_sums
    sums = forward(model, batch, pad_id, device, max(widths.values()))
    masks = {side: torch.tensor([[i < pair.actions(side) for i in range(widths[side])] for pair in batch],
                                dtype=torch.bool, device=device).reshape(n, widths[side]) for side in SIDES}
    tokens = {side: torch.tensor([pair.action_tokens(side) + [0] * (widths[side] - pair.actions(side)) for pair in batch],
                                 dtype=torch.float32, device=device).reshape(n, widths[side]) for side in SIDES}
    chosen, rejected = sums[:n, :widths["chosen"]], sums[n:, :widths["rejected"]]
    return TurnLogps(chosen, rejected, masks["chosen"], masks["rejected"], tokens["chosen"], tokens["rejected"])


def _plain_sums(model: Any, batch: Sequence[PairTokens], pad_id: int, device: torch.device,
                n_actions: int) -> torch.Tensor:
    """[2B, N]: chosen rows then rejected rows, each prefix + continuation in one right-padded row."""
    rows = [(pair.prefix + pair.tokens(side), [-1] * len(pair.prefix) + pair.turns(side))
            for side in SIDES for pair in batch]
    input_ids, attention_mask, targets, action = _right_padded(rows, pad_id, device)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    return _score(model, inputs, targets, action, n_actions)


def _shared_prefix_sums(model: Any, batch: Sequence[PairTokens], pad_id: int, device: torch.device,
                        n_actions: int) -> torch.Tensor:
    """[2B, N] like `_plain_sums`, with each prefix's keys and values computed once for both sides."""
    # 1. Every prefix but its last token, left-padded, positions counted from each row's first token.
    lengths = [len(pair.prefix) - 1 for pair in batch]
    width = max(lengths)
    prefix_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    prefix_mask = torch.zeros((len(batch), width), dtype=torch.long)
    prefix_positions = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (pair, length) in enumerate(zip(batch, lengths)):
        prefix_ids[row, width - length:] = torch.tensor(pair.prefix[:-1])
        prefix_mask[row, width - length:] = 1
        prefix_positions[row, width - length:] = torch.arange(length)
    prefix_mask, prefix_positions = prefix_mask.to(device), prefix_positions.to(device)
    keep = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    output = model(input_ids=prefix_ids.to(device), attention_mask=prefix_mask, position_ids=prefix_positions,
                   use_cache=True, **keep)
    prefix_cache = output_cache(output)
    if prefix_cache is None:
        raise RuntimeError("the model returned no KV cache for the prefix (is gradient checkpointing on? it turns "
                           "use_cache off); use shared_prefix=False")
    # 2. All 2B continuations (chosen rows, then rejected rows) behind the repeated prefix cache, each led by
    #    its prefix's last token so the first continuation token is predicted here.
    rows = [([pair.prefix[-1], *pair.tokens(side)], [-1, *pair.turns(side)]) for side in SIDES for pair in batch]
    input_ids, continuation_mask, targets, action = _right_padded(rows, pad_id, device)
    start = torch.tensor(lengths * 2, device=device)
    positions = start[:, None] + torch.arange(input_ids.shape[1], device=device)
    cache = DynamicCache(ddp_cache_data=[(layer.keys.repeat(2, 1, 1, 1), layer.values.repeat(2, 1, 1, 1))
                                         for layer in prefix_cache.layers])
    attention_mask = torch.cat([prefix_mask.repeat(2, 1), continuation_mask], dim=1)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions, "use_cache": True,
              cache_argument(model): cache}
    return _score(model, inputs, targets, action, n_actions)


def _right_padded(rows: Sequence[tuple[list[int], list[int]]], pad_id: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids and attention mask of (ids, action index per id) rows, and per position the token it
    predicts and that token's action index (-1: not scored)."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    action = torch.full((len(rows), width), -1, dtype=torch.long)
    for row, (ids, actions) in enumerate(rows):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
        action[row, :len(actions)] = torch.tensor(actions)
    targets = F.pad(input_ids[:, 1:], (0, 1), value=pad_id)
    action = F.pad(action[:, 1:], (0, 1), value=-1)
    return input_ids.to(device), attention_mask.to(device), targets.to(device), action.to(device)


def _score(model: Any, inputs: dict[str, Any], targets: torch.Tensor, action: torch.Tensor,
           n_actions: int) -> torch.Tensor:
    """Forward `inputs`, keeping logits only where some row predicts an action token; per-action sums."""
    positions = (action >= 0).any(dim=0).nonzero().squeeze(1)
    if _accepts_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=positions).logits
    else:
        logits = model(**inputs).logits[:, positions]
    return action_logp_sums(logits, targets[:, positions], action[:, positions], n_actions)


# ---- reference log-probs -------------------------------------------------------------------------


def pad_token_id(fmt: ChatFormat) -> int:
    """The tokenizer's pad id, or its stop token (as SFT and rollouts pad)."""
    pad = fmt.tokenizer.pad_token_id
    return pad if pad is not None else fmt.stop_ids[0]


def system_for(pair: PreferencePair, system_prompts: Callable[[str], str]) -> str:
    """The system prompt to render a pair with: its own when recorded, else its scenario's."""
    return "" if pair.prefix[0].role == "system" else system_prompts(pair.scenario)


@torch.no_grad()
def reference_logps(model: Any, fmt: ChatFormat, pairs: Sequence[PreferencePair], system_prompts: Callable[[str], str],
                    batch_size: int = 8, progress: bool = True) -> list[PreferencePair]:
    """Copies of `pairs` with ref_logps_chosen/ref_logps_rejected filled by `model` (in eval mode).

    Computed once and stored with the pairs, so no reference model is in memory while training.
    `system_prompts(scenario)` gives the system prompt of pairs recorded without one.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tokens = [pair_tokens(fmt, pair, system_for(pair, system_prompts)) for pair in pairs]
    order = sorted(range(len(pairs)), key=lambda i: len(tokens[i].prefix) + max(len(tokens[i].chosen),
                                                                                 len(tokens[i].rejected)))
    pad = pad_token_id(fmt)
    filled: list[PreferencePair | None] = [None] * len(pairs)
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=len(pairs), desc="reference log-probs", unit="pair", disable=not progress)
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            logps = pair_turn_logps(model, [tokens[i] for i in indices], pad)
            for row, i in enumerate(indices):
                values = {f"ref_logps_{side}": getattr(logps, side)[row, :tokens[i].actions(side)].tolist()
                          for side in SIDES}
                try:
                    filled[i] = PreferencePair.model_validate({**pairs[i].model_dump(), **values})
                except ValueError as exc:
                    raise ValueError(f"pair {pairs[i].id}: its reference log-probs are unusable: {exc}") from None
            bar.update(len(indices))
        bar.close()
    finally:
        model.train(was_training)
    return [pair for pair in filled if pair is not None]


__all__ = [
    "PairTokens",
    "TurnLogps",
    "action_logp_sums",
    "pad_token_id",
    "pair_tokens",
    "pair_turn_logps",
    "reference_logps",
    "system_for",
]
