"""Whether two `trajalign run` directories made the same things: the check that a run reproduces.

For every JSONL file both directories hold (rollouts, expert and SFT data, pairs, evaluation
episodes), it counts each side's records and how many are the same in both, matched by key and
compared on content, ignoring file order and wall-clock timings:

- episodes are keyed by (task, episode seed) and compared on everything but `timing`;
- pairs are keyed by id and compared on every field;

and it sets the test success of each model in `results.json` side by side. Exit status 0 when
every shared file holds the same records, 1 otherwise.

    python benchmarks/compare_runs.py runs/bench-align-copies-probe2/seed-0 runs/bench-align-copies-repro/seed-0 \\
        [--name compare_runs]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import markdown_table, write_results


def records(path: Path) -> dict:
    """The file's records by key, without what differs between two runs of the same work (timings)."""
    keyed = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "task_id" in record and "turns" in record:  # an episode
            record.pop("timing", None)
            keyed[(record["task_id"], record.get("seed"))] = record
        else:
            keyed[record["id"]] = record
    return keyed


def compare(first: Path, second: Path) -> dict:
    files = {}
    for path in sorted(first.glob("*.jsonl")):
        other = second / path.name
        if not other.is_file():
            continue
        a, b = records(path), records(other)
        files[path.name] = {"first": len(a), "second": len(b), "same": sum(a[key] == b.get(key) for key in a)}
    success = {}
    if (first / "results.json").is_file() and (second / "results.json").is_file():
        rows = [{row["name"]: row["success_rate"] for row in json.loads((run / "results.json").read_text())["rows"]}
                for run in (first, second)]
        success = {name: [rows[0][name], rows[1].get(name)] for name in rows[0]}
    return {"first": str(first), "second": str(second), "files": files, "test_success": success,
            "identical": all(f["first"] == f["second"] == f["same"] for f in files.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--name", default="compare_runs", help="result file name (in benchmarks/results)")
    args = parser.parse_args()
    for run in (args.first, args.second):
        if not run.is_dir():
            parser.error(f"{run} is not a run directory")
    result = compare(args.first, args.second)
    rows = [[name, f["first"], f["second"], f["same"]] for name, f in result["files"].items()]
    rows += [[f"test success: {name}", f"{a:.1%}", "—" if b is None else f"{b:.1%}", ""]
             for name, (a, b) in result["test_success"].items()]
    table = markdown_table(["file", f"records in {args.first}", f"records in {args.second}", "same in both"], rows)
    print(table)
    print("identical" if result["identical"] else "the runs differ")
    print(f"results: {write_results(args.name, result, table)}")
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
