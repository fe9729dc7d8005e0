"""pytest_decompose/strategies.py: Hypothesis finds boundary points and shrinks counterexamples."""

from __future__ import annotations

import torch
from hypothesis import given, settings

from pytest_decompose.strategies import boundary_inputs, find_counterexample
from saved import ClassComponents, Decomposition, as_inputs, predict_logits, testing
from saved.baselines import random
from saved.masking.units import UnitSpace
from saved.report import Counterexample

X, Y = testing.digits()
MODEL = testing.train_classifier(testing.tiny_mlp(hidden=(128, 128), seed=0), X, Y, steps=300)


@settings(settings.get_profile("decompose"), max_examples=15)
@given(boundary_inputs(MODEL, X[:300]))
def test_drawn_points_sit_on_the_decision_boundary(point: torch.Tensor) -> None:
    probs = predict_logits(MODEL, as_inputs(point)).softmax(1)[0]
    top2 = probs.topk(2).values
    assert float(top2[0] - top2[1]) < 1e-4  # the two leading classes are tied to tol
    assert float(point.min()) >= 0.0 and float(point.max()) <= 1.0  # in the data's domain


def _decomposition(sparsity: float | None) -> Decomposition:
    space = UnitSpace.of(MODEL, X[:2])
    if sparsity is None:  # unmasked: every component keeps every unit
        masks = torch.ones(10, space.num_units, dtype=torch.bool)
    else:
        masks = random.masks(space, 10, sparsity, seed=0)
    return Decomposition(MODEL, space, ClassComponents(10), masks, "random")


def test_finds_and_shrinks_a_counterexample_of_a_broken_decomposition() -> None:
    broken = _decomposition(0.9)
    found = find_counterexample(MODEL, broken, X[:300], radius=0.1, max_examples=200)
    assert found is not None
    # checked independently of the search: the two predictions really differ
    assert isinstance(found, Counterexample)  # the report's type, with the input it built
    assert int(MODEL(found.input).argmax(1)[0]) == found.reference
    assert int(broken.predict(found.input)[0]) == found.decomposed != found.reference
    # shrunk toward the seed sample: the perturbation collapses to zero
    assert float(found.delta.abs().max()) == 0.0
    assert torch.equal(found.input, X[found.index : found.index + 1])


def test_finds_nothing_for_the_unmasked_decomposition() -> None:
    exact = _decomposition(None)
    assert find_counterexample(MODEL, exact, X[:300], radius=0.1, max_examples=60) is None
