"""Masking by forward hooks: K masked copies of a model in one pass over a K-times repeated
batch, without copying a weight."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["mask_hook"]


def mask_hook(unit_mask: Tensor, k: int, dim: int) -> Any:
    """A forward hook reading its output as K blocks of B rows and multiplying block k's
    features along ``dim`` by row k of ``unit_mask`` (``[K, features]``)."""

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        blocks = output.reshape(k, -1, *output.shape[1:])
        shape = [k] + [1] * (blocks.dim() - 1)
        axis = dim + 1 if dim >= 0 else blocks.dim() + dim
        shape[axis] = unit_mask.shape[1]
        return (blocks * unit_mask.to(output.dtype).view(shape)).reshape(output.shape)

    return hook
