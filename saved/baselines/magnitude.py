"""Magnitude masks: every component keeps the units with the largest weight norms.

The scores do not depend on the component, so all components share one support: the
structural axis fails by construction (overlap 1). It is the class-agnostic reference point.
"""

from __future__ import annotations

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
    del seed, context  # deterministic and data-free
    return space.binarise(space.norms.float().expand(num_components, -1), sparsity)
