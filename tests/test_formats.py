"""Exports and imports of preference pairs: TRL, OpenAI DPO, ShareGPT; round trips, errors, and the CLI."""

import argparse
import json

import pytest

from trajalign.agents import NoiseRates, NoisyOracleAgent, OracleAgent
from trajalign.agents.chat import scenario_system_prompt
from trajalign.agents.rollout import run_episode
from trajalign.alignment.builders import branch_pairs, outcome_pairs
from trajalign.alignment.formats import (
    FormatError,
    export_pairs,
    import_pairs,
    row_to_pair,
)
from trajalign.alignment.pairs import PreferencePair
from trajalign.envs import Turn, load_scenario, make_env
from trajalign.envs.jsonl import BadLine, JsonlWriter, read_jsonl
from trajalign.pairs_cli import add_pairs_commands

RATES = NoiseRates(wrong_tool=0.05, wrong_argument=0.2)


@pytest.fixture(scope="module")
def retail():
    return load_scenario("retail")


@pytest.fixture(scope="module")
def rollouts(retail):
    env = make_env(retail)
    tasks = retail.tasks_in("train")[:6]
    oracle = [run_episode(env, OracleAgent(retail), seed=0, task_id=task.id) for task in tasks]
    noisy = [run_episode(env, NoisyOracleAgent(retail, RATES, seed=1), seed=seed, task_id=task.id)
             for task in tasks for seed in (0, 1, 2)]
    return oracle, noisy


@pytest.fixture(scope="module")
def outcome(rollouts):
    oracle, noisy = rollouts
    pairs = list(outcome_pairs(noisy, oracle))
    assert len(pairs) >= 5
    return pairs


@pytest.fixture(scope="module")
def branch(retail, rollouts):
    pairs = list(branch_pairs(rollouts[1], retail, samples=6, tau=0.2, max_states_per_trajectory=2,
                              agent_factory=lambda seed: NoisyOracleAgent(retail, RATES, seed=seed)))
    assert len(pairs) >= 5 and any(pair.branch_turn > 0 for pair in pairs)
    return pairs


def _texts(turns):
    return [(turn.role, turn.text) for turn in turns]


def _trained(turns):
    return [turn.trainable for turn in turns if turn.role == "assistant"]


@pytest.mark.parametrize("format", ["trl", "sharegpt"])
def test_round_trip_keeps_every_turn(tmp_path, outcome, branch, format):
    pairs = outcome + branch
    path = tmp_path / f"pairs.{format}.jsonl"
    stats = export_pairs(pairs, path, format)
    assert stats.written == len(pairs) and not stats.skipped
    imported = import_pairs(path, format, scenario="retail")
    assert len(imported) == len(pairs)
    for original, back in zip(pairs, imported):
        assert _texts(back.prefix) == _texts(original.prefix)
        assert _texts(back.chosen) == _texts(original.chosen)
        assert _texts(back.rejected) == _texts(original.rejected)
        assert _trained(back.chosen) == _trained(original.chosen) and all(_trained(back.rejected))
        assert not any(turn.trainable for turn in back.prefix)  # the prefix is context
        assert all(turn.token_ids is None for turn in back.prefix + back.chosen + back.rejected)
        assert back.branch_turn == original.branch_turn and back.scenario == "retail"
        assert back.source == "human" and back.metadata["line"] >= 1
    assert [p.id for p in import_pairs(path, format, scenario="retail")] == [p.id for p in imported]
    assert len({p.id for p in imported}) == len(imported)
    goals = {pair.prefix[0].text for pair in outcome}
    assert len({p.task_id for p in imported[:len(outcome)]}) == len(goals)  # one task id per goal


def test_trl_rows_are_plain_conversational_preference_rows(tmp_path, branch):
    path = tmp_path / "trl.jsonl"
    export_pairs(branch[:1], path, "trl")
    row = json.loads(path.read_text())
    assert set(row) == {"prompt", "chosen", "rejected"}
    pair = branch[0]
    assert row["prompt"] == [{"role": t.role, "content": t.text} for t in pair.prefix]
    assert row["chosen"][0] == {"role": "assistant", "content": pair.chosen[0].text}
    assert {m["role"] for m in row["chosen"][1:]} <= {"tool", "user", "assistant"}


