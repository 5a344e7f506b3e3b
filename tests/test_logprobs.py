"""Per-action log-probs of preference pairs on a real tiny model: layout, shared-prefix KV reuse, gradients."""

import copy
import math

import pytest
import torch
from pydantic import ValidationError
from trajalign.agents import OracleAgent, run_rollouts
from trajalign.agents.chat import ChatFormat
from trajalign.agents.llm import cache_argument
from trajalign.alignment import (
    LossConfig,
    PairTokens,
    PreferencePair,
    TurnLogps,
    pair_tokens,
    pair_turn_logps,
    preference_loss,
    reference_logps,
)
from trajalign.alignment.logprobs import action_logp_sums, pad_token_id
from trajalign.envs import Trajectory, load_scenario
from trajalign.envs.jsonl import read_jsonl
from trajalign.envs.trajectory import Turn
from transformers import AutoModelForCausalLM, AutoTokenizer

# Sums of ~30 token log-probs of ~−7 each: float32 rounding of a sum is ~2e-5 absolute, so sums are
# compared relative to their size and per-token means absolutely.
RTOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a machine whose cores are busy, more threads make these small forwards
    many times slower (threads wait on each other), and the numbers checked do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory):
    scenario = load_scenario("retail")
    path = tmp_path_factory.mktemp("data") / "oracle.jsonl"
    run_rollouts(scenario, lambda: OracleAgent(scenario), "train", 6, 0, path, progress=False)
    return read_jsonl(path, Trajectory)


@pytest.fixture(scope="module")
def fmt(retail_model):
    return ChatFormat(AutoTokenizer.from_pretrained(retail_model))


@pytest.fixture(scope="module")
def system():
    """A short system prompt: the scenario's own is ~450 tokens, which only makes these tests slower."""
    return "You are a retail support agent. Reply with one JSON tool call per turn."


