"""benchmarks/trl_comparison.py: the smoke run end to end (needs the bench extra), and its message without TRL."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "trl_comparison.py"
TRL_REASON = "TRL is an optional extra for benchmarks: pip install -e '.[bench]'"


def test_without_trl_it_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling modules
    import trl_comparison

    monkeypatch.setattr(trl_comparison, "trl_available", lambda: False)
    assert trl_comparison.main(["--smoke"]) == 2
    assert "pip install -e '.[bench]'" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason=TRL_REASON)
def test_smoke_run_reports_both_trainers(tmp_path):
    # A temporary results dir: the committed results must not be overwritten by tests.
    result = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--results-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads((tmp_path / "trl_comparison_smoke.json").read_text())
    assert (tmp_path / "trl_comparison_smoke.md").is_file()
    for trainer in ("trl", "trajalign"):
        assert data["trainers"][trainer]["pairs_per_s"] > 0
        assert data["trainers"][trainer]["peak_rss_mib"] > 0
    tokens = data["tokens"]
    # TRL scores the observations inside the continuations too, so it scores more tokens than the actions.
    assert tokens["trl_scored_per_pair"] > tokens["trajalign_scored_per_pair"] > 0
    assert tokens["trl_fed_per_pair"] > tokens["trajalign_fed_per_pair"]  # the prefix twice vs once
    scoring = data["scoring"]
    assert {(row["trained_by"], row["scoring"]) for row in scoring["rows"]} == {
        (trainer, scored) for trainer in ("trl", "trajalign")
        for scored in ("action tokens (trajalign)", "all completion tokens (TRL)")}
    assert scoring["max_rel_difference_from_trl_reference_logps"] < 1e-4
