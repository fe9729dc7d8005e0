"""saved/merging.py: reversible neuron merging — proportional units folded away without
changing the outputs, the reduced network given back exactly, and changes measured when the
tolerance allows inexact merges."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import saved
from saved.baselines import random
from saved.masking.units import UnitSpace
from saved.merging import merge, merge_report


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _same(a: nn.Module, b: nn.Module) -> bool:
    """Every parameter equal, bit for bit, and none missing."""
    first, second = _params(a), _params(b)
    return first.keys() == second.keys() and all(torch.equal(first[n], second[n]) for n in first)


@pytest.fixture(scope="module")
def duplicated(digits_mlp) -> nn.Module:
    """The trained 64-32-32-10 MLP with planted copies: in layer "0" unit 5 = 2 x unit 2,
    unit 9 = 0.5 x unit 2, unit 20 = 4 x unit 11 (weights and bias); in layer "2" unit 7 =
    0.25 x unit 3. Powers of two: the copies are exact in float32."""
    model = copy.deepcopy(digits_mlp).eval()
    with torch.no_grad():
        for layer, copies in (
            (model[0], ((5, 2, 2.0), (9, 2, 0.5), (20, 11, 4.0))),
            (model[2], ((7, 3, 0.25),)),
        ):
            for target, source, factor in copies:
                layer.weight[target] = factor * layer.weight[source]
                layer.bias[target] = factor * layer.bias[source]
    return model


def test_tol_zero_merges_exactly_the_planted_copies(duplicated, digits_xy) -> None:
    x, _ = digits_xy
    before = _params(duplicated)
    merged = merge(duplicated, tol=0.0)
    assert _params(duplicated).keys() == before.keys()
    assert all(torch.equal(p, before[n]) for n, p in _params(duplicated).items())  # untouched
    steps = {step.layer: step for step in merged.steps}
    assert set(steps) == {"0", "2"}
    assert steps["0"].removed == [5, 9, 20] and steps["0"].into == [2, 2, 11]
    assert steps["0"].factors == [2.0, 0.5, 4.0]
    assert steps["2"].removed == [7] and steps["2"].into == [3]
    assert merged.units_merged == 4
    network = merged.module
    assert (network[0].out_features, network[2].in_features) == (29, 29)
    assert (network[2].out_features, network[4].in_features) == (31, 31)
    # in float64 the merged network computes the same function (up to float64 rounding)
    with torch.no_grad():
        wide = copy.deepcopy(network).double()(x.double())
        change = (wide - copy.deepcopy(duplicated).double()(x.double())).abs().max()
    assert float(change) <= 1e-6
    # in float32, a changed summation order: rounding of the logits' size, no more
    with torch.no_grad():
        logits = duplicated(x)
        change = (network(x) - logits).abs().max()
    assert float(change) <= 1e-6 * float(logits.abs().max().clamp_min(1))
    # a network without planted copies has none at tol = 0
    assert merge(saved.testing.tiny_mlp(seed=3)).units_merged == 0


def test_a_scale_that_float32_rounds_still_merges_at_tol_zero(digits_mlp, digits_xy) -> None:
    """1.7 x w is not exact in float32: proportional up to rounding, which tol = 0 allows
    (MERGE_SLACK); the output moves by rounding only."""
    x, _ = digits_xy
    model = copy.deepcopy(digits_mlp).eval()
    with torch.no_grad():
        model[0].weight[6] = 1.7 * model[0].weight[1]
        model[0].bias[6] = 1.7 * model[0].bias[1]
    merged = merge(model)
    assert [(s.layer, s.removed, s.into) for s in merged.steps] == [("0", [6], [1])]
    assert merged.steps[0].factors == pytest.approx([1.7], rel=1e-6)
    with torch.no_grad():
        logits = model(x)
        change = (merged.module(x) - logits).abs().max()
    assert float(change) <= 1e-6 * float(logits.abs().max().clamp_min(1))


def test_unmerge_gives_back_the_exact_weights(duplicated) -> None:
    merged = merge(duplicated, tol=0.0)
    restored = merged.unmerge()
    original = _params(duplicated)
    again = _params(restored)
    assert again.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(again[name], tensor), name
    assert (restored[0].out_features, restored[2].in_features) == (32, 32)
    # unmerging reads the record, not the merged network's weights it leaves in place
    assert merged.module[0].out_features == 29


def test_layers_before_a_non_homogeneous_activation_are_never_merged() -> None:
    torch.manual_seed(0)
    for activation in (nn.GELU(), nn.Tanh(), nn.SiLU()):
        model = nn.Sequential(nn.Linear(4, 6), activation, nn.Linear(6, 3))
        with torch.no_grad():
            model[0].weight[4] = 2 * model[0].weight[1]
            model[0].bias[4] = 2 * model[0].bias[1]
        assert merge(model).units_merged == 0, type(activation).__name__


def test_a_convolution_merges_a_scaled_channel() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.LeakyReLU(0.1), nn.Conv2d(6, 4, 3)).eval()
    with torch.no_grad():
        model[0].weight[5] = 0.25 * model[0].weight[0]
        model[0].bias[5] = 0.25 * model[0].bias[0]
    merged = merge(model)
    assert [(s.removed, s.into) for s in merged.steps] == [([5], [0])]
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert float((merged.module(x) - model(x)).abs().max()) <= 1e-6
    restored = merged.unmerge()
    assert _same(restored, model)
    with pytest.raises(ValueError, match="tol: expected a number >= 0"):
        merge(model, tol=-1)


def test_inexact_merges_on_real_components_report_the_change_they_make(
    digits_mlp, digits_xy
) -> None:
    """Components of the trained MLP (random structured masks, surgery), merged with a loose
    tolerance: the reported difference is the one recomputed here from the two networks."""
    x, _ = digits_xy
    space = UnitSpace.of(digits_mlp, x[:2])
    masks = random.masks(space, 10, 0.5, seed=0)
    decomposition = saved.Decomposition(digits_mlp, space, saved.ClassComponents(10), masks)
    components = [decomposition.component(k) for k in range(3)]
    merged, rows = merge_report(components, x[:500], tol=0.6)
    assert [row.component for row in rows] == [0, 1, 2]
    assert sum(row.merged for row in rows) > 0  # a tolerance that loose merges something
    for component, result, row in zip(components, merged, rows, strict=True):
        with torch.no_grad():
            change = float((result.module(x[:500]) - component(x[:500])).abs().max())
        assert row.max_difference == pytest.approx(change, abs=1e-6)
        assert row.units == 16 + 16  # the two hidden layers after surgery at s = 0.5
        if row.merged:
            assert row.max_difference > 0  # inexact merges move the logits: measured, not assumed
        restored = result.unmerge()
        assert _same(restored, component)
    exact = merge_report(components, x[:500], tol=0.0)[1]
    assert all(row.merged == 0 and row.max_difference == 0.0 for row in exact)