@pytest.fixture(scope="module")
def model(retail_model):
    return AutoModelForCausalLM.from_pretrained(retail_model, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def reference_model(model):
    """The policy with perturbed weights, so policy and reference log-probs differ."""
    reference = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return reference


def _actions(turns):
    return [index for index, turn in enumerate(turns) if turn.role == "assistant"]


def _branch(trajectory, k, other, k_other, pair_id, max_actions=2, **changes):
    """Prefix: the goal and the first k actions of `trajectory`; chosen: its next actions; rejected:
    actions of `other` from its k_other-th (at most `max_actions` per side, ending on an observation)."""
    def side(turns, start):
        actions = _actions(turns)
        end = actions[start + max_actions] if start + max_actions < len(actions) else len(turns)
        return turns[actions[start]:end]
    turns = trajectory.turns
    return PreferencePair(id=pair_id, scenario="retail", task_id=trajectory.task_id, prefix=turns[:_actions(turns)[k]],
                          chosen=side(turns, k), rejected=side(other.turns, k_other), branch_turn=k, source="branch_mc",
                          **changes)


@pytest.fixture(scope="module")
def pairs(trajectories, fmt, system):
    t = trajectories
    late = _branch(t[1], len(_actions(t[1].turns)) - 2, t[2], 3, "late")
    recorded = _branch(t[2], 2, t[3], 1, "recorded")
    # Recorded ids and a recorded system prompt are used as they are.
    first = recorded.chosen[0]
    recorded = recorded.model_copy(update={
        "prefix": [Turn(role="system", text=system), *recorded.prefix],
        "chosen": [first.model_copy(update={"token_ids": fmt.assistant_segment(first.text)}), *recorded.chosen[1:]]})
    # A rejected side whose first action is context (not trained): its first trained token comes later.
    untrained = _branch(t[3], 1, t[4], 2, "untrained-first")
    untrained = untrained.model_copy(update={
        "rejected": [untrained.rejected[0].model_copy(update={"trainable": False}), *untrained.rejected[1:]]})
    return [_branch(t[0], 0, t[5], 0, "whole", max_actions=3), late, recorded, untrained]


@pytest.fixture(scope="module")
def tokens(pairs, fmt, system):
    return [pair_tokens(fmt, pair, system) for pair in pairs]


@pytest.fixture(scope="module")
def reference(pairs, tokens, reference_model, fmt):
    with torch.no_grad():
        return pair_turn_logps(reference_model, tokens, pad_token_id(fmt))


def _select(logps: TurnLogps, rows: list[int]) -> TurnLogps:
    """Rows of a batch, trimmed to their own widest side (as if computed as their own batch)."""
    width = {side: int(getattr(logps, f"{side}_mask")[rows].sum(-1).max()) for side in ("chosen", "rejected")}
    return TurnLogps(**{name: getattr(logps, name)[rows][:, :width[name.split("_")[0]]]
                        for name in TurnLogps.__dataclass_fields__})


# ---- layout --------------------------------------------------------------------------------------


def test_pair_tokens_lay_out_prefix_and_trainable_actions(pairs, tokens, fmt, system):
    for pair, layout in zip(pairs, tokens):
        for side in ("chosen", "rejected"):
            segments = fmt.turn_segments([*pair.prefix, *getattr(pair, side)], system)
            whole = [token for _, ids in segments for token in ids]
            assert layout.prefix + layout.tokens(side) == whole
            assert layout.actions(side) == pair.actions(side)
            continuation = segments[len(segments) - len(getattr(pair, side)):]
            expected = []
            index = 0
            for turn, ids in continuation:
                expected += [index if turn.trainable else -1] * len(ids)
                index += turn.trainable
            assert layout.turns(side) == expected
            assert layout.action_tokens(side) == [len(ids) for turn, ids in continuation if turn.trainable]
    recorded = tokens[2]
    assert recorded.chosen[:len(pairs[2].chosen[0].token_ids)] == pairs[2].chosen[0].token_ids
    assert tokens[3].rejected_turn[0] == -1 and tokens[3].n_rejected == pairs[3].actions("rejected")


def test_turn_logps_equal_a_token_by_token_sum(model, tokens, fmt):
    """Token j of a side is predicted at position j − 1; only trainable action tokens are summed."""
    logps = pair_turn_logps(model, tokens, pad_token_id(fmt))
    with torch.no_grad():
        for row, layout in enumerate(tokens):
            for side in ("chosen", "rejected"):
                ids = layout.prefix + layout.tokens(side)
                token_logps = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
                expected = [0.0] * layout.actions(side)
                for j, (token, action) in enumerate(zip(layout.tokens(side), layout.turns(side))):
                    if action >= 0:
                        expected[action] += token_logps[len(layout.prefix) + j - 1, token].item()
                got = getattr(logps, side)[row, :layout.actions(side)].tolist()
                assert got == pytest.approx(expected, rel=RTOL)
                assert getattr(logps, f"{side}_tokens")[row, :layout.actions(side)].tolist() == \
                    layout.action_tokens(side)
    assert logps.chosen.dtype == torch.float32
    assert logps.rejected_mask.tolist()[0] == [i < tokens[0].n_rejected for i in range(logps.rejected.shape[1])]


def _loss_and_grads(model, tokens, reference, pad_id, shared_prefix):
    model.zero_grad(set_to_none=True)
    logps = pair_turn_logps(model, tokens, pad_id, shared_prefix=shared_prefix)
    loss, _ = preference_loss(LossConfig(alpha=0.1), logps, reference)
    (loss.sum() / len(tokens)).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return logps, loss.detach(), grads


def test_shared_prefix_forward_equals_the_plain_forward(model, tokens, reference, fmt):
    pad_id = pad_token_id(fmt)
    shared, shared_loss, shared_grads = _loss_and_grads(model, tokens, reference, pad_id, True)
    plain, plain_loss, plain_grads = _loss_and_grads(model, tokens, reference, pad_id, False)
    for side in ("chosen", "rejected"):
        a, b = getattr(shared, side).detach(), getattr(plain, side).detach()
        assert torch.equal(getattr(shared, f"{side}_mask"), getattr(plain, f"{side}_mask"))
        assert ((a - b).abs() <= RTOL * b.abs()).all()
        per_token = getattr(plain, f"{side}_tokens").clamp(min=1)
        assert ((a - b).abs() / per_token).max() < 1e-5  # per-token mean log-prob
    assert torch.allclose(shared_loss, plain_loss, atol=1e-5, rtol=0)
    for name, grad in plain_grads.items():
        assert torch.allclose(shared_grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_loss_does_not_depend_on_padding_or_batch_composition(model, tokens, reference, fmt):
    """The shortest pair alone, and batched with longer pairs (more prefix and continuation padding)."""
    pad_id = pad_token_id(fmt)
    config = LossConfig(algo="stepwise", alpha=0.1)
    short = min(range(len(tokens)), key=lambda i: len(tokens[i].prefix) + len(tokens[i].chosen))
    with torch.no_grad():
        for shared_prefix in (True, False):
            alone = preference_loss(config, pair_turn_logps(model, [tokens[short]], pad_id, shared_prefix),
                                    _select(reference, [short]))[0]
            batched = preference_loss(config, pair_turn_logps(model, tokens, pad_id, shared_prefix), reference)[0]
            reversed_order = list(reversed(range(len(tokens))))
            backwards = preference_loss(config, pair_turn_logps(model, [tokens[i] for i in reversed_order], pad_id,
                                                                shared_prefix), _select(reference, reversed_order))[0]
            assert abs(alone.item() - batched[short].item()) < 1e-5
            assert torch.allclose(backwards.flip(0), batched, atol=1e-5, rtol=0)


def test_gradient_accumulation_equals_the_full_batch(model, tokens, reference, fmt):
    pad_id = pad_token_id(fmt)
    _, _, full = _loss_and_grads(model, tokens, reference, pad_id, True)
    config = LossConfig(alpha=0.1)
    model.zero_grad(set_to_none=True)
    for rows in ([0], [1, 2, 3]):
        logps = pair_turn_logps(model, [tokens[i] for i in rows], pad_id)
        loss, _ = preference_loss(config, logps, _select(reference, rows))
        (loss.sum() / len(tokens)).backward()
    for name, parameter in model.named_parameters():
        assert torch.allclose(parameter.grad, full[name], atol=1e-6, rtol=1e-4), name
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("algo", ["dpo", "dmpo", "stepwise", "ipo", "simpo"])
def test_only_positions_predicting_action_tokens_get_gradient(model, tokens, fmt, algo):
    """A plain forward's logits as a leaf: every position that does not predict a trainable action token
    (system, goal, the prefix's earlier turns, observations, untrained actions, padding) gets exactly 0."""
    layout = tokens[3]  # its rejected side starts with an untrained action
    rows = [layout.prefix + layout.tokens(side) for side in ("chosen", "rejected")]
    width = max(map(len, rows))
    pad_id = pad_token_id(fmt)
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows])
    # action[r, k]: the action index of the token that position k predicts (token k + 1), -1 if none.
    action = torch.tensor([([-1] * len(layout.prefix) + layout.turns(side))[1:] + [-1] * (width - len(row) + 1)
                           for side, row in zip(("chosen", "rejected"), rows)])
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=(torch.arange(width) < torch.tensor(
            [[len(row)] for row in rows])).long()).logits
    reference = TurnLogps.from_lists([[-150.0 - 10 * i for i in range(layout.n_chosen)]],
                                     [[-170.0 + 5 * i for i in range(layout.n_rejected)]])
    config = LossConfig(algo=algo, alpha=0.3)

    def loss_of(logits):
        sums = action_logp_sums(logits[:, :-1], input_ids[:, 1:], action[:, :-1], max(layout.n_chosen,
                                                                                      layout.n_rejected))
        policy = TurnLogps.from_lists([sums[0, :layout.n_chosen]], [sums[1, :layout.n_rejected]],
                                      [layout.action_tokens("chosen")], [layout.action_tokens("rejected")])
        return preference_loss(config, policy, reference)[0].sum()

    leaf = logits.clone().requires_grad_()
    loss = loss_of(leaf)
    loss.backward()
    predicts_action = torch.nn.functional.pad(action[:, :-1] >= 0, (0, 1), value=False)
    gradient = leaf.grad.abs().amax(-1)
    assert bool((gradient[~predicts_action] == 0.0).all())
    assert bool((gradient[:, :len(layout.prefix) - 1] == 0.0).all())  # the prefix predicts nothing scored
    assert bool((gradient[predicts_action] > 0).all())  # every action token carries loss
    assert int(predicts_action.sum()) == sum(layout.action_tokens("chosen")) + sum(layout.action_tokens("rejected"))

    # Changing what the model predicts for observation (and other context) tokens changes nothing.
    noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)) * 5
    changed = torch.where(predicts_action[..., None], logits, logits + noise)
    context = ~predicts_action[:, :-1]
    token_logps = [x[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:, None])[..., 0][context] for x in (logits, changed)]
    assert not torch.allclose(*token_logps)
    assert loss_of(changed).item() == loss.item()