def test_sharegpt_rows_carry_per_turn_loss_flags(tmp_path, branch):
    pair = next(p for p in branch if p.actions("chosen") > 1)
    turns = list(pair.chosen)
    turns[2] = turns[2].model_copy(update={"trainable": False})  # an assistant turn kept as context
    marked = pair.model_copy(update={"chosen": turns})
    path = tmp_path / "sharegpt.jsonl"
    export_pairs([marked], path, "sharegpt")
    row = json.loads(path.read_text())
    assert set(row) == {"conversations", "chosen", "rejected"}
    assert all(m["loss"] is False for m in row["conversations"])
    assert [m["from"] for m in row["conversations"]][:1] == ["human"]
    assert [m["loss"] for m in row["rejected"]] == [t.role == "assistant" for t in pair.rejected]
    assert [m["loss"] for m in row["chosen"]] == [t.trainable for t in marked.chosen]
    (back,) = import_pairs(path, "sharegpt", scenario="retail")
    assert [t.trainable for t in back.chosen] == [t.trainable for t in marked.chosen]
    # LLaMA-Factory's single-message form and a top-level system prompt are read too.
    single = {"system": "rules", "conversations": [{"from": "human", "value": "hi"}],
              "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}}
    pair = row_to_pair(single, "sharegpt")
    assert _texts(pair.prefix) == [("system", "rules"), ("user", "hi")]
    assert _texts(pair.chosen) == [("assistant", "good")] and pair.chosen[0].trainable


def test_openai_refuses_multi_action_continuations_unless_asked_to_cut(tmp_path, rollouts, outcome, branch):
    # Pairs anchored at the goal, as ETO and DMPO build them, often open with the same action on both sides.
    ids = {pair.id for pair in outcome}
    at_start = [pair for pair in outcome_pairs(rollouts[1], rollouts[0], anchor="start") if pair.id not in ids]
    pairs = outcome + at_start + branch
    multi = sum(p.actions("chosen") > 1 or p.actions("rejected") > 1 for p in pairs)
    assert multi > 0
    path = tmp_path / "openai.jsonl"
    with pytest.raises(FormatError, match=rf"^{multi} of {len(pairs)} pairs have a continuation with more than one"):
        export_pairs(pairs, path, "openai")
    assert not path.exists()

    stats = export_pairs(pairs, path, "openai", openai_multi_turn="first_action")
    same_first = sum(p.chosen[0].text == p.rejected[0].text for p in pairs)
    assert 0 < same_first and all(p.branch_turn == 0 for p in pairs if p.chosen[0].text == p.rejected[0].text)
    assert stats.skipped == {"same_first_action": same_first}
    assert stats.written == len(pairs) - same_first and stats.trimmed == multi - same_first
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    kept = [p for p in pairs if p.chosen[0].text != p.rejected[0].text]
    for row, pair in zip(rows, kept, strict=True):
        assert set(row) == {"input", "preferred_output", "non_preferred_output"}
        assert row["preferred_output"] == [{"role": "assistant", "content": pair.chosen[0].text}]
        assert row["non_preferred_output"] == [{"role": "assistant", "content": pair.rejected[0].text}]
        assert [m["content"] for m in row["input"]["messages"]] == [t.text for t in pair.prefix]
        assert {m["role"] for m in row["input"]["messages"]} <= {"user", "assistant"}  # tool output as user
    back = import_pairs(path, "openai", scenario="retail")
    for pair, original in zip(back, kept):
        assert [t.text for t in pair.prefix] == [t.text for t in original.prefix]
        assert _texts(pair.chosen) == _texts(original.chosen[:1])
        assert _texts(pair.rejected) == _texts(original.rejected[:1])


def test_openai_exports_single_action_pairs_whole(tmp_path, branch):
    # One action per side (as at a last state: the final answer against a wrong one), observation included.
    single = [PreferencePair.model_validate(p.model_dump() | {"chosen": p.chosen[:2], "rejected": p.rejected[:2]})
              for p in branch]
    path = tmp_path / "openai.jsonl"
    assert export_pairs(single, path, "openai").written == len(single)
    back = import_pairs(path, "openai")
    assert [_texts(p.chosen) for p in back] == [_texts(p.chosen[:1]) for p in single]  # the observation is dropped
    assert [_texts(p.rejected) for p in back] == [_texts(p.rejected[:1]) for p in single]


def test_system_prompt_is_added_where_asked(tmp_path, retail, outcome):
    path = tmp_path / "trl.jsonl"
    export_pairs(outcome[:2], path, "trl", system_prompt=lambda name: scenario_system_prompt(load_scenario(name)))
    for line, pair in zip(path.read_text().splitlines(), outcome):
        prompt = json.loads(line)["prompt"]
        assert prompt[0] == {"role": "system", "content": scenario_system_prompt(retail)}
        assert prompt[1] == {"role": "user", "content": pair.prefix[0].text} and len(prompt) == 1 + len(pair.prefix)


def test_trl_implicit_prompt_is_split_where_the_sides_diverge():
    shared = [{"role": "user", "content": "cancel my order"}, {"role": "assistant", "content": "look"},
              {"role": "tool", "content": "found"}]
    row = {"chosen": [*shared, {"role": "assistant", "content": "cancel"}, {"role": "tool", "content": "done"}],
           "rejected": [*shared, {"role": "assistant", "content": "refund"}]}
    pair = row_to_pair(row, "trl", "retail")
    assert _texts(pair.prefix) == [("user", "cancel my order"), ("assistant", "look"), ("tool", "found")]
    assert pair.branch_turn == 1 and not pair.prefix[1].trainable
    assert _texts(pair.chosen) == [("assistant", "cancel"), ("tool", "done")]
    assert _texts(pair.rejected) == [("assistant", "refund")]
    # TRL's standard (string) form, and an OpenAI tool call as the action.
    pair = row_to_pair({"prompt": "hi", "chosen": "yes", "rejected": "no"}, "trl")
    assert _texts(pair.prefix) == [("user", "hi")] and _texts(pair.chosen) == [("assistant", "yes")]
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "get_order", "arguments": '{"order_id": "#W1"}'}}]}
    pair = row_to_pair({"input": {"messages": [{"role": "user", "content": "where is #W1"}]},
                        "preferred_output": [call], "non_preferred_output": [{"role": "assistant", "content": "?"}]},
                       "openai")
    assert json.loads(pair.chosen[0].text) == {"name": "get_order", "arguments": {"order_id": "#W1"}}


