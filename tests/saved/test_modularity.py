"""saved/modularity.py: the modularity regulariser on the units LBMask masks."""

from __future__ import annotations

import pytest
import torch

import saved
from saved import testing
from saved.modularity import _layer_penalty

ONLY_COUPLING, ONLY_COHESION, ONLY_COMPACTNESS = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


def test_coupling_is_the_cosine_of_class_profiles_by_hand() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[2.0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 3]])
    same = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [2, 2, 0, 0], [3, 3, 0, 0]])
    # class 0 uses units 0-1 and class 1 units 2-3: profiles orthogonal, coupling 0
    assert float(_layer_penalty(apart, labels, ONLY_COUPLING)) == pytest.approx(0.0)
    # both classes spread evenly over units 0-1 (activity is normalised per sample): cosine 1
    assert float(_layer_penalty(same, labels, ONLY_COUPLING)) == pytest.approx(1.0)
    # half-shared: class profiles [.5, .5, 0, 0] and [0, .5, .5, 0] have cosine 1/2
    half = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0]])
    assert float(_layer_penalty(half, torch.tensor([0, 1]), ONLY_COUPLING)) == pytest.approx(0.5)


def test_cohesion_and_compactness_by_hand() -> None:
    labels = torch.tensor([0, 0])
    # the two samples of class 0 use units 0 and 1: profile [.5, .5, 0, 0], cosine 1/sqrt(2)
    activity = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0]])
    expected = 1 - 2**-0.5
    assert float(_layer_penalty(activity, labels, ONLY_COHESION)) == pytest.approx(expected)
    # the class uses 2 of 4 units evenly: (sqrt(.5) + sqrt(.5))^2 / 4 = 1/2; all four: 1
    assert float(_layer_penalty(activity, labels, ONLY_COMPACTNESS)) == pytest.approx(0.5)
    spread = torch.ones(2, 4)
    assert float(_layer_penalty(spread, labels, ONLY_COMPACTNESS)) == pytest.approx(1.0)


def test_one_forward_gives_the_models_logits_and_a_gradient(digits_xy) -> None:
    x, y = digits_xy
    model = testing.tiny_mlp(hidden=(128, 128), seed=0)
    penalty = saved.ModularityPenalty(model, x[:2])
    assert penalty.space.num_units == 256
    logits, modular = penalty(x[:64], y[:64])
    assert torch.equal(logits, model(x[:64]))
    modular.backward()  # the penalty alone reaches the hidden layers' weights
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    # the hooks are gone after the call
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="labels: 3 for a batch of 64"):
        penalty(x[:64], y[:3])
    with pytest.raises(ValueError, match="coupling: expected a weight >= 0"):
        saved.ModularityPenalty(model, x[:2], coupling=-1.0)


def test_training_with_the_penalty_separates_the_components(digits_xy) -> None:
    """Issue 38: the digits MLP trained with the penalty (weight 2), same seed and steps as
    without it: the LBMask components' max overlap is lower, held-out accuracy within 2
    points (both decomposed on the 1,200 training digits, measured on the 597 others)."""
    x, y = digits_xy
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    seen, unseen = order[:1200], order[1200:]
    results = {}
    for weight in (0.0, 2.0):
        model = testing.tiny_mlp(hidden=(128, 128), seed=0)
        model = testing.train_classifier(model, x[seen], y[seen], modularity=weight)
        accuracy = float((model(x[unseen]).argmax(1) == y[unseen]).float().mean())
        report = saved.check(model, x[unseen], calibration=x[seen], progress=False)
        results[weight] = (accuracy, report.max_overlap)
    (plain_accuracy, plain_overlap), (modular_accuracy, modular_overlap) = results.values()
    assert modular_overlap < plain_overlap
    assert abs(modular_accuracy - plain_accuracy) <= 0.02
