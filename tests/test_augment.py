"""Name-swap augmentation: copies of SFT data whose task names are consistently replaced."""

import random

import pytest
from pydantic import ValidationError

from trajalign.agents import OracleAgent, run_rollouts
from trajalign.agents.augment import NAME_SWAP, AugmentError, NameSwapper, augment_file, name_swapped_scenario
from trajalign.cli import main
from trajalign.envs import Trajectory, Turn, load_scenario
from trajalign.envs.jsonl import read_jsonl
from trajalign.envs.scenario import NameSwaps, ScenarioError
from trajalign.envs.trajectory import EpisodeTiming

SWAPS = NameSwaps(names=["garden", "yoga_class", "book_club"],
                  replacements=["pottery", "surfing", "kite_festival", "film_race", "drone_fair"])


def trajectory(task_id: str = "t-1", with_tokens: bool = False) -> Trajectory:
    turns = [
        Turn(role="system", text="Tools: find_files(name_contains), e.g. for garden notes. Gardening is no name."),
        Turn(role="user", text="Rename my yoga class notes to the garden folder."),
        Turn(role="assistant", text='{"name": "find_files", "arguments": {"name_contains": "yoga_class"}}',
             trainable=True, token_ids=[5, 6, 7] if with_tokens else None,
             logprobs=[-0.1, -0.2, -0.3] if with_tokens else None),
        Turn(role="tool", text='["/home/user/notes/yoga_class.txt", "/home/user/garden/gardening_2022.txt"]\n'
                               "# Yoga class notes\nremoving weeds: see garden_v2.txt, not GardenX or gardenX."),
        Turn(role="assistant", text='{"name": "final_answer", "arguments": {"answer": "Moved yoga_class.txt."}}',
             trainable=True),
    ]
    return Trajectory(scenario="filesystem", task_id=task_id, split="train", seed=0, agent="noisy", turns=turns,
                      rewards=[0.0, 1.0], reward=1.0, status="success",
                      timing=EpisodeTiming(started_at=0.0, duration_s=0.1, env_s=0.05),
                      metadata={"mistakes": {"2": "wrong_argument"}})


def test_every_form_of_a_name_is_swapped_consistently_and_nothing_else():
    swapper = NameSwapper(SWAPS)
    original = trajectory(with_tokens=True)
    assert swapper.names_in(original) == ["yoga_class", "garden"]
    copy = swapper.swap(original, {"yoga_class": "kite_festival", "garden": "pottery"})
    texts = [turn.text for turn in copy.turns]
    assert texts[0] == original.turns[0].text  # the system prompt is not the task's
    assert texts[1] == "Rename my kite festival notes to the pottery folder."
    assert texts[2] == '{"name": "find_files", "arguments": {"name_contains": "kite_festival"}}'
    assert texts[3] == ('["/home/user/notes/kite_festival.txt", "/home/user/pottery/gardening_2022.txt"]\n'
                        "# Kite festival notes\nremoving weeds: see pottery_v2.txt, not GardenX or gardenX.")
    assert "kite_festival.txt" in texts[4]
    # Shape, flags and mistake markers (by turn index) carry over; tokens of the old text do not.
    assert [(t.role, t.trainable) for t in copy.turns] == [(t.role, t.trainable) for t in original.turns]
    assert copy.turns[2].token_ids is None and copy.turns[2].logprobs is None
    assert copy.metadata == {"mistakes": {"2": "wrong_argument"}, NAME_SWAP: {"yoga_class": "kite_festival",
                                                                              "garden": "pottery"}}
    assert (copy.reward, copy.rewards, copy.task_id, copy.status) == (1.0, [0.0, 1.0], "t-1", "success")
    assert original.turns[2].token_ids == [5, 6, 7]  # the original is untouched


def test_replacements_are_distinct_and_keep_the_word_count():
    swapper = NameSwapper(SWAPS)
    rng = random.Random(0)
    for _ in range(50):
        mapping = swapper.pick(["garden", "yoga_class", "book_club"], rng)
        assert mapping["garden"] in {"pottery", "surfing"}
        assert {mapping["yoga_class"], mapping["book_club"]} <= {"kite_festival", "film_race", "drone_fair"}
        assert len(set(mapping.values())) == 3


@pytest.mark.parametrize(("names", "replacements", "problem"), [
    (["garden"], ["garden", "pottery"], r"replacements must be fresh names, but \['garden'\]"),
    (["Yoga Class"], ["pottery"], r"'Yoga Class' is not a snake_case name"),
    (["3d_printing"], ["pottery"], r"'3d_printing' is not a snake_case name"),
    ([], ["pottery"], r"names\n  List should have at least 1 item"),
    (["garden", "taxes"], ["pottery", "kite_festival"], r"2 names have 1 word\(s\) but only 1 replacements do"),
])
def test_bad_name_swaps_are_rejected(names, replacements, problem):
    with pytest.raises(ValidationError, match=problem):
        NameSwaps(names=names, replacements=replacements)


