"""What made each output of a `trajalign run` directory, so a rerun never builds on stale work.

`run_pipeline` skips a stage whose output is complete and continues one that was cut short. That is
right only while the settings that made the output still hold. Each stage is therefore recorded in
`stages.json`: its own settings and a fingerprint that also covers its inputs (the stages it read,
the scenario, a model given from outside). A rerun whose settings or inputs differ from the record,
for an output that is still there, stops with an error that names the stage, the settings that
changed and every recorded output made from it, instead of mixing results of two configurations.
The fingerprint is what the stages made from it record as their input.

Settings are recorded in full, defaults included, so a default that a later version of trajalign
changes is a change. A setting the record does not have (a field added since) is taken as
unchanged, since new fields keep the old behaviour at their defaults. An output that is there but not
recorded (a run directory from before this ledger, or a file copied in by hand to reuse it) is taken
as made with the current settings, and recorded so.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LEDGER = "stages.json"


class StageLedgerError(ValueError):
    """`stages.json` cannot be used."""


class StaleStageError(StageLedgerError):
    """A stage's output was made with other settings than the run's current ones."""


class StageLedger:
    """`stages.json` of one run directory: per stage, its settings, its inputs and a fingerprint of both."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out / LEDGER
        self.records = self._read() if self.path.is_file() else {}
        self.fingerprints: dict[str, str] = {}  # of the stages and inputs met so far in this run

    def check_and_record(self, output: Path, settings: Mapping[str, Any], *inputs: str,
                         free: Iterable[str] = ()) -> None:
        """Raise StaleStageError if `output` is there but was made otherwise; else record how it is made.

        A stage is named by its output's file name. `inputs` names the stages and outside inputs,
        met earlier in this run, that it reads. Settings named in `free` may differ from the record
        (an unfinished trainer run continues with a new budget).
        """
        self._record(output.name, output, settings, inputs, frozenset(free))

    def note_input(self, name: str, settings: Mapping[str, Any]) -> None:
        """Something the run reads from outside its directory (the scenario, a given model): never stale
        itself, but the stages that read it are when it changes."""
        self._record(name, None, settings, (), frozenset())

    def _record(self, stage: str, output: Path | None, settings: Mapping[str, Any], inputs: tuple[str, ...],
                free: frozenset[str]) -> None:
        settings = json.loads(json.dumps(settings, sort_keys=True))  # as it reads back from the file
        read = {name: self.fingerprints[name] for name in inputs}
        recorded = self.records.get(stage)
        if recorded is not None and not self._changes(recorded, settings, read, free):
            # Unchanged: the stages made from it keep their records. New or free settings join the record.
            self.fingerprints[stage] = recorded["fingerprint"]
            if recorded["settings"] != settings:
                self._write({**self.records, stage: {**recorded, "settings": settings}})
            return
        if recorded is not None and output is not None and output.exists():
            raise StaleStageError(self._stale_message(stage, output, recorded, settings, read, free))
        fingerprint = hashlib.sha256(json.dumps({"settings": settings, "inputs": read},
                                                sort_keys=True).encode()).hexdigest()
        self.fingerprints[stage] = fingerprint
        self._write({**self.records, stage: {"in_run_dir": output is not None, "settings": settings, "inputs": read,
                                             "fingerprint": fingerprint}})

    @staticmethod
    def _changes(recorded: Mapping[str, Any], settings: Mapping[str, Any], read: Mapping[str, str],
                 free: frozenset[str]) -> list[str]:
        """What differs from the record: settings it has (but for `free` ones), then inputs."""
        old, new = _flatten(recorded["settings"]), _flatten(settings)
        changes = [f"{name}: {value} -> {new[name] if name in new else '(no longer a setting)'}"
                   for name, value in sorted(old.items())
                   if name.split(".")[0] not in free and new.get(name, _MISSING) != value]
        return changes + [f"its input '{name}' changed" for name, fingerprint in read.items()
                          if recorded["inputs"].get(name) != fingerprint]

    def _write(self, records: dict[str, dict[str, Any]]) -> None:
        self.records = records
        staging = self.path.with_name(self.path.name + ".tmp")
        staging.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        staging.replace(self.path)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            records = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise StageLedgerError(f"{self.path}: not valid JSON ({exc}); delete it to record the stages "
                                   "afresh") from None
        fields = {"in_run_dir", "settings", "inputs", "fingerprint"}
        if not isinstance(records, dict) or not all(isinstance(r, dict) and fields <= r.keys()
                                                    for r in records.values()):
            raise StageLedgerError(f"{self.path}: not a stage ledger (each stage needs {', '.join(sorted(fields))});"
                                   " delete it to record the stages afresh")
        return records

    def _stale_message(self, stage: str, output: Path, recorded: Mapping[str, Any], settings: Mapping[str, Any],
                       read: Mapping[str, str], free: frozenset[str]) -> str:
        changes = self._changes(recorded, settings, read, free)
        remove = [shlex.quote(str(self.out / name)) for name in [stage, *self._made_from(stage)]
                  if self.records[name]["in_run_dir"] and (self.out / name).exists()]
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
                if current in record["inputs"] and name not in found and name != stage:
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


__all__ = ["LEDGER", "StageLedger", "StageLedgerError", "StaleStageError"]
