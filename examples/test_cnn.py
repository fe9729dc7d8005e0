"""A residual CNN on digit images: like the paper's vision models, it does not decompose under
structured masks — the semantic axis fails. An example of asserting a known failure."""

from __future__ import annotations

import pytest
from conftest import trained

from pytest_decompose import ContractViolation, assert_decomposable
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
    assert failure.value.report.failed_axes == ["semantic"]
