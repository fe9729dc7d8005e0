"""Random structured masks: each component keeps a uniformly random subset of every group."""

from __future__ import annotations

import torch
from torch import Tensor

from ..activity import MaskContext
from ..masking.space import MaskSpace


def masks(
    space: MaskSpace,
    num_components: int,
    sparsity: float,
    *,
    seed: int = 0,
    context: MaskContext | None = None,
) -> Tensor:
    del context  # data-free
    generator = torch.Generator().manual_seed(seed)
    return space.binarise(
        torch.rand(num_components, space.num_units, generator=generator), sparsity
    )
