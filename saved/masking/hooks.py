"""Masking by forward hooks: K masked copies of a model in one pass over a K-times repeated
batch, without copying a weight."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["mask_hook", "mask_input_hook"]


def _masked(features: Tensor, unit_mask: Tensor, k: int, dim: int) -> Tensor:
    """``features`` read as K blocks of B rows, block k's features along ``dim`` multiplied by
    row k of ``unit_mask`` (``[K, features]``)."""
    blocks = features.reshape(k, -1, *features.shape[1:])
    shape = [k] + [1] * (blocks.dim() - 1)
    axis = dim + 1 if dim >= 0 else blocks.dim() + dim
    shape[axis] = unit_mask.shape[1]
    return (blocks * unit_mask.to(features.dtype).view(shape)).reshape(features.shape)


def mask_hook(unit_mask: Tensor, k: int, dim: int) -> Any:
    """A forward hook masking the module's output (see :func:`_masked`)."""

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return _masked(output, unit_mask, k, dim)

    return hook


def mask_input_hook(unit_mask: Tensor, k: int, dim: int) -> Any:
    """A forward pre-hook masking the module's first input (see :func:`_masked`)."""

    def hook(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        return (_masked(inputs[0], unit_mask, k, dim), *inputs[1:])

    return hook
