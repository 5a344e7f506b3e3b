"""The preference losses on synthetic per-action log-probs: exact values, φ, and the length bias."""

import math

import pytest
import torch
from pydantic import ValidationError
from trajalign.alignment.logprobs import TurnLogps
from trajalign.alignment.losses import (
    ALGORITHMS,
    LOSSES,
    LossConfig,
    phi,
    preference_loss,
    sequence_rewards,
)

BETA = 0.1


def _logps(chosen, rejected, chosen_tokens=None, rejected_tokens=None) -> TurnLogps:
    return TurnLogps.from_lists(chosen, rejected, chosen_tokens, rejected_tokens)


def _policy_and_reference(deltas_chosen, deltas_rejected, seed=0):
    """A policy whose per-action log-ratios against a random reference are exactly the given deltas."""
    generator = torch.Generator().manual_seed(seed)
    ref_c = [(-5 * torch.rand(len(d), generator=generator, dtype=torch.float64)).tolist() for d in deltas_chosen]
    ref_r = [(-5 * torch.rand(len(d), generator=generator, dtype=torch.float64)).tolist() for d in deltas_rejected]
    pol_c = [[r + d for r, d in zip(ref, delta)] for ref, delta in zip(ref_c, deltas_chosen)]
    pol_r = [[r + d for r, d in zip(ref, delta)] for ref, delta in zip(ref_r, deltas_rejected)]
    return _logps(pol_c, pol_r), _logps(ref_c, ref_r)


# ---- the values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["dpo", "dmpo", "stepwise"])
def test_loss_is_ln2_when_policy_equals_reference(algo):
    same = _logps([[-3.0, -1.5, -2.0], [-4.0]], [[-2.0], [-1.0, -7.0, -2.5, -0.5]])
    loss, metrics = preference_loss(LossConfig(algo=algo, beta=BETA), same, same)
    assert torch.allclose(loss, torch.full((2,), math.log(2)), atol=1e-7)
    assert metrics["rewards/margins"].abs().max() == 0
    assert metrics["rewards/accuracies"].tolist() == [0.0, 0.0]


def test_ipo_is_the_squared_target_when_policy_equals_reference():
    same = _logps([[-3.0, -1.5]], [[-2.0, -1.0, -4.0]])
    loss, _ = preference_loss(LossConfig(algo="ipo", beta=BETA), same, same)
    assert loss.item() == pytest.approx((1 / (2 * BETA)) ** 2, rel=1e-6)  # 25.0


def test_rewards_and_losses_on_a_worked_example():
    # chosen: deltas [1, 2, 3]; rejected: deltas [0.5, -1] (+ a padded column that must be ignored).
    policy, reference = _policy_and_reference([[1.0, 2.0, 3.0]], [[0.5, -1.0]])
    dpo = sequence_rewards(LossConfig(algo="dpo", beta=BETA), policy, reference)
    assert [x.item() for x in dpo] == pytest.approx([0.6, -0.05], abs=1e-6)
    # φ_0.5(·, 3) = [1, 3/7, 1/7]; φ_0.5(·, 2) = [1, 1/3].
    dmpo = sequence_rewards(LossConfig(algo="dmpo", beta=BETA, gamma=0.5), policy, reference)
    assert [x.item() for x in dmpo] == pytest.approx([BETA * (1 + 6 / 7 + 3 / 7), BETA * (0.5 - 1 / 3)], abs=1e-6)
    loss, metrics = preference_loss(LossConfig(algo="dmpo", beta=BETA, gamma=0.5), policy, reference)
    margin = BETA * (1 + 6 / 7 + 3 / 7) - BETA * (0.5 - 1 / 3)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-margin)), abs=1e-6)
    assert metrics["rewards/margins"].item() == pytest.approx(margin, abs=1e-6)
    assert metrics["rewards/accuracies"].item() == 1.0
    assert metrics["logps/chosen"].item() == pytest.approx(policy.chosen.sum().item(), abs=1e-6)
    # ipo on the dpo sums before β: h = 6 − (−0.5) = 6.5, loss = (6.5 − 5)².
    ipo, _ = preference_loss(LossConfig(algo="ipo", beta=BETA), policy, reference)
    assert ipo.item() == pytest.approx((6.5 - 5) ** 2, abs=1e-4)


