"""Shared output helpers for the benchmark scripts: every script writes JSON and a markdown table."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

# benchmarks/run_all.py points every script elsewhere (a smoke run must not overwrite committed results).
RESULTS = Path(os.environ.get("TRAJALIGN_RESULTS_DIR") or Path(__file__).resolve().parent / "results")


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_results(name: str, payload: dict, table: str, results_dir: Path | None = None) -> Path:
    """Write `<results_dir>/<name>.json` and `.md` (default `results/`); return the markdown path.

    Tests pass a temporary `results_dir`, so they never overwrite the committed results.
    """
    results_dir = Path(results_dir) if results_dir is not None else RESULTS
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    payload = {"benchmark": name, "date": stamp, "machine": machine(), **payload}
    (results_dir / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    markdown = results_dir / f"{name}.md"
    markdown.write_text(f"{table}\n\nRun {stamp} on {payload['machine']['cpus']} CPUs.\n")
    return markdown


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
