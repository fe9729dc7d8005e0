"""Shared fixtures: real data (scikit-learn digits) and small real models trained on it."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

from saved import testing

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per xdist worker: two workers on two cores, not four threads taking
    # turns. The processes a test starts (torchrun, pytest on the examples) inherit it.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

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


@pytest.fixture(scope="session")
def debian_text() -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Real Debian package descriptions (4 sections): tokenised train batch, labels, test batch."""
    from saved.datasets import load_debian

    train, test = load_debian("debian4", "train"), load_debian("debian4", "test")
    return (
        testing.text_batch(train.texts),
        torch.tensor(train.labels),
        testing.text_batch(test.texts),
    )


@pytest.fixture(scope="session")
def debian_bert(debian_text) -> torch.nn.Module:
    """A tiny BERT trained for 100 steps on the real Debian texts (about 8 s on 2 cores)."""
    batch, labels, _ = debian_text
    bert = testing.tiny_bert(num_labels=4, seed=0)
    return testing.train_classifier(bert, batch, labels, steps=100, lr=3e-3, batch_size=64)
