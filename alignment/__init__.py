"""Trajectory preference pairs, multi-turn DPO losses and the trainer (see DESIGN.md §6-§7)."""