def test_padded_actions_are_ignored():
    base = _logps([[-1.0, -2.0]], [[-3.0]])
    padded = TurnLogps(torch.tensor([[-1.0, -2.0, -50.0]]), torch.tensor([[-3.0, 17.0]]),
                       torch.tensor([[True, True, False]]), torch.tensor([[True, False]]),
                       torch.zeros(1, 3), torch.zeros(1, 2))
    reference = _logps([[-1.5, -2.5]], [[-2.0]])
    padded_reference = TurnLogps(torch.tensor([[-1.5, -2.5, 9.0]]), torch.tensor([[-2.0, -4.0]]),
                                 padded.chosen_mask, padded.rejected_mask, torch.zeros(1, 3), torch.zeros(1, 2))
    for algo in ("dpo", "dmpo", "ipo"):
        config = LossConfig(algo=algo, beta=BETA)
        assert preference_loss(config, padded, padded_reference)[0].item() == \
            pytest.approx(preference_loss(config, base, reference)[0].item(), abs=1e-7)


def test_simpo_is_reference_free_and_length_averaged():
    policy = _logps([[-4.0, -2.0]], [[-9.0]], chosen_tokens=[[2, 2]], rejected_tokens=[[3]])
    loss, metrics = preference_loss(LossConfig(algo="simpo", beta=2.0, simpo_gamma=0.5), policy, None)
    chosen, rejected = 2.0 * -6.0 / 4, 2.0 * -9.0 / 3  # −3 and −6
    assert metrics["rewards/chosen"].item() == pytest.approx(chosen)
    assert metrics["rewards/rejected"].item() == pytest.approx(rejected)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-(chosen - rejected - 0.5))), abs=1e-6)
    with pytest.raises(ValueError, match="token count"):
        preference_loss(LossConfig(algo="simpo"), _logps([[-4.0]], [[-9.0]]), None)


@pytest.mark.parametrize("algo", ["dpo", "dmpo", "stepwise", "ipo"])
def test_reference_based_losses_need_a_reference(algo):
    with pytest.raises(ValueError, match="needs reference log-probs"):
        preference_loss(LossConfig(algo=algo), _logps([[-1.0]], [[-2.0]]), None)


def test_mismatched_reference_is_refused():
    with pytest.raises(ValueError, match="disagree on the actions of the chosen"):
        preference_loss(LossConfig(algo="dpo"), _logps([[-1.0, -2.0]], [[-2.0]]), _logps([[-1.0]], [[-2.0]]))


def test_sft_term_is_alpha_times_mean_nll_per_chosen_token():
    same = _logps([[-6.0, -2.0]], [[-3.0]], chosen_tokens=[[3, 1]], rejected_tokens=[[2]])
    loss, metrics = preference_loss(LossConfig(algo="dpo", alpha=0.5), same, same)
    assert metrics["loss/sft"].item() == pytest.approx(2.0)  # 8 nats over 4 tokens
    assert loss.item() == pytest.approx(math.log(2) + 0.5 * 2.0, abs=1e-6)
    assert "loss/sft" not in preference_loss(LossConfig(algo="dpo"), same, same)[1]


def test_value_weighting_uses_the_gap_as_given_and_1_without_values():
    policy, reference = _policy_and_reference([[1.0], [0.5], [0.2]], [[-1.0], [0.0], [0.3]])
    config = LossConfig(algo="stepwise", value_weighted=True)
    plain, _ = preference_loss(LossConfig(algo="stepwise"), policy, reference)
    weighted, _ = preference_loss(config, policy, reference, torch.tensor([0.5, float("nan"), 0.0]))
    assert weighted.tolist() == pytest.approx([0.5 * plain[0].item(), plain[1].item(), 0.0], abs=1e-7)
    with pytest.raises(ValueError, match="needs value_gap"):
        preference_loss(config, policy, reference)
    with pytest.raises(ValueError, match=">= 0"):
        preference_loss(config, policy, reference, torch.tensor([0.5, -0.1, 0.0]))
    with pytest.raises(ValidationError, match="value_weighted applies to algo 'stepwise'"):
        LossConfig(algo="dpo", value_weighted=True)


def test_config_is_validated():
    assert LossConfig().algo == "stepwise" and set(LOSSES) == set(ALGORITHMS)
    for bad in ({"beta": 0.0}, {"gamma": 0.0}, {"gamma": 1.5}, {"alpha": -1.0}, {"algo": "kto"}, {"betta": 0.1}):
        with pytest.raises(ValidationError):
            LossConfig(**bad)


