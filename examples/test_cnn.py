"""A residual CNN on digit images: like the paper's vision models, it does not decompose under
structured masks — the semantic axis fails: most boundary decisions of the components differ
from the model's (LBMask's overlap hinge keeps their supports near gamma meanwhile). An example
of asserting a known failure."""

from __future__ import annotations

import pytest
from conftest import trained

from pytest_decompose import ContractViolation, assert_decomposable
from pytest_decompose.strategies import find_counterexample
from saved import LBMaskConfig, testing

X, Y = testing.digits(images=True)
MODEL = trained(
    "digits-resnet-16",
    lambda: testing.tiny_resnet(width=16, seed=0),
    lambda model: testing.train_classifier(model, X, Y, steps=300),
)


@pytest.mark.decomposable(eps=0.1, gamma=0.6, eta=0.3)
def test_cnn_fails_the_semantic_axis() -> None:
    with pytest.raises(ContractViolation) as failure:
        assert_decomposable(MODEL, X, labels=Y, lbmask=LBMaskConfig(steps=150, batch_size=32))
    report = failure.value.report
    assert report.failed_axes[0] == "semantic"
    assert report.disagreement > 0.5  # not a near miss: half the boundary decisions flip


def test_hypothesis_shows_where_the_cnn_decomposition_breaks(decompose_engine) -> None:
    """Hypothesis hunts an input the decomposed CNN gets wrong and shrinks it to a plain
    data sample: the failure needs no adversarial perturbation at all."""
    decomposition = decompose_engine.decompose(
        MODEL, X, labels=Y, lbmask=LBMaskConfig(steps=150, batch_size=32)
    )
    found = find_counterexample(MODEL, decomposition, X, radius=0.05, max_examples=25)
    assert found is not None
    assert found.decomposed != found.reference
    assert float(found.delta.abs().max()) == 0.0  # shrunk all the way back to the seed
