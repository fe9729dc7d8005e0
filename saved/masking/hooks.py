"""Masking by forward hooks: K masked copies of a model in one pass over a K-times repeated
batch, without copying a weight."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["mask_hook", "mask_input_hook"]


def _masked(
    features: Tensor, unit_mask: Tensor, k: int, dim: int, in_place: bool = False
) -> Tensor:
    """``features`` read as K blocks of B rows, block k's features along ``dim`` multiplied by
    row k of ``unit_mask`` (``[K, features]``); ``in_place``: ``features`` itself is masked."""
    blocks = (
        features.view(k, -1, *features.shape[1:])
        if in_place
        else features.reshape(k, -1, *features.shape[1:])
    )
    shape = [k] + [1] * (blocks.dim() - 1)
    axis = dim + 1 if dim >= 0 else blocks.dim() + dim
    shape[axis] = unit_mask.shape[1]
    mask = unit_mask.to(features.dtype).view(shape)
    if in_place:
        blocks.mul_(mask)
        return features
    return (blocks * mask).reshape(features.shape)


def mask_hook(unit_mask: Tensor, k: int, dim: int) -> Any:
    """A forward hook masking the module's output (see :func:`_masked`)."""

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return _masked(output, unit_mask, k, dim)

    return hook


def mask_input_hook(unit_mask: Tensor, k: int, dim: int) -> Any:
    """A forward pre-hook masking the module's first input (see :func:`_masked`).

    Without autograd the input is masked in place: it is an activation the caller computed for
    this module alone (an FFN's, after its activation function), and a masked copy beside it
    doubles the largest tensor of the pass (14 components x 256 texts x 128 tokens x 1,536
    features: 2.8 GB), which measured 8-14 % slower on MiniLM (docs/BENCHMARKS.md)."""

    def hook(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        features = inputs[0]
        in_place = (
            not torch.is_grad_enabled()
            and features.is_contiguous()
            # an inference tensor takes in-place writes only inside inference mode
            and (torch.is_inference_mode_enabled() or not features.is_inference())
        )
        return (_masked(features, unit_mask, k, dim, in_place), *inputs[1:])

    return hook
