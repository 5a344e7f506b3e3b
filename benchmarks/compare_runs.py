"""Whether two `trajalign run` directories made the same things: the check that a run reproduces.

For every JSONL file both directories hold (rollouts, expert and SFT data, pairs, evaluation
episodes), it counts each side's records and how many are the same in both, matched by key and
compared on content, ignoring file order and wall-clock timings:

- episodes are keyed by (task, episode seed) and compared on everything but `timing`;
- pairs are keyed by id and compared on every field;

and it sets the test success of each model in `results.json` side by side. Records are compared
exactly (floats too). Exit status 0 when both directories hold the same JSONL files with the same
records, 1 when they differ (a file in one only, a record missing, changed, repeated or unreadable),
2 when they share no JSONL file at all.

    python benchmarks/compare_runs.py runs/bench-align-copies-probe2/seed-0 runs/bench-align-copies-repro/seed-0 \\
        [--name compare_runs]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import markdown_table, write_results


def records(path: Path) -> tuple[dict, int]:
    """The file's records by key, without what differs between two runs of the same work (timings),
    and the number of lines that were not a record (unreadable, or a key seen before)."""
    keyed, bad = {}, 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if "task_id" in record and "turns" in record:  # an episode
                record.pop("timing", None)
                key = (record["task_id"], record.get("seed"))
            else:
                key = record["id"]
        except (json.JSONDecodeError, KeyError, TypeError):
            bad += 1
            continue
        bad += key in keyed
        keyed[key] = record
    return keyed, bad


def compare(first: Path, second: Path) -> dict:
    names = [{path.name for path in run.glob("*.jsonl")} for run in (first, second)]
    files = {}
    for name in sorted(names[0] & names[1]):
        (a, bad_a), (b, bad_b) = records(first / name), records(second / name)
        files[name] = {"first": len(a), "second": len(b), "same": sum(a[key] == b.get(key) for key in a),
                       "bad_lines": bad_a + bad_b}
    success = {}
    if (first / "results.json").is_file() and (second / "results.json").is_file():
        rows = [{row["name"]: row["success_rate"]
                 for row in json.loads((run / "results.json").read_text(encoding="utf-8"))["rows"]}
                for run in (first, second)]
        success = {name: [rows[0][name], rows[1].get(name)] for name in rows[0]}
    only = {"first": sorted(names[0] - names[1]), "second": sorted(names[1] - names[0])}
    identical = bool(files) and not only["first"] and not only["second"] and all(
        f["first"] == f["second"] == f["same"] and not f["bad_lines"] for f in files.values())
    return {"first": str(first), "second": str(second), "files": files, "only_in": only,
            "test_success": success, "identical": identical}


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
    if not result["files"]:
        print(f"error: {args.first} and {args.second} share no JSONL file (give run directories, such as "
              "<out>/seed-0)", file=sys.stderr)
        return 2
    rows = []
    for name, f in result["files"].items():
        same = f"{f['same']} ({f['bad_lines']} bad lines)" if f["bad_lines"] else f["same"]
        rows.append([name, f["first"], f["second"], same])
    rows += [[name, "yes" if side == "first" else "no", "yes" if side == "second" else "no", ""]
             for side, names in result["only_in"].items() for name in names]
    rows += [[f"test success: {name}", f"{a:.1%}", "—" if b is None else f"{b:.1%}", ""]
             for name, (a, b) in result["test_success"].items()]
    table = markdown_table(["file", f"records in {args.first}", f"records in {args.second}", "same in both"], rows)
    print(table)
    print("identical" if result["identical"] else "the runs differ")
    print(f"results: {write_results(args.name, result, table)}")
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
