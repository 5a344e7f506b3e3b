"""`stages.json`: a rerun with other settings stops at the first stale output instead of reusing it."""

import json

import pytest

from trajalign.stages import LEDGER, StageLedger, StageLedgerError, StaleStageError


def _run(out, tau=0.5, samples=4, model="/models/a"):
    """Three stages as the pipeline enters them: an outside model, rollouts read from it, pairs read from both."""
    ledger = StageLedger(out)
    ledger.note_input("model", {"path": model})
    ledger.check_and_record(out / "rollouts.jsonl", {"samples": samples}, "model")
    ledger.check_and_record(out / "pairs.jsonl", {"tau": tau}, "model", "rollouts.jsonl")
    return ledger


def _make(out, *names):
    for name in names:
        (out / name).write_text(f"{name} as first made\n")


def test_the_same_settings_reuse_every_output_and_leave_the_ledger_as_it_was(tmp_path):
    _run(tmp_path)
    _make(tmp_path, "rollouts.jsonl", "pairs.jsonl")
    recorded = (tmp_path / LEDGER).read_text()
    _run(tmp_path)
    assert (tmp_path / LEDGER).read_text() == recorded


def test_a_changed_setting_names_the_change_and_every_output_made_from_it_and_deletes_nothing(tmp_path):
    _run(tmp_path)
    _make(tmp_path, "rollouts.jsonl", "pairs.jsonl")
    recorded = (tmp_path / LEDGER).read_text()
    with pytest.raises(StaleStageError) as caught:
        _run(tmp_path, samples=8)
    message = str(caught.value)
    assert f"{tmp_path / 'rollouts.jsonl'} was made with other settings" in message
    assert "samples: 4 -> 8" in message
    assert f"Delete {tmp_path / 'rollouts.jsonl'} {tmp_path / 'pairs.jsonl'} to redo them" in message
    assert (tmp_path / "rollouts.jsonl").read_text() == "rollouts.jsonl as first made\n"
    assert (tmp_path / LEDGER).read_text() == recorded


def test_a_stage_is_stale_when_an_output_it_read_was_redone_with_other_settings(tmp_path):
    _run(tmp_path)
    _make(tmp_path, "rollouts.jsonl", "pairs.jsonl")
    (tmp_path / "rollouts.jsonl").unlink()  # as the error says: delete it, and it is redone
    with pytest.raises(StaleStageError, match=r"pairs.jsonl was made with other settings .*"
                                              r"its input 'rollouts.jsonl' changed"):
        _run(tmp_path, samples=8)
    # Deleting what the error listed lets the run go on and records the new settings.
    (tmp_path / "pairs.jsonl").unlink()
    _run(tmp_path, samples=8)
    records = json.loads((tmp_path / LEDGER).read_text())
    assert records["rollouts.jsonl"]["settings"] == {"samples": 8}


def test_a_changed_outside_input_makes_the_stages_that_read_it_stale(tmp_path):
    _run(tmp_path)
    _make(tmp_path, "rollouts.jsonl")
    with pytest.raises(StaleStageError, match=r"its input 'model' changed"):
        _run(tmp_path, model="/models/b")


def test_an_output_that_is_not_there_is_made_with_the_current_settings(tmp_path):
    _run(tmp_path)
    _make(tmp_path, "rollouts.jsonl")  # pairs.jsonl was never written (the run stopped before)
    _run(tmp_path, tau=0.0)
    assert json.loads((tmp_path / LEDGER).read_text())["pairs.jsonl"]["settings"] == {"tau": 0.0}


def test_outputs_from_before_the_ledger_are_taken_as_made_with_the_current_settings(tmp_path):
    _make(tmp_path, "rollouts.jsonl", "pairs.jsonl")
    _run(tmp_path, tau=0.25)
    with pytest.raises(StaleStageError, match=r"tau: 0.25 -> 0.5"):
        _run(tmp_path)


def test_nested_settings_are_named_by_their_dotted_path(tmp_path):
    StageLedger(tmp_path).check_and_record(tmp_path / "train", {"learning_rate": 2e-4, "loss": {"beta": 0.1}})
    (tmp_path / "train").mkdir()
    with pytest.raises(StaleStageError,
                       match=r"\(learning_rate: 0.0002 -> \(no longer a setting\); loss.beta: 0.1 -> 0.2\)"):
        StageLedger(tmp_path).check_and_record(tmp_path / "train", {"loss": {"beta": 0.2}})


def test_a_setting_added_since_the_record_is_taken_as_unchanged_and_then_recorded(tmp_path):
    _run(tmp_path)
    _make(tmp_path, "rollouts.jsonl", "pairs.jsonl")
    fingerprints = {name: r["fingerprint"] for name, r in json.loads((tmp_path / LEDGER).read_text()).items()}
    ledger = StageLedger(tmp_path)
    ledger.note_input("model", {"path": "/models/a"})
    ledger.check_and_record(tmp_path / "rollouts.jsonl", {"samples": 4, "new_setting": 1}, "model")
    ledger.check_and_record(tmp_path / "pairs.jsonl", {"tau": 0.5}, "model", "rollouts.jsonl")  # not stale
    records = json.loads((tmp_path / LEDGER).read_text())
    assert {name: r["fingerprint"] for name, r in records.items()} == fingerprints
    assert records["rollouts.jsonl"]["settings"] == {"samples": 4, "new_setting": 1}
    with pytest.raises(StaleStageError, match=r"new_setting: 1 -> 2"):
        StageLedger(tmp_path).check_and_record(tmp_path / "rollouts.jsonl", {"samples": 4, "new_setting": 2})


def test_free_settings_may_change_and_others_may_not(tmp_path):
    StageLedger(tmp_path).check_and_record(tmp_path / "sft", {"epochs": 3, "max_seconds": 360, "lr": 0.005})
    (tmp_path / "sft").mkdir()  # an unfinished run: it may continue with a new budget or length
    StageLedger(tmp_path).check_and_record(tmp_path / "sft", {"epochs": 4, "max_seconds": 600, "lr": 0.005},
                                           free={"epochs", "max_seconds"})
    assert json.loads((tmp_path / LEDGER).read_text())["sft"]["settings"]["max_seconds"] == 600
    with pytest.raises(StaleStageError, match=r"\(lr: 0.005 -> 0.001\)"):
        StageLedger(tmp_path).check_and_record(tmp_path / "sft", {"epochs": 5, "max_seconds": 600, "lr": 0.001},
                                               free={"epochs", "max_seconds"})


@pytest.mark.parametrize("text, problem", [('{"rollouts.jsonl": ', "not valid JSON"),
                                           ('["rollouts.jsonl"]', "not a stage ledger"),
                                           ('{"rollouts.jsonl": {"settings": {}}}', "not a stage ledger")])
def test_an_unreadable_ledger_is_an_error_that_names_it(tmp_path, text, problem):
    (tmp_path / LEDGER).write_text(text)
    with pytest.raises(StageLedgerError, match=rf"{LEDGER}: {problem}.*delete it to record the stages afresh"):
        StageLedger(tmp_path)