def test_augment_file_writes_originals_then_copies_deterministically(tmp_path):
    src = tmp_path / "train.jsonl"
    nameless = trajectory("t-2").model_copy(update={"turns": [Turn(role="user", text="List my files.")]})
    src.write_text("\n".join(t.model_dump_json() for t in [trajectory("t-1"), nameless]) + "\n{\"scenario\": \"fil\n")
    counts = augment_file(src, tmp_path / "a.jsonl", SWAPS, copies=3, seed=4)
    assert counts.model_dump() == {"records": 2, "written": 5, "swapped": 3, "without_names": 1, "bad_lines": 1}
    written = read_jsonl(tmp_path / "a.jsonl", Trajectory)
    assert [t.task_id for t in written] == ["t-1", "t-1", "t-1", "t-1", "t-2"]
    assert written[0] == trajectory("t-1") and NAME_SWAP not in written[4].metadata
    assert all("yoga_class" not in t.turns[2].text for t in written[1:4])
    augment_file(src, tmp_path / "b.jsonl", SWAPS, copies=3, seed=4)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    augment_file(src, tmp_path / "c.jsonl", SWAPS, copies=3, seed=5)
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_augment_file_refuses_to_overwrite_its_input_or_to_copy_nothing(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text(trajectory().model_dump_json() + "\n")
    with pytest.raises(AugmentError, match="is the input"):
        augment_file(src, src, SWAPS, copies=1)
    assert read_jsonl(src, Trajectory) == [trajectory()]
    with pytest.raises(AugmentError, match="copies must be at least 1"):
        augment_file(src, tmp_path / "out.jsonl", SWAPS, copies=0)
    (tmp_path / "cut.jsonl").write_text('{"scenario": "fil\n')
    (tmp_path / "out.jsonl").write_text("kept\n")
    with pytest.raises(AugmentError, match=r"holds no valid trajectories \(1 bad lines\)"):
        augment_file(tmp_path / "cut.jsonl", tmp_path / "out.jsonl", SWAPS, copies=1)
    assert (tmp_path / "out.jsonl").read_text() == "kept\n"  # a failed run leaves an earlier output alone
    assert not list(tmp_path.glob("*.partial"))


def test_the_filesystem_scenario_swaps_every_topic_for_a_fresh_one():
    swaps = load_scenario("filesystem").name_swaps
    assert swaps is not None and "yoga_class" in swaps.names and "garden" in swaps.names
    swapper = NameSwapper(swaps)
    for words in (1, 2):  # enough replacements of each shape for every topic at once
        names = [name for name in swaps.names if name.count("_") + 1 == words]
        assert len(set(swapper.pick(names, random.Random(0)).values())) == len(names)


def test_name_swapped_tasks_are_whole_tasks_the_oracle_still_solves(tmp_path):
    scenario = load_scenario("filesystem")
    swapped, dropped = name_swapped_scenario(scenario, "train", seed=3)
    originals = scenario.tasks_in("train")
    assert dropped == 0 and [t.id for t in swapped.tasks] == [f"{t.id}-swapped" for t in originals]
    assert all(t.split == "train" for t in swapped.tasks)
    swapper = NameSwapper(scenario.name_swaps)
    for original, copy in zip(originals, swapped.tasks):
        topic = original.group.split(":")[1]
        new_topic = copy.group.split(":")[1]
        assert new_topic in scenario.name_swaps.replacements  # the group names the fresh topic
        text = copy.model_dump_json()
        assert not swapper.names_in_task(copy), f"{copy.id} still mentions {swapper.names_in_task(copy)}"
        assert topic not in text and new_topic in text
        assert [c.name for c in copy.oracle] == [c.name for c in original.oracle]  # tools are never renamed
        assert any(new_topic in path for path in copy.initial_state["files"])  # file paths (dict keys) too
    # The swapped tasks are playable: the oracle solves every one of them in the environment.
    summary = run_rollouts(swapped, lambda: OracleAgent(swapped), "train", 40, seed=0, out=tmp_path / "o.jsonl",
                           progress=False)
    assert summary.episodes == 40 and summary.success_rate == 1.0
    again, _ = name_swapped_scenario(scenario, "train", seed=3)
    assert again.tasks == swapped.tasks  # the same seed, the same copies
    assert name_swapped_scenario(scenario, "train", seed=4)[0].tasks != swapped.tasks
    with pytest.raises(AugmentError, match="scenario 'retail' has no name_swaps"):
        name_swapped_scenario(load_scenario("retail"), "train")


def test_a_scenario_copy_checks_its_tasks_oracles():
    scenario = load_scenario("filesystem")
    good = scenario.tasks_in("train")[0]
    broken = good.model_copy(update={"id": "broken", "required_outputs": ["nowhere in the answer"]})
    with pytest.raises(ScenarioError, match="task 'broken'.*lacks required outputs"):
        scenario.with_tasks([good, broken])
    copy = scenario.with_tasks([good, broken], drop_failing=True)
    assert [t.id for t in copy.tasks] == [good.id] and copy.task(good.id) == good
    assert len(scenario.tasks) == 600  # the original is untouched
    with pytest.raises(ScenarioError, match="only tool-use scenarios take other tasks, not web"):
        load_scenario("wiki").with_tasks([])


def test_cli_augments_and_reports_counts(tmp_path, capsys):
    src, out = tmp_path / "train.jsonl", tmp_path / "swapped.jsonl"
    src.write_text(trajectory().model_dump_json() + "\n")
    assert main(["augment", "--data", str(src), "--scenario", "filesystem", "--copies", "2", "--out", str(out)]) == 0
    assert "wrote 3 trajectories" in capsys.readouterr().out
    copies = read_jsonl(out, Trajectory)[1:]
    assert all(set(t.metadata[NAME_SWAP]) == {"yoga_class", "garden"} for t in copies)
    assert main(["augment", "--data", str(src), "--scenario", "retail", "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "scenario retail has no name_swaps" in capsys.readouterr().err
