"""benchmarks/alignment_table.py --merge: one table from the cells of earlier runs' result files."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCHMARKS / "results"


def merge(tmp_path: Path, *files: Path, name: str = "merged") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / "alignment_table.py"), "--merge", *map(str, files),
                           "--name", name], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TRAJALIGN_RESULTS_DIR": str(tmp_path)})


def test_merging_two_domains_gives_the_table_of_the_run_that_did_both(tmp_path):
    """The committed tool-use table came from one run over both domains (reusing their cells); merging the
    two single-domain result files must give the same summary."""
    done = merge(tmp_path, RESULTS / "alignment_table_filesystem.json", RESULTS / "alignment_table_retail.json",
                 RESULTS / "alignment_table_retail.json")  # a file given twice adds nothing
    assert done.returncode == 0, done.stderr
    merged = json.loads((tmp_path / "merged.json").read_text())
    both = json.loads((RESULTS / "alignment_table_tool_use.json").read_text())
    fields = ["domain", "row", "seeds", "success_mean", "success_std", "reward_mean", "reward_std", "episodes",
              "pairs_per_seed"]
    assert [{key: entry[key] for key in fields} for entry in merged["summary"]] == \
        [{key: entry[key] for key in fields} for entry in both["summary"]]
    assert len(merged["cells"]) == 6 and merged["size"] == both["size"]
    assert [source["file"] for source in merged["sources"]][:2] == [
        str(RESULTS / "alignment_table_filesystem.json"), str(RESULTS / "alignment_table_retail.json")]
    markdown = (tmp_path / "merged.md").read_text()
    assert "Size full, assembled from alignment_table_filesystem.json" in markdown
    assert "| retail | RLlib PPO (admissible actions) | 9.1% ± 7.9% |" in markdown
    assert (tmp_path / "merged.png").stat().st_size > 0


def test_the_committed_full_table_comes_from_the_committed_runs(tmp_path):
    """alignment_table.json (docs/benchmarks.md, every domain) was merged from merged files; merging the five runs
    that did the work (two tool-use domains, three shop seeds) directly must give the same 3 x 3 summary."""
    done = merge(tmp_path, RESULTS / "alignment_table_filesystem.json", RESULTS / "alignment_table_retail.json",
                 *(RESULTS / f"alignment_table_shop_seed{seed}.json" for seed in range(3)))
    assert done.returncode == 0, done.stderr
    merged = json.loads((tmp_path / "merged.json").read_text())
    table = json.loads((RESULTS / "alignment_table.json").read_text())
    assert merged["summary"] == table["summary"]
    assert sorted((cell["domain"], cell["seed"]) for cell in merged["cells"]) == [
        (domain, seed) for domain in ("filesystem", "retail", "shop") for seed in range(3)]
    assert all(entry["domain_seeds"] == 3 for entry in merged["summary"])
    shop = json.loads((RESULTS / "alignment_table_shop.json").read_text())  # the rerun of seed 0, not its first run
    assert [Path(source["file"]).name for source in shop["sources"]] == [
        f"alignment_table_shop_seed{seed}.json" for seed in range(3)]


def test_merge_refuses_other_sizes_and_conflicting_cells(tmp_path):
    sizes = merge(tmp_path, RESULTS / "alignment_table_filesystem.json", RESULTS / "alignment_table_quick.json")
    assert sizes.returncode != 0 and "ran at different sizes" in sizes.stderr and "sft_seconds" in sizes.stderr

    changed = json.loads((RESULTS / "alignment_table_filesystem.json").read_text())
    changed["cells"][0]["scores"]["sft"]["success"] = 0.5
    copy = tmp_path / "changed.json"
    copy.write_text(json.dumps(changed))
    conflict = merge(tmp_path, RESULTS / "alignment_table_filesystem.json", copy)
    assert conflict.returncode != 0 and "filesystem seed 0 has different scores" in conflict.stderr

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "length_bias", "rows": []}))
    wrong = merge(tmp_path, other)
    assert wrong.returncode != 0 and "not an alignment_table result file" in wrong.stderr
    assert not (tmp_path / "merged.json").exists()  # nothing written by a refused merge