def test_falls_back_to_full_logits_without_logits_to_keep(model, tokens, fmt):
    class WithoutLogitsToKeep(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None, past_key_values=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=use_cache, **{cache_argument(self.inner): past_key_values})

    pad_id = pad_token_id(fmt)
    with torch.no_grad():
        expected = pair_turn_logps(model, tokens[:2], pad_id)
        for shared_prefix in (True, False):
            got = pair_turn_logps(WithoutLogitsToKeep(model), tokens[:2], pad_id, shared_prefix)
            assert torch.allclose(got.chosen, expected.chosen, rtol=RTOL, atol=0)
            assert torch.allclose(got.rejected, expected.rejected, rtol=RTOL, atol=0)


# ---- reference log-probs -------------------------------------------------------------------------


def test_reference_logps_store_a_fresh_computation(model, pairs, tokens, fmt, system):
    model.train()  # computed in eval mode, and the mode is restored
    filled = reference_logps(model, fmt, pairs, lambda scenario: system, batch_size=3, progress=False)
    assert model.training
    model.eval()
    assert [pair.id for pair in filled] == [pair.id for pair in pairs]
    assert all(pair.has_reference for pair in filled) and not any(pair.has_reference for pair in pairs)
    with torch.no_grad():
        for pair, layout in zip(filled, tokens):
            fresh = pair_turn_logps(model, [layout], pad_token_id(fmt))
            assert pair.ref_logps_chosen == pytest.approx(fresh.chosen[0].tolist(), rel=RTOL)
            assert pair.ref_logps_rejected == pytest.approx(fresh.rejected[0].tolist(), rel=RTOL)
    stored = TurnLogps.from_reference(filled)
    assert stored.chosen.shape == (len(pairs), max(p.actions("chosen") for p in pairs))
    assert stored.chosen[1, :pairs[1].actions("chosen")].tolist() == pytest.approx(filled[1].ref_logps_chosen)
    assert stored.chosen_tokens.abs().sum() == 0
    # With the policy as its own reference, every reference-based loss starts at ln 2.
    with torch.no_grad():
        policy = pair_turn_logps(model, tokens, pad_token_id(fmt))
    for algo in ("dpo", "dmpo", "stepwise"):
        loss, _ = preference_loss(LossConfig(algo=algo), policy, stored)
        assert torch.allclose(loss, torch.full_like(loss, math.log(2)), atol=1e-5)