BAD_ROWS = [
    ({"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
      "chosen": [{"role": "assistant", "content": "c"}], "rejected": [{"role": "assistant", "content": "d"}]},
     "the prompt ends with an assistant message"),
    ({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}],
      "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "d"}]},
     "their prompts do not match"),
    ({"prompt": [{"role": "robot", "content": "a"}], "chosen": "c", "rejected": "d"},
     r"prompt\[0\].role: unknown role 'robot'"),
    ({"prompt": [{"role": "user", "content": "a"}], "chosen": [{"role": "tool", "content": "c"}], "rejected": "d"},
     "chosen must start with an assistant message"),
    ({"prompt": [{"role": "user", "content": "a"}], "rejected": "d"}, "chosen: missing"),
]


@pytest.mark.parametrize("row, problem", BAD_ROWS)
def test_import_errors_name_the_file_line_and_problem(tmp_path, row, problem):
    path = tmp_path / "bad.jsonl"
    good = {"prompt": [{"role": "user", "content": "a"}], "chosen": "c", "rejected": "d"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(FormatError, match=rf"^{path}:2: .*{problem}"):
        import_pairs(path, "trl")
    bad: list[BadLine] = []
    assert len(import_pairs(path, "trl", bad_lines=bad)) == 1
    assert [(b.line, bool(b.problem)) for b in bad] == [(2, True)]


def test_import_reports_broken_json_and_wrong_shapes(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"conversations": [\n[1, 2]\n{"conversations": [{"from": "human", "value": "a"}], '
                    '"chosen": [{"from": "gpt", "value": "b"}], "rejected": [{"from": "gpt", "value": 3}]}\n')
    bad: list[BadLine] = []
    assert import_pairs(path, "sharegpt", bad_lines=bad) == []
    assert [b.line for b in bad] == [1, 2, 3]
    assert "not valid JSON" in bad[0].problem and "expected a JSON object" in bad[1].problem
    assert bad[2].problem == "rejected[0].value: expected a string, got int"


# ---- CLI --------------------------------------------------------------------------------------------


def _cli(argv):
    parser = argparse.ArgumentParser(prog="trajalign")
    add_pairs_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_lists_the_library_formats_and_anchors():
    from trajalign.alignment.builders import ANCHORS
    from trajalign.alignment.formats import FORMATS
    from trajalign.pairs_cli import ANCHORS as CLI_ANCHORS
    from trajalign.pairs_cli import FORMATS as CLI_FORMATS

    assert CLI_FORMATS == FORMATS and CLI_ANCHORS == ANCHORS


def test_cli_export_and_import(tmp_path, capsys, outcome, branch):
    pairs_file = tmp_path / "pairs.jsonl"
    with JsonlWriter(pairs_file) as writer:
        for pair in outcome + branch:
            writer.write(pair)
    with open(pairs_file, "a") as file:
        file.write('{"id": "cut\n')
    exported = tmp_path / "trl.jsonl"
    assert _cli(["pairs", "export", "--format", "trl", str(pairs_file), str(exported)]) == 0
    printed = capsys.readouterr().out
    total = len(outcome) + len(branch)
    assert f"trl: {total} pairs written" in printed and f"{pairs_file}:{total + 1}: not valid JSON" in printed

    assert _cli(["pairs", "export", "--format", "openai", str(pairs_file), str(tmp_path / "o.jsonl")]) == 2
    assert "more than one action" in capsys.readouterr().err
    assert _cli(["pairs", "export", "--format", "openai", "--openai-multi-turn", "first_action",
                 "--add-system-prompt", str(pairs_file), str(tmp_path / "o.jsonl")]) == 0
    assert "cut to their first action" in capsys.readouterr().out
    first = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    assert first["input"]["messages"][0]["role"] == "system"

    imported = tmp_path / "imported.jsonl"
    assert _cli(["pairs", "import", "--format", "trl", str(exported), str(imported), "--scenario", "retail"]) == 0
    assert f"written: {total} pairs to {imported}" in capsys.readouterr().out
    back = read_jsonl(imported, PreferencePair)
    assert [_texts(p.chosen) for p in back] == [_texts(p.chosen) for p in outcome + branch]
    assert _cli(["pairs", "import", "--format", "trl", str(exported), str(imported)]) == 0
    assert f"({total} already there)" in capsys.readouterr().out  # same content, same ids: nothing added
    assert len(read_jsonl(imported, PreferencePair)) == total


def test_turns_survive_unicode(tmp_path):
    pair = PreferencePair(id="u", scenario="s", task_id="t", source="human",
                          prefix=[Turn(role="user", text="café ☕ \u2028 line")],
                          chosen=[Turn(role="assistant", text="ok ✓", trainable=True)],
                          rejected=[Turn(role="assistant", text="\"quoted\"\n", trainable=True)])
    for format in ("trl", "openai", "sharegpt"):
        path = tmp_path / f"{format}.jsonl"
        export_pairs([pair], path, format)
        (back,) = import_pairs(path, format)
        assert _texts(back.prefix + back.chosen + back.rejected) == _texts(pair.prefix + pair.chosen + pair.rejected)