# ---- φ -----------------------------------------------------------------------------------------------


def test_phi_matches_its_closed_form():
    n = torch.tensor(4)
    i = torch.arange(5)
    expected = [(0.5**k - 0.5**4) / (1 - 0.5**4) for k in range(5)]  # [1, 7/15, 1/5, 1/15, 0]
    assert phi(i, n, 0.5).tolist() == pytest.approx(expected, abs=1e-7)
    assert phi(i, n, 1.0).tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    for gamma in (0.3, 0.9, 0.99, 1.0):
        for length in (1, 2, 7, 40):
            weights = phi(torch.arange(length + 1), torch.tensor(length), gamma)
            assert weights[0].item() == pytest.approx(1.0, abs=1e-7)
            assert weights[-1].item() == pytest.approx(0.0, abs=1e-7)
            assert bool((weights[1:] <= weights[:-1]).all())  # later actions weigh less


def test_phi_is_continuous_at_gamma_1_and_sums_to_half_n_plus_1():
    for length in (1, 3, 10, 100):
        i = torch.arange(length)
        n = torch.tensor(length)
        assert torch.allclose(phi(i, n, 1 - 1e-6), phi(i, n, 1.0), atol=1e-4)
        assert phi(i, n, 1.0).sum().item() == pytest.approx((length + 1) / 2, rel=1e-6)


def test_phi_is_not_the_papers_printed_form():
    """The printed (1 − γ^{n−i})/(1 − γ^n) weighs late actions most and its total grows with n (DESIGN.md §6)."""
    gamma, length = 0.5, 4
    printed = [(1 - gamma ** (length - k)) / (1 - gamma**length) for k in range(length)]
    ours = phi(torch.arange(length), torch.tensor(length), gamma).tolist()
    assert ours[1] == pytest.approx(7 / 15) and printed[1] == pytest.approx(14 / 15)
    assert ours != pytest.approx(printed, abs=1e-3)
    # Bounded total weight: Σ_i φ_γ(i, n) < 1/(1 − γ) for every n, while the printed form's total ~ n.
    for n in (10, 100, 1000):
        assert phi(torch.arange(n), torch.tensor(n), 0.9).sum().item() < 10
        assert sum((1 - 0.9 ** (n - k)) / (1 - 0.9**n) for k in range(n)) > n - 10


def test_phi_is_zero_for_an_empty_side():
    weights = phi(torch.arange(3), torch.tensor([[0], [2]]), 0.9)
    assert torch.allclose(weights, torch.tensor([[0.0, 0.0, 0.0], [1.0, (0.9 - 0.81) / 0.19, 0.0]]), atol=1e-6)


