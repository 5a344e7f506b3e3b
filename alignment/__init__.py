"""Trajectory preference pairs, multi-turn DPO losses and the trainer (see DESIGN.md §6-§7)."""

from trajalign.alignment.builders import PairStats, branch_pairs, outcome_pairs
from trajalign.alignment.formats import FORMATS, FormatError, export_pairs, import_pairs
from trajalign.alignment.logprobs import (
    PairTokens,
    TurnLogps,
    pair_tokens,
    pair_turn_logps,
    reference_logps,
)
from trajalign.alignment.losses import (
    ALGORITHMS,
    LossConfig,
    phi,
    preference_loss,
    sequence_rewards,
)
from trajalign.alignment.pairs import PreferencePair

__all__ = [
    "ALGORITHMS",
    "FORMATS",
    "FormatError",
    "LossConfig",
    "PairStats",
    "PairTokens",
    "PreferencePair",
    "TurnLogps",
    "branch_pairs",
    "export_pairs",
    "import_pairs",
    "outcome_pairs",
    "pair_tokens",
    "pair_turn_logps",
    "phi",
    "preference_loss",
    "reference_logps",
    "sequence_rewards",
]
