"""Training a CNN so that it decomposes: ``saved.BlockWiring`` and its proximal step.

The same small CNN on digit images, trained twice with the same seed and steps: plainly, and
with block wiring (every unit group split into a shared block and one block per class; after
each optimiser step ``shrink`` moves the weights between blocks towards zero, and they end
exactly there). The wired network holds the default contract on digits neither it nor its masks
saw; the plain one does not. The recipe, in a user's own training loop::

    wiring = saved.BlockWiring(model, x[:2])
    ...
    optimiser.step()
    wiring.shrink(1e-3)
"""

from __future__ import annotations

import pytest
import torch
from conftest import trained
from torch import nn

from pytest_decompose import ContractViolation, assert_decomposable
from saved import testing

X, Y = testing.digits(images=True)
FIT, CALIBRATION, HELD = slice(0, 1000), slice(1000, 1400), slice(1400, None)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 20, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(20, 20, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(20 * 64, 10),
    )


def train(wiring: float) -> nn.Module:
    return trained(
        f"digits-small-cnn-wiring-{wiring:g}",
        small_cnn,
        lambda model: testing.train_classifier(
            model, X[FIT], Y[FIT], steps=400, lr=3e-3, wiring=wiring
        ),
    )


@pytest.mark.decomposable  # the default contract: eps 0.1, gamma 0.5, eta 0.3
def test_a_block_wired_cnn_holds_on_digits_it_never_saw() -> None:
    report = assert_decomposable(train(3e-3), X[HELD], labels=Y[HELD], calibration=X[CALIBRATION])
    assert report.holds


def test_the_same_cnn_trained_plainly_fails() -> None:
    with pytest.raises(ContractViolation) as failure:
        assert_decomposable(train(0.0), X[HELD], labels=Y[HELD], calibration=X[CALIBRATION])
    assert "semantic" in failure.value.report.failed_axes
