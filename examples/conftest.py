"""Shared helpers of the example tests: real data, and small models trained once and kept.

Trained weights are artefacts, not sources: they are cached under pytest's cache directory
(safetensors, never pickle), so a warm re-run neither retrains the models nor, thanks to the
plugin's own cache, re-learns their masks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from saved import testing

_CACHE: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    _CACHE.append(
        Path(cache.mkdir("decompose-examples")) if cache else Path(tempfile.mkdtemp("-models"))
    )


def trained(
    name: str, build: Callable[[], torch.nn.Module], train: Callable[[torch.nn.Module], None]
) -> torch.nn.Module:
    """``build()`` with weights from the cache, or trained by ``train`` and then cached."""
    model = build()
    path = _CACHE[0] / f"{name}.safetensors"
    if path.exists():
        model.load_state_dict(load_file(str(path)))
    else:
        train(model)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path.with_suffix(".partial")))
        path.with_suffix(".partial").replace(path)
    return model.eval()


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return testing.digits()
