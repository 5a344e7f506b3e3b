"""Append-only JSON Lines files of pydantic records (trajectories, preference pairs).

Each record is appended and flushed as soon as it is finished, and nothing already written is
rewritten. A line cut short by a crash is reported with its line number and skipped on reading.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)
Record = TypeVar("Record", bound=BaseModel)


class JsonlWriter:
    """Appends records to a JSONL file, one flushed line each.

    If the file ends in the middle of a line (a crash while writing), a newline is appended first
    so the partial line stays separate and new records stay readable.
    """

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._file = open(self.path, "a+b")
        if self._file.tell() > 0:
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":
                self._file.write(b"\n")
        self.written = 0

    def write(self, record: BaseModel) -> None:
        self._file.write(record.model_dump_json().encode("utf-8") + b"\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self.written += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def atomic_jsonl(path: str | Path) -> Iterator[JsonlWriter]:
    """A writer whose records appear at `path` only once the `with` block completes.

    Records go to `<path>.partial` first, so an interrupted or failed write never leaves a file that
    looks whole; on an error the partial file is removed and an existing `path` is left as it was.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with JsonlWriter(partial) as writer:
            yield writer
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


class BadLine(BaseModel):
    path: str
    line: int
    problem: str


class JsonlReader(Generic[Record]):
    """Iterates the valid records of a JSONL file; bad lines are skipped and listed in `bad_lines`."""

    def __init__(self, path: str | Path, model: type[Record], on_bad_line: Callable[[BadLine], None] | None = None):
        self.path = Path(path)
        self.model = model
        self.bad_lines: list[BadLine] = []
        self.on_bad_line = on_bad_line or (lambda bad: log.warning("%s:%d skipped: %s", bad.path, bad.line, bad.problem))

    def __iter__(self) -> Iterator[Record]:
        self.bad_lines = []
        with open(self.path, "rb") as file:
            for number, raw in enumerate(file, start=1):
                if not raw.strip():
                    continue
                try:
                    yield self.model.model_validate_json(raw)
                except ValidationError as exc:
                    self._skip(number, _first_problem(exc))

    def _skip(self, number: int, problem: str) -> None:
        bad = BadLine(path=str(self.path), line=number, problem=problem)
        self.bad_lines.append(bad)
        self.on_bad_line(bad)


def read_jsonl(path: str | Path, model: type[Record]) -> list[Record]:
    """All valid records of a file; bad lines are logged with their line numbers and skipped."""
    return list(JsonlReader(path, model))


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    if error["type"] == "json_invalid":
        return f"not valid JSON ({error['msg']}); a write was probably cut short"
    field = ".".join(str(part) for part in error["loc"]) or "(record)"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"field '{field}': {error['msg']}{more}"


__all__ = ["BadLine", "JsonlReader", "JsonlWriter", "atomic_jsonl", "read_jsonl"]
