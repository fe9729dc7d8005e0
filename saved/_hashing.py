"""Content hashes of tensors, models and data: cache keys and load-time identity checks.

:func:`fingerprint` is the public face (``saved.fingerprint``); the rest is private.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .inputs import Inputs, iter_inputs


def tensor_digest(tensor: Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes."""
    return _digest_all([("", tensor)])


def _bytes(tensor: Tensor) -> bytes:
    data = tensor.detach().cpu().contiguous()
    return data.reshape(-1).view(torch.uint8).numpy().tobytes()


def _digest_all(named: Iterable[tuple[str, Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in named:
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_bytes(tensor))
    return digest.hexdigest()


def model_digest(model: nn.Module) -> str:
    """sha256 over every parameter and buffer, by name: the identity of a model's weights."""
    return _digest_all(model.state_dict().items())


class InputsHasher:
    """sha256 over input fields and labels, fed chunk by chunk (a DataLoader is never held in
    memory whole). The digest does not depend on where the chunks are cut: each field is hashed
    row after row, and its row shape and dtype enter the hash only when they change (text
    batches padded to different lengths)."""

    def __init__(self) -> None:
        self._fields: dict[str, tuple[hashlib._Hash, list[str]]] = {}
        self._rows = 0

    def update(self, chunk: Inputs) -> None:
        named = sorted(chunk.fields.items())
        if chunk.labels is not None:
            named.append(("labels", chunk.labels))
        for name, tensor in named:
            digest, layouts = self._fields.setdefault(name, (hashlib.sha256(), []))
            layout = f"{tensor.dtype}|{tuple(tensor.shape[1:])}"
            if not layouts or layouts[-1] != layout:
                layouts.append(layout)
                digest.update(f"@{self._rows}|{layout}|".encode())
            digest.update(_bytes(tensor))
        self._rows += len(chunk)

    def hexdigest(self) -> str:
        total = hashlib.sha256(f"rows|{self._rows}|".encode())
        for name in sorted(self._fields):
            total.update(f"{name}|{self._fields[name][0].hexdigest()}|".encode())
        return total.hexdigest()


def inputs_digest(inputs: Inputs) -> str:
    """sha256 over the input fields and labels (equal to the streamed :func:`fingerprint`)."""
    hasher = InputsHasher()
    hasher.update(inputs)
    return hasher.hexdigest()


def fingerprint(value: object, labels: object = None) -> str:
    """A sha256 hex digest of what ``value`` holds, for cache keys and identity checks.

    * an ``nn.Module``: every parameter and buffer, by name (the weights, not the code);
    * a ``Tensor``: its dtype, shape and bytes;
    * data in any form :func:`saved.as_inputs` accepts, with optional ``labels``: the samples,
      read chunk by chunk, so a ``DataLoader`` is streamed rather than held in memory. The
      same samples give the same digest however they are batched.
    """
    if isinstance(value, nn.Module):
        if labels is not None:
            raise TypeError("fingerprint: labels go with data, not with a model")
        return model_digest(value)
    if isinstance(value, Tensor) and labels is None:
        return tensor_digest(value)
    hasher = InputsHasher()
    for chunk in iter_inputs(value, labels):
        hasher.update(chunk)
    return hasher.hexdigest()
