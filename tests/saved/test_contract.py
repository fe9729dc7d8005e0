"""saved/contract.py: the contract's quantities against hand-computed values, the paper's
numbers and properties over Hypothesis-generated inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from saved.contract import (
    Contract,
    boundary_size,
    boundary_subset,
    clopper_pearson_upper,
    component_sizes,
    confusion_deviation,
    disagreement,
    disagreement_by_margin,
    hoeffding_radius,
    jaccard_overlap,
    logit_margins,
    max_pairwise_overlap,
    per_class_disagreement,
    per_class_upper_bounds,
    plan_samples,
    samples_needed,
    upper_bound,
)

# --------------------------------------------------------------------------- strategies


@st.composite
def logits_matrices(draw: st.DrawFn, min_classes: int = 2) -> torch.Tensor:
    n = draw(st.integers(1, 40))
    c = draw(st.integers(min_classes, 8))
    # A few distinct values make ties common, which is where tie-breaking rules matter.
    values = draw(
        st.lists(
            st.sampled_from([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]) | st.floats(-5, 5),
            min_size=n * c,
            max_size=n * c,
        )
    )
    return torch.tensor(values, dtype=torch.float32).reshape(n, c)


@st.composite
def prediction_pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    n = draw(st.integers(1, 60))
    c = draw(st.integers(2, 6))
    labels = st.lists(st.integers(0, c - 1), min_size=n, max_size=n)
    ref, dec, truth = (torch.tensor(draw(labels)) for _ in range(3))
    return ref, dec, truth, c


@st.composite
def support_matrices(draw: st.DrawFn) -> torch.Tensor:
    k = draw(st.integers(1, 6))
    n = draw(st.integers(1, 30))
    bits = draw(st.lists(st.booleans(), min_size=k * n, max_size=k * n))
    return torch.tensor(bits, dtype=torch.bool).reshape(k, n)


# --------------------------------------------------------------------------- Hoeffding


def test_hoeffding_reproduces_the_papers_test_sets() -> None:
    # DBPedia-14: 70,000 test texts, q = 0.2 -> n = 14,000; AG News: 7,600 -> n = 1,520.
    assert boundary_size(70_000, 0.2) == 14_000
    assert boundary_size(7_600, 0.2) == 1_520
    assert round(hoeffding_radius(14_000, 0.05), 4) == 0.0115
    assert round(hoeffding_radius(1_520, 0.05), 4) == 0.0348


def test_hoeffding_matches_the_formula_by_hand() -> None:
    # n = 200, delta = 0.1: ln(20) / 400 = 0.0074893..., sqrt -> 0.086541...
    assert hoeffding_radius(200, 0.1) == pytest.approx(0.0865409, abs=1e-7)


@given(st.floats(0.005, 1.0), st.floats(0.001, 0.5))
def test_samples_needed_is_the_smallest_passing_n(eps: float, delta: float) -> None:
    n = samples_needed(eps, delta)
    assert hoeffding_radius(n, delta) <= eps
    if n > 1:
        assert hoeffding_radius(n - 1, delta) > eps


# --------------------------------------------------------------------------- exact bound


def _upper_by_bisection(k: int, n: int, delta: float) -> float:
    """The Clopper-Pearson upper limit from its definition, independently of the Beta
    quantile: the rate p at which seeing at most k disagreements has probability delta / 2."""
    if k == n:
        return 1.0
    low, high = k / n, 1.0
    for _ in range(100):
        middle = (low + high) / 2
        if binom.cdf(k, n, middle) > delta / 2:
            low = middle
        else:
            high = middle
    return (low + high) / 2


CASES = [(0, 200, 0.0183), (4, 200, 0.0504), (10, 1520, 0.0121), (700, 14000, 0.0537)]


@pytest.mark.parametrize(("k", "n", "expected"), CASES)
def test_clopper_pearson_against_independent_values(k: int, n: int, expected: float) -> None:
    bound = clopper_pearson_upper(k, n, 0.05)
    assert round(bound, 4) == expected
    assert bound == pytest.approx(_upper_by_bisection(k, n, 0.05), abs=1e-9)
    assert bound >= k / n
    hoeffding = upper_bound(k, n, 0.05, "hoeffding")
    assert hoeffding == pytest.approx(k / n + hoeffding_radius(n, 0.05))
    assert bound < hoeffding  # the same guarantee, tighter


def test_zero_of_200_by_hand() -> None:
    # P(X = 0) = (1 - p)^200 = 0.025  ->  p = 1 - 0.025^(1/200)
    assert clopper_pearson_upper(0, 200, 0.05) == pytest.approx(1 - 0.025 ** (1 / 200))
    assert clopper_pearson_upper(200, 200, 0.05) == 1.0


@settings(max_examples=25, deadline=None)
@given(
    rate=st.floats(0.0, 0.6),
    n=st.integers(10, 400),
    seed=st.integers(0, 2**31 - 1),
    bound=st.sampled_from(["binomial", "hoeffding"]),
)
def test_both_bounds_miss_the_true_rate_at_most_delta_of_the_time(
    rate: float, n: int, seed: int, bound: str
) -> None:
    draws = np.random.default_rng(seed).binomial(n, rate, size=4000)
    limits = {k: upper_bound(int(k), n, 0.05, bound) for k in np.unique(draws)}  # type: ignore[arg-type]
    missed = np.mean([limits[k] < rate for k in draws])
    assert missed <= 0.05


@given(k=st.integers(0, 300), extra=st.integers(0, 300), delta=st.floats(0.001, 0.5))
def test_every_bound_is_at_least_dis(k: int, extra: int, delta: float) -> None:
    n = max(1, k + extra)
    k = min(k, n)
    for name in ("binomial", "hoeffding"):
        assert upper_bound(k, n, delta, name) >= k / n  # type: ignore[arg-type]


def test_per_class_bounds_share_delta_over_the_classes_present() -> None:
    reference = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    decomposed = torch.tensor([0, 1, 0, 0, 1, 1, 1, 1, 0, 0])
    bounds = per_class_upper_bounds(reference, decomposed, 3, 0.05, "binomial")
    assert bounds[0] == pytest.approx(clopper_pearson_upper(1, 4, 0.025))
    assert bounds[1] == pytest.approx(clopper_pearson_upper(2, 6, 0.025))
    assert bounds[2] is None  # class 2 has no boundary sample


@pytest.mark.parametrize("bound", ["binomial", "hoeffding"])
@pytest.mark.parametrize("expected_dis", [0.0, 0.02, 0.05])
def test_planned_samples_are_the_smallest_that_pass(bound: str, expected_dis: float) -> None:
    n = samples_needed(0.1, 0.05, expected_dis=expected_dis, bound=bound)  # type: ignore[arg-type]
    assert upper_bound(round(expected_dis * n), n, 0.05, bound) <= 0.1  # type: ignore[arg-type]
    assert upper_bound(round(expected_dis * (n - 1)), n - 1, 0.05, bound) > 0.1  # type: ignore[arg-type]
    plan = plan_samples(Contract(bound=bound), expected_dis)  # type: ignore[arg-type]
    assert plan.n_boundary == n
    assert boundary_size(plan.n_samples, 0.2) >= n > boundary_size(plan.n_samples - 1, 0.2)
    assert plan.n_with_holdout == math.ceil(plan.n_samples / 0.5)


def test_planning_by_hand_and_its_limits() -> None:
    # Hoeffding at Dis = 0: ln(40) / (2 * 0.1^2) = 184.4 -> |B| >= 185, 923 samples at q = 0.2
    plan = plan_samples(Contract(bound="hoeffding"))
    assert (plan.n_boundary, plan.n_samples) == (185, 923)
    # binomial at Dis = 0: 1 - 0.025^(1/n) <= 0.1 -> n >= ln(0.025) / ln(0.9) = 35.01 -> 36
    assert plan_samples(Contract()).n_boundary == 36
    with pytest.raises(ValueError, match="no sample size passes"):
        samples_needed(0.1, expected_dis=0.1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n: expected"),
        ({"n": 10, "delta": 0.0}, "delta"),
        ({"n": 10, "delta": 1.0}, "delta"),
    ],
)
def test_hoeffding_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        hoeffding_radius(**kwargs)


# --------------------------------------------------------------------------- margins, boundary


def test_margins_by_hand() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 0.0, -1.0], [-4.0, 2.0, 1.0]])
    assert logit_margins(logits).tolist() == pytest.approx([0.5, 0.0, 1.0])


@given(logits_matrices())
def test_margins_are_non_negative_and_zero_exactly_on_ties(logits: torch.Tensor) -> None:
    margins = logit_margins(logits)
    assert bool((margins >= 0).all())
    top = logits.max(dim=1).values
    ties = (logits == top[:, None]).sum(dim=1) > 1
    assert torch.equal(margins == 0, ties)


@given(st.integers(1, 100_000), st.floats(1e-6, 1.0))
def test_boundary_size_follows_the_round_half_up_rule(n: int, q: float) -> None:
    size = boundary_size(n, q)
    assert 1 <= size <= n
    if q * n >= 1:
        assert abs(size - q * n) <= 0.5 + 1e-9


@given(logits_matrices(), st.floats(0.01, 1.0))
def test_boundary_subset_keeps_the_lowest_margins_deterministically(
    logits: torch.Tensor, q: float
) -> None:
    margins = logit_margins(logits)
    subset = boundary_subset(margins, q=q)
    assert subset.numel() == boundary_size(margins.numel(), q)
    assert len(set(subset.tolist())) == subset.numel()
    # lowest margin first, ties by index
    keys = [(float(margins[i]), int(i)) for i in subset]
    assert keys == sorted(keys)
    outside = torch.ones_like(margins, dtype=torch.bool)
    outside[subset] = False
    if bool(outside.any()):
        assert float(margins[outside].min()) >= float(margins[subset].max())
    assert torch.equal(subset, boundary_subset(margins.clone(), q=q))


def test_boundary_subset_by_absolute_margin() -> None:
    margins = torch.tensor([0.3, 0.05, 2.0, 0.05, 0.1])
    assert boundary_subset(margins, kappa_margin=0.1).tolist() == [1, 3, 4]
    with pytest.raises(ValueError, match="empty boundary subset"):
        boundary_subset(margins, kappa_margin=0.01)


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5, math.nan])
def test_boundary_subset_rejects_q_outside_unit_interval(q: float) -> None:
    with pytest.raises(ValueError, match=r"q: expected .*\(0, 1\]"):
        boundary_subset(torch.tensor([0.1, 0.2]), q=q)


def test_boundary_subset_needs_exactly_one_rule() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        boundary_subset(torch.tensor([0.1]), q=0.2, kappa_margin=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        boundary_subset(torch.tensor([0.1]))


@pytest.mark.parametrize(
    ("logits", "match"),
    [
        (torch.tensor([[0.0, math.nan]]), "non-finite"),
        (torch.tensor([[0.0, math.inf]]), "non-finite"),
        (torch.zeros(3), r"shape \[n, C\]"),
        (torch.zeros(2, 2, 2), r"shape \[n, C\]"),
        (torch.zeros(4, 1), "at least two classes"),
        (torch.zeros(0, 3), "empty"),
    ],
)
def test_margins_reject_bad_logits(logits: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        logit_margins(logits)


# --------------------------------------------------------------------------- disagreement


def test_disagreement_and_per_class_by_hand() -> None:
    ref = torch.tensor([0, 0, 1, 1, 1, 2])
    dec = torch.tensor([0, 1, 1, 0, 0, 2])
    assert disagreement(ref, dec) == pytest.approx(3 / 6)
    rates = per_class_disagreement(ref, dec, num_classes=4)
    assert rates[:3].tolist() == pytest.approx([1 / 2, 2 / 3, 0.0])
    assert math.isnan(float(rates[3]))


@given(prediction_pairs())
def test_disagreement_is_a_rate(pair: tuple) -> None:
    ref, dec, _, c = pair
    dis = disagreement(ref, dec)
    assert 0.0 <= dis <= 1.0
    assert disagreement(ref, ref) == 0.0
    # the per-class rates, weighted by class counts, give back the overall rate
    rates = per_class_disagreement(ref, dec, c)
    counts = torch.bincount(ref, minlength=c).double()
    assert float((rates.nan_to_num(0.0) * counts).sum() / counts.sum()) == pytest.approx(dis)


def test_disagreement_by_margin_by_hand() -> None:
    # margins of samples 0..6; by rank: 2 (0.1), 5 (0.1, a tie: index order), 0 (0.3), 6 (0.4),
    # 1 (0.9), 4 (1.5), 3 (2.0); 3 groups of 7: ranks 0-2, 3-4, 5-6 (floor(r * 3 / 7))
    margins = torch.tensor([0.3, 0.9, 0.1, 2.0, 1.5, 0.1, 0.4])
    ref = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    dec = torch.tensor([0, 1, 0, 0, 0, 2, 1])  # samples 2, 4 and 6 disagree
    counts, wrong, low, high = disagreement_by_margin(margins, ref, dec, bins=3)
    assert counts.tolist() == [3, 2, 2]
    assert wrong.tolist() == [1, 1, 1]  # {2, 5, 0}: 2; {6, 1}: 6; {4, 3}: 4
    assert low.tolist() == pytest.approx([0.1, 0.4, 1.5])
    assert high.tolist() == pytest.approx([0.3, 0.9, 2.0])
    # more bins than samples: one sample each
    counts, _, _, _ = disagreement_by_margin(margins[:4], ref[:4], dec[:4], bins=10)
    assert counts.tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="bins: expected an integer >= 1"):
        disagreement_by_margin(margins, ref, dec, bins=0)
    with pytest.raises(ValueError, match="margins: expected one margin per prediction"):
        disagreement_by_margin(margins[:3], ref, dec)


@given(logits_matrices(), st.integers(1, 12), st.data())
def test_disagreement_by_margin_partitions_the_samples_in_margin_order(
    logits: torch.Tensor, bins: int, data: st.DataObject
) -> None:
    margins, ref = logit_margins(logits), logits.argmax(1)
    n = ref.numel()
    dec = torch.tensor(data.draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)))
    counts, wrong, low, high = disagreement_by_margin(margins, ref, dec, bins)
    assert int(counts.sum()) == n and int(counts.max() - counts.min()) <= 1
    assert int(wrong.sum()) == int((ref != dec).sum())
    assert bool((wrong <= counts).all()) and bool((low <= high).all())
    assert bool((high[:-1] <= low[1:]).all())  # groups follow the margin order
    # the first group is the boundary subset of the same size (the same tie-breaking)
    first = boundary_subset(margins, q=float(counts[0]) / n)
    if first.numel() == int(counts[0]):
        assert int(wrong[0]) == int((ref[first] != dec[first]).sum())


def test_disagreement_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="decomposed: 2 predictions for 3"):
        disagreement(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="empty boundary subset"):
        disagreement(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))


# --------------------------------------------------------------------------- confusion


def test_confusion_deviation_by_hand() -> None:
    ref = torch.tensor([0, 1, 1, 2])
    dec = torch.tensor([0, 2, 1, 2])
    # without labels: C has mass 1/4 on (0,0), (1,1), (1,1), (2,2); C_dec moves one 1/4 from
    # (1,1) to (1,2): L1 = 1/4 + 1/4.
    assert confusion_deviation(ref, dec) == pytest.approx(0.5)
    truth = torch.tensor([0, 1, 0, 2])
    # with labels the moved mass goes from (1,1) to (1,2) again.
    assert confusion_deviation(ref, dec, truth) == pytest.approx(0.5)
    assert confusion_deviation(ref, ref, truth) == 0.0


@given(prediction_pairs())
def test_confusion_deviation_is_at_most_twice_disagreement(pair: tuple) -> None:
    ref, dec, truth, c = pair
    bound = 2 * disagreement(ref, dec) + 1e-12
    assert confusion_deviation(ref, dec, num_classes=c) <= bound
    assert confusion_deviation(ref, dec, truth, num_classes=c) <= bound


# --------------------------------------------------------------------------- overlap and size


def test_jaccard_by_hand() -> None:
    supports = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    overlap = jaccard_overlap(supports)
    expected = torch.tensor([[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(overlap, expected)
    assert max_pairwise_overlap(overlap) == pytest.approx(1 / 3)


@given(support_matrices())
def test_jaccard_properties(supports: torch.Tensor) -> None:
    overlap = jaccard_overlap(supports)
    assert torch.equal(overlap, overlap.T)
    assert bool(((overlap >= 0) & (overlap <= 1)).all())
    assert torch.equal(overlap.diagonal(), torch.ones(supports.shape[0], dtype=torch.float64))
    # identical supports overlap 1, disjoint ones 0; compare with a set computation
    sets = [set(torch.nonzero(row).flatten().tolist()) for row in supports]
    for i, a in enumerate(sets):
        for j, b in enumerate(sets):
            expected = 1.0 if not (a | b) else len(a & b) / len(a | b)
            assert float(overlap[i, j]) == pytest.approx(expected)


@given(support_matrices())
def test_disjoint_complements_have_zero_overlap(supports: torch.Tensor) -> None:
    row = supports[0]
    pair = torch.stack([row, ~row])
    overlap = jaccard_overlap(pair)
    assert float(overlap[0, 1]) == 0.0
    assert float(jaccard_overlap(torch.stack([row, row]))[0, 1]) == 1.0


def test_jaccard_on_large_per_weight_supports_is_exact() -> None:
    generator = torch.Generator().manual_seed(0)
    supports = torch.rand(3, 3_000_000, generator=generator) < 0.5  # spans several chunks
    overlap = jaccard_overlap(supports)
    a, b = supports[0], supports[1]
    expected = int((a & b).sum()) / int((a | b).sum())
    assert float(overlap[0, 1]) == pytest.approx(expected, abs=1e-12)


def test_component_sizes_by_hand() -> None:
    supports = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert component_sizes(supports).tolist() == pytest.approx([0.5, 0.25])
    weights = torch.tensor([10.0, 1.0, 1.0, 8.0])  # e.g. parameters per unit
    assert component_sizes(supports, weights).tolist() == pytest.approx([11 / 20, 10 / 20])


def test_supports_must_be_boolean_matrices() -> None:
    with pytest.raises(TypeError, match=r"supports: expected dtype torch.bool"):
        jaccard_overlap(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"supports: expected a non-empty \[K, N\]"):
        component_sizes(torch.ones(3, dtype=torch.bool))


# --------------------------------------------------------------------------- Contract


def test_contract_defaults_are_the_papers() -> None:
    contract = Contract()
    assert (contract.eps, contract.kappa, contract.gamma, contract.eta, contract.delta) == (
        0.1,
        0.2,
        0.5,
        0.3,
        0.05,
    )
    assert contract.kappa_margin is None
    assert contract.bound == "binomial"
    assert Contract.from_dict(contract.to_dict()) == contract


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 0.0}, r"eps: expected a value in \(0, 1\], got 0.0"),
        ({"eps": 1.5}, r"eps: expected a value in \(0, 1\]"),
        ({"kappa": 0.0}, r"kappa: expected a value in \(0, 1\]"),
        ({"kappa": 1.01}, r"kappa: expected a value in \(0, 1\]"),
        ({"gamma": -0.1}, r"gamma: expected a value in \[0, 1\]"),
        ({"eta": 2}, r"eta: expected a value in \[0, 1\]"),
        ({"delta": 1.0}, r"delta: expected a value in \(0, 1\)"),
        ({"kappa_margin": -1.0}, r"kappa_margin: expected a margin >= 0"),
        ({"eps": math.nan}, r"eps: expected a value in \(0, 1\], got nan"),
        ({"kappa_margin": math.inf}, "kappa_margin: expected a finite number"),
        ({"bound": "chernoff"}, "bound: expected one of"),
    ],
)
def test_contract_validates_each_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Contract(**kwargs)


def test_contract_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match="gamma: expected a number"):
        Contract(gamma="0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="eps: expected a number"):
        Contract(eps=True)
    with pytest.raises(ValueError, match="unknown keys"):
        Contract.from_dict({"epsilon": 0.1})
