"""An MLP on real handwritten digits: decomposable, checked three ways."""

from __future__ import annotations

import pytest
from conftest import trained

from pytest_decompose import assert_decomposable
from pytest_decompose.strategies import find_counterexample
from saved import testing

X, Y = testing.digits()
MODEL = trained(
    "digits-mlp-128",
    lambda: testing.tiny_mlp(hidden=(128, 128), seed=0),
    lambda model: testing.train_classifier(model, X, Y, steps=300),
)


@pytest.mark.decomposable(eps=0.1, gamma=0.5, eta=0.3)
def test_digits_mlp_decomposes_into_class_components() -> None:
    report = assert_decomposable(MODEL, X, labels=Y)
    assert report.min_prune >= 0.5  # every component is at most half the network


def test_components_are_small_real_networks(decompose) -> None:
    decomposition = decompose(MODEL, X, labels=Y)
    cost = decomposition.cost(7)
    assert cost.params < 0.6 * cost.full_params


@pytest.mark.decomposable(eps=0.1, gamma=0.5, eta=0.3)
def test_disagreements_hypothesis_finds_lie_on_the_boundary(decompose_engine) -> None:
    """Hypothesis searches seed + perturbation for inputs where the decomposition and the model
    disagree; every one it finds must be a boundary input (margin below the kappa cut)."""
    report = assert_decomposable(MODEL, X, labels=Y)
    decomposition = decompose_engine.decompose(MODEL, X, labels=Y)
    found = find_counterexample(MODEL, decomposition, X, radius=0.05, max_examples=150)
    if found is not None:
        assert found.margin <= report.boundary_margin, found