# ---- the length bias (DESIGN.md §6) ----------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.9, 1.0])
@pytest.mark.parametrize("extra", [0, 5, 10, 20, 40])
def test_per_step_shift_moves_dpo_by_the_length_gap_and_an_occupancy_shift_leaves_dmpo_unchanged(extra, gamma):
    """dpo moves with a per-step shift of Δ_t; dmpo cancels a shift of the occupancy log-ratio u_t, not of Δ_t.

    The chosen side has T_w = 3 actions, the rejected side T_l = 3 + L (L = `extra`).

    dpo scores each step's log-ratio Δ_t with weight 1: r(x) = β Σ_t Δ_t. Shifting every Δ_t → Δ_t + c
    on both sides moves the margin r(w) − r(l) by exactly β c (T_w − T_l) = −β c L.

    dmpo scores the per-step occupancy log-ratios u_t = log d^π(s_t, a_t)/d^ref(s_t, a_t) = Σ_{j≤t} Δ_j
    with weights w_t = (1 − γ)γ^t/(1 − γ^T) (γ = 1: 1/T), which sum to 1 over t < T for every T:
    r(x) = β Σ_t w_t u_t = β Σ_j φ_γ(j, T) Δ_j (checked here against `sequence_rewards`). Shifting every
    u_t → u_t + c on both sides (Δ_0 → Δ_0 + c, the other Δ_j unchanged) leaves the margin unchanged,
    to float32 rounding, whatever L. The same per-step shift of dpo's per-step terms moves dpo's margin.
    """
    c = 0.7
    generator = torch.Generator().manual_seed(extra)
    deltas = {"w": torch.randn(3, generator=generator, dtype=torch.float64),
              "l": torch.randn(3 + extra, generator=generator, dtype=torch.float64)}

    def margin(algo, chosen, rejected):
        policy, reference = _policy_and_reference([chosen.tolist()], [rejected.tolist()])
        config = LossConfig(algo=algo, beta=BETA, gamma=gamma)
        return preference_loss(config, policy, reference)[1]["rewards/margins"].item()

    # dpo: Δ_t → Δ_t + c moves the margin by β c (T_w − T_l).
    moved = margin("dpo", deltas["w"] + c, deltas["l"] + c) - margin("dpo", deltas["w"], deltas["l"])
    assert moved == pytest.approx(BETA * c * (3 - (3 + extra)), abs=1e-5)

    # dmpo: the reward is the w_t-weighted mean of the occupancy log-ratios u_t.
    def occupancy_reward(u):
        t, length = torch.arange(len(u), dtype=torch.float64), len(u)
        w = torch.full_like(u, 1 / length) if gamma == 1 else (1 - gamma) * gamma**t / (1 - gamma**length)
        assert w.sum().item() == pytest.approx(1.0)
        return BETA * (w * u).sum().item()

    def deltas_of(u):
        return torch.diff(u, prepend=torch.zeros(1, dtype=torch.float64))

    u = {side: torch.cumsum(delta, 0) for side, delta in deltas.items()}
    policy, reference = _policy_and_reference([deltas["w"].tolist()], [deltas["l"].tolist()])
    rewards = sequence_rewards(LossConfig(algo="dmpo", beta=BETA, gamma=gamma), policy, reference)
    assert [r.item() for r in rewards] == pytest.approx([occupancy_reward(u["w"]), occupancy_reward(u["l"])], abs=1e-5)
    before = margin("dmpo", deltas_of(u["w"]), deltas_of(u["l"]))
    after = margin("dmpo", deltas_of(u["w"] + c), deltas_of(u["l"] + c))
    assert after == pytest.approx(before, abs=1e-6)
    # The stepwise loss is dmpo on branch pairs: the same invariance.
    assert margin("stepwise", deltas_of(u["w"] + c), deltas_of(u["l"] + c)) == pytest.approx(before, abs=1e-6)
    if extra:  # dmpo is not invariant to dpo's shift: its invariance is to the occupancy measure's constant
        shifted = margin("dmpo", deltas["w"] + c, deltas["l"] + c)
        assert abs(shifted - before) > 1e-3


@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_an_opening_both_sides_share_moves_dmpo_only_when_the_pair_is_anchored_before_it(gamma):
    """Why outcome pairs are anchored where the episodes first differ (`outcome_pairs(anchor="divergence")`).

    Both sides open with the same two actions, so their log-ratios are equal on both sides. dpo's sum
    cancels them whatever their values. Anchored at the goal (k = 0), dmpo weighs action i of a side
    with n actions by φ_γ(i, n), which differs between sides of different lengths for i ≥ 1: the shared
    actions move its margin, so training pushes them up or down by the length gap. Anchored after the
    opening, they are in the prefix and carry no gradient.
    """
    chosen, rejected = [0.5, 0.1], [-0.4, 0.2, 0.1, -0.3]

    def margin(algo, opening):
        policy, reference = _policy_and_reference([opening + chosen], [opening + rejected])
        config = LossConfig(algo=algo, beta=BETA, gamma=gamma)
        return preference_loss(config, policy, reference)[1]["rewards/margins"].item()

    anchored = margin("dpo", [])
    assert margin("dpo", [0.0, 0.0]) == pytest.approx(anchored, abs=1e-6)
    assert margin("dpo", [0.8, -0.6]) == pytest.approx(anchored, abs=1e-6)
    at_start = margin("dmpo", [0.8, -0.6]) - margin("dmpo", [0.0, 0.0])
    second_weight = {n: phi(torch.tensor(1), torch.tensor(n), gamma).item() for n in (4, 6)}  # 2 shared + 2 or 4
    expected = BETA * -0.6 * (second_weight[4] - second_weight[6])
    assert at_start == pytest.approx(expected, abs=1e-6) and abs(at_start) > 1e-3
