"""benchmarks/length_bias.py --smoke runs end to end and reports every (L, algorithm) cell."""

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "length_bias.py"
METRICS = ("p_correct_per_token", "p_correct", "delta_loglik_chosen", "correct_over_wrong", "final_loss")


def test_smoke_run_reports_every_cell_with_finite_numbers(tmp_path):
    lengths, algos = [0, 2], ["dpo", "dmpo", "stepwise"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--lengths", *map(str, lengths), "--algos", *algos,
         "--results-dir", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work"), "--name", "smoke"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    payload = json.loads((tmp_path / "results" / "smoke.json").read_text())
    cells = {(cell["L"], cell["algo"]): cell for cell in payload["cells"]}
    assert set(cells) == {(extra, algo) for extra in lengths for algo in algos}
    for key, cell in cells.items():
        for metric in METRICS:
            assert math.isfinite(cell[metric]), (key, metric, cell[metric])
        assert cell["steps"] == payload["settings"]["steps"]
    assert all(math.isfinite(payload["start_policy"][metric]) for metric in METRICS[:4])
    # The rejected side grows with L; everything else is shared.
    sizes = payload["tokens_by_L"]
    assert sizes["2"]["rejected_tokens"] > sizes["0"]["rejected_tokens"]
    assert sizes["2"]["chosen_tokens"] == sizes["0"]["chosen_tokens"]
    assert (tmp_path / "results" / "smoke.md").is_file() and (tmp_path / "results" / "smoke.png").stat().st_size > 0
