"""Similarity pruning (SP): per component, a unit whose activation pattern is most similar to
another unit still kept in its group is redundant, and goes first.

After the compositionality line of work (connectivity that makes parts reusable and separable
appears in a narrow depth range, recovered by similarity-based pruning). For component k, the
activation pattern of a unit is its activity (``unit_activations``: mean over positions, l2
over a head's features) on the calibration samples the reference assigns to ``P_k`` — the
component's own inputs — and two units are alike by the cosine of their patterns. Within each
group, repeatedly: among the units still kept, find the largest cosine to another kept unit;
of the units at that maximum, drop the one with the smallest activity norm (the pair's weaker
member). The order of dropping ranks the group; the masks keep the last-dropped units at the
exact per-group sizes of every other method (``space.binarise``), and :func:`scores` is the
ranking itself (LBMask can start from it: ``LBMaskConfig(prior="similarity")``).

Written by hand: Torch-Pruning's importance criteria score single units (magnitude, Taylor,
Hessian), not redundancy among the units kept, and no library here ranks by it.
"""

from __future__ import annotations

from torch import Tensor

from ..activity import MaskContext, drop_order, require
from ..activity import similarity_scores as scores
from ..masking.units import UnitSpace

__all__ = ["drop_order", "masks", "scores"]


def masks(
    space: UnitSpace,
    num_components: int,
    sparsity: float,
    *,
    seed: int = 0,
    context: MaskContext | None = None,
) -> Tensor:
    del seed, num_components  # deterministic; one row per component of the context
    context = require(context, "similarity")
    return space.binarise(scores(space, context), sparsity)
