import gymnasium as gym
import pytest

import trajalign  # noqa: F401
from trajalign.agents import OracleAgent, run_episode
from trajalign.envs import Trajectory, load_scenario
from trajalign.envs.jsonl import JsonlReader, JsonlWriter, atomic_jsonl, read_jsonl


def _trajectories(count):
    scenario = load_scenario("retail")
    env = gym.make("trajalign/ToolUse-v0", scenario=scenario)
    return [run_episode(env, OracleAgent(scenario), seed=seed) for seed in range(count)]


def test_round_trip_keeps_every_field(tmp_path):
    trajectories = _trajectories(3)
    with JsonlWriter(tmp_path / "t.jsonl") as writer:
        for trajectory in trajectories:
            writer.write(trajectory)
    assert read_jsonl(tmp_path / "t.jsonl", Trajectory) == trajectories


def test_each_record_is_on_disk_as_soon_as_it_is_written(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = JsonlWriter(path)
    for count, trajectory in enumerate(_trajectories(2), start=1):
        writer.write(trajectory)
        assert len(read_jsonl(path, Trajectory)) == count  # before close
    writer.close()


def test_a_cut_short_line_is_reported_skipped_and_never_rewritten(tmp_path):
    path = tmp_path / "t.jsonl"
    first, second, third = _trajectories(3)
    with JsonlWriter(path) as writer:
        writer.write(first)
        writer.write(second)
    line = third.model_dump_json()
    with open(path, "a") as file:  # a crash halfway through writing the third record
        file.write(line[: len(line) // 2])
    written = path.read_bytes()

    bad = []
    reader = JsonlReader(path, Trajectory, on_bad_line=bad.append)
    assert list(reader) == [first, second]
    assert [(b.line, "not valid JSON" in b.problem) for b in bad] == [(3, True)]

    with JsonlWriter(path) as writer:  # the next run appends after the broken line
        writer.write(third)
    assert path.read_bytes().startswith(written)
    reader = JsonlReader(path, Trajectory, on_bad_line=lambda _: None)
    assert list(reader) == [first, second, third]
    assert [b.line for b in reader.bad_lines] == [3]


def test_a_record_with_a_bad_field_names_the_line_and_field(tmp_path, caplog):
    path = tmp_path / "t.jsonl"
    good = _trajectories(1)[0]
    path.write_text(good.model_dump_json() + "\n" + good.model_dump_json().replace('"success"', '"great"', 1) + "\n\n")
    assert read_jsonl(path, Trajectory) == [good]
    assert "t.jsonl:2 skipped: field 'status'" in caplog.text


def test_atomic_jsonl_appears_whole_or_not_at_all(tmp_path):
    trajectories, path = _trajectories(2), tmp_path / "t.jsonl"
    path.write_text("earlier\n")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_jsonl(path) as writer:
            writer.write(trajectories[0])
            raise RuntimeError("interrupted")
    assert path.read_text() == "earlier\n" and not list(tmp_path.glob("*.partial"))
    with atomic_jsonl(path) as writer:
        for trajectory in trajectories:
            writer.write(trajectory)
        assert path.read_text() == "earlier\n"  # replaced only when the block ends
    assert read_jsonl(path, Trajectory) == trajectories and not list(tmp_path.glob("*.partial"))