# ---- bad data ------------------------------------------------------------------------------------


def _turns(goal="Cancel my order.", action='{"name": "final_answer", "arguments": {"answer": "ok"}}', **action_fields):
    return [Turn(role="user", text=goal)], [Turn(role="assistant", text=action, trainable=True, **action_fields),
                                            Turn(role="tool", text="done")]


def _pair(**changes):
    prefix, side = _turns()
    fields = {"id": "bad-1", "scenario": "retail", "task_id": "t1", "prefix": prefix, "chosen": side,
              "rejected": side, "source": "outcome", **changes}
    return PreferencePair(**fields)


def test_a_side_without_action_tokens_is_rejected():
    _, untrained = _turns()
    untrained[0] = untrained[0].model_copy(update={"trainable": False})
    with pytest.raises(ValidationError, match="rejected has no action tokens"):
        _pair(rejected=untrained)
    _, empty = _turns(token_ids=[])
    with pytest.raises(ValidationError, match="chosen has no action tokens"):
        _pair(chosen=empty)


def test_nan_values_and_reference_logps_are_rejected():
    with pytest.raises(ValidationError, match="value_chosen is nan"):
        _pair(value_chosen=float("nan"))
    with pytest.raises(ValidationError, match="ref_logps_rejected holds a value that is not finite"):
        _pair(ref_logps_chosen=[-1.0], ref_logps_rejected=[float("nan")])
    with pytest.raises(ValidationError, match="2 values for 1 trainable actions"):
        _pair(ref_logps_chosen=[-1.0, -2.0], ref_logps_rejected=[-1.0])


def test_from_reference_names_the_pair_without_reference_logps():
    ok = _pair(id="has-ref", ref_logps_chosen=[-1.0], ref_logps_rejected=[-2.0])
    with pytest.raises(ValueError, match="pair bad-1 has no reference log-probs"):
        TurnLogps.from_reference([ok, _pair()])


def test_pair_tokens_refuses_a_prefix_that_renders_differently_per_side(fmt, system):
    class PrefixDependsOnContinuation(ChatFormat):
        """A (broken) format whose system segment depends on how long the conversation is."""

        def turn_segments(self, turns, system):
            segments = super().turn_segments(turns, system)
            head, ids = segments[0]
            return [(head, ids + self.encode(str(len(turns)))), *segments[1:]]

    chosen = _pair().chosen
    longer = [*chosen, *chosen]
    with pytest.raises(ValueError, match="pair bad-1: the chat format renders the shared prefix to different token ids"):
        pair_tokens(PrefixDependsOnContinuation(fmt.tokenizer), _pair(rejected=longer), system)
    with pytest.raises(ValueError, match="pair bad-1: the prefix has no goal"):
        pair_tokens(fmt, _pair(prefix=[Turn(role="system", text=system)]), system)


def test_pair_tokens_reports_the_layout_types(tokens):
    assert all(isinstance(layout, PairTokens) for layout in tokens)
    assert all(len(layout.chosen) == len(layout.chosen_turn) for layout in tokens)
