"""What made each output of a `trajalign run` directory, so a rerun never builds on stale work.

`run_pipeline` skips a stage whose output is complete and continues one that was cut short. That is
right only while the settings that made the output still hold. Each stage is therefore recorded in
`stages.json`: its own settings and a fingerprint that also covers the stages it read. A rerun whose
fingerprint differs from the recorded one, for an output that is still there, stops with an error that
names the stage, the settings that changed and every recorded output made from it, instead of
mixing results of two configurations.

An output that is there but not recorded (a run directory from before this ledger, or a file copied
in by hand to reuse it) is taken as made with the current settings, and recorded so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LEDGER = "stages.json"


class StaleStageError(ValueError):
    """A stage's output was made with other settings than the run's current ones."""


class StageLedger:
    """`stages.json` of one run directory: per stage, its settings, its inputs and a fingerprint of both."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out / LEDGER
        try:
            self.records: dict[str, dict[str, Any]] = (
                json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {})
        except json.JSONDecodeError as exc:
            raise StaleStageError(f"{self.path}: not valid JSON ({exc}); delete it to record the stages "
                                  "afresh") from None
        self.keys: dict[str, str] = {}  # fingerprints of the stages entered in this run

    def enter(self, output: Path, settings: Mapping[str, Any], *after: str) -> None:
        """Check `output` against its record (raising StaleStageError if it is stale), then record it.

        A stage is named by its output's file name; `after` names the stages and inputs, entered
        earlier in this run, that it reads.
        """
        self._record(output.name, output, settings, after)

    def note_input(self, name: str, settings: Mapping[str, Any]) -> None:
        """Something the run reads from outside its directory (the scenario, a given model): never stale
        itself, but the stages that read it are when it changes."""
        self._record(name, None, settings, ())

    def _record(self, stage: str, output: Path | None, settings: Mapping[str, Any], after: Iterable[str]) -> None:
        settings = json.loads(json.dumps(settings, sort_keys=True, default=str))  # as it reads back from the file
        inputs = {name: self.keys[name] for name in after}
        key = hashlib.sha256(json.dumps({"settings": settings, "after": inputs}, sort_keys=True).encode()).hexdigest()
        recorded = self.records.get(stage)
        if recorded is not None and recorded["key"] != key and output is not None and output.exists():
            raise StaleStageError(self._stale_message(stage, output, recorded, settings, inputs))
        self.keys[stage] = key
        if recorded is None or recorded["key"] != key:
            self.records[stage] = {"made_here": output is not None, "settings": settings, "after": inputs, "key": key}
            staging = self.path.with_name(self.path.name + ".tmp")
            staging.write_text(json.dumps(self.records, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            staging.replace(self.path)

    def _stale_message(self, stage: str, output: Path, recorded: Mapping[str, Any], settings: Mapping[str, Any],
                       inputs: Mapping[str, str]) -> str:
        old, new = _flatten(recorded["settings"]), _flatten(settings)
        changes = [f"{name}: {old[name]!r} -> {value!r}" if name in old else f"{name}: newly {value!r}"
                   for name, value in sorted(new.items()) if old.get(name, _MISSING) != value]
        changes += [f"{name}: no longer set" for name in sorted(old) if name not in new]
        changes += [f"its input '{name}' changed" for name, key in inputs.items()
                    if recorded["after"].get(name) != key]
        made_from = self._made_from(stage)
        remove = [str(self.out / name) for name in [stage, *made_from]
                  if self.records[name]["made_here"] and (self.out / name).exists()]
        return (f"{output} was made with other settings than this run's ({'; '.join(changes) or 'its inputs changed'}),"
                f" and rerunning would reuse it. Delete {' '.join(remove)} to redo "
                f"{'them' if len(remove) > 1 else 'it'} with the current settings, or use another out directory")

    def _made_from(self, stage: str) -> list[str]:
        """Recorded stages that read `stage`'s output, directly or through others."""
        found: list[str] = []
        frontier = [stage]
        while frontier:
            current = frontier.pop()
            for name, record in self.records.items():
                if current in record["after"] and name not in found and name != stage:
                    found.append(name)
                    frontier.append(name)
        return found


_MISSING = object()


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"config": {"epochs": 2}} -> {"config.epochs": 2}, so a change is named by its dotted path."""
    flat: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


__all__ = ["LEDGER", "StageLedger", "StaleStageError"]
