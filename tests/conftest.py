"""Shared fixtures: real data (scikit-learn digits) and small real models trained on it."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, settings

from saved import testing

# Torch calls are slow on first use and vary on shared machines: no deadline.
settings.register_profile(
    "torch", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
settings.load_profile("torch")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits_xy() -> tuple[torch.Tensor, torch.Tensor]:
    return testing.digits()


@pytest.fixture(scope="session")
def digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    return testing.digits(images=True)


@pytest.fixture(scope="session")
def digits_mlp(digits_xy: tuple[torch.Tensor, torch.Tensor]) -> torch.nn.Module:
    x, y = digits_xy
    return testing.train_classifier(testing.tiny_mlp(seed=0), x, y, steps=300)


@pytest.fixture(scope="session")
def digits_cnn(digits_images: tuple[torch.Tensor, torch.Tensor]) -> torch.nn.Module:
    x, y = digits_images
    return testing.train_classifier(testing.tiny_resnet(seed=0), x, y, steps=150)
