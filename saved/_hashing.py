"""Content hashes of tensors, models and data: cache keys and load-time identity checks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .adapters import Inputs


def tensor_digest(tensor: Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes."""
    return _digest_all([("", tensor)])


def _digest_all(named: Iterable[tuple[str, Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in named:
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_digest(model: nn.Module) -> str:
    """sha256 over every parameter and buffer, by name: the identity of a model's weights."""
    return _digest_all(model.state_dict().items())


def inputs_digest(inputs: Inputs) -> str:
    """sha256 over the input fields and labels."""
    named = sorted(inputs.fields.items())
    if inputs.labels is not None:
        named.append(("labels", inputs.labels))
    return _digest_all(named)
