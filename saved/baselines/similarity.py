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

import torch
from torch import Tensor

from ..masking.units import UnitSpace
from . import MaskContext, require
from ._activations import component_targets, unit_activations

__all__ = ["drop_order", "masks", "scores"]


def drop_order(patterns: Tensor) -> Tensor:
    """``[K, m]`` int: for each row of ``patterns [K, n, m]`` (m units' activity over n
    samples), the position at which each unit is dropped (0 first; ``m - 1`` is never
    dropped) by the rule of the module docstring, all K rows at once.

    Each unit's most alike kept partner is kept up to date: dropping a unit only changes the
    partner of the units whose partner it was, so each of the ``m - 1`` rounds costs ``O(K m)``
    plus one row maximum per such unit, not a fresh ``O(K m^2)`` maximum.
    """
    k, _, m = patterns.shape
    unit = patterns / patterns.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cosine = unit.transpose(1, 2) @ unit  # [K, m, m]
    outside = -float("inf")
    cosine.diagonal(dim1=1, dim2=2).fill_(outside)
    strength = patterns.norm(dim=1)  # [K, m]
    closest, partner = cosine.max(2)  # [K, m] each
    rows = torch.arange(k)
    order = torch.full((k, m), m - 1, dtype=torch.long)
    kept = torch.ones(k, m, dtype=torch.bool)
    for position in range(m - 1):
        live = torch.where(kept, closest, torch.full_like(closest, outside))
        top = live.amax(1, keepdim=True)
        tied = kept & (live >= top - 1e-12)
        victim = torch.where(tied, strength, torch.full_like(strength, float("inf"))).argmin(1)
        order[rows, victim] = position
        kept[rows, victim] = False
        cosine[rows, :, victim] = outside  # nobody's partner any more
        cosine[rows, victim, :] = outside
        stale = torch.nonzero(kept & (partner == victim[:, None]))
        if stale.numel():
            a, b = stale[:, 0], stale[:, 1]
            closest[a, b], partner[a, b] = cosine[a, b].max(1)
    return order


def scores(space: UnitSpace, context: MaskContext) -> Tensor:
    """``[K, N]``: within each group, the units' drop positions scaled to [0, 1] (higher is kept
    longer); comparable across groups of different sizes."""
    activations = unit_activations(context, space)  # [n, N]
    targets = component_targets(context).bool()  # [n, K]
    columns = []
    for _, part in space.group_slices():
        block = activations[:, part]
        size = block.shape[1]
        columns.append(drop_order(_patterns(block, targets)).double() / max(size - 1, 1))
    return torch.cat(columns, dim=1).float()


def _patterns(block: Tensor, targets: Tensor) -> Tensor:
    """``[K, n, m]``: component j's rows of ``block`` (its positive samples; all samples when
    it has none), then zero rows (components differ in their positive counts). Zero rows
    change neither a cosine nor a norm."""
    k, n = targets.shape[1], block.shape[0]
    out = torch.zeros(k, n, block.shape[1], dtype=block.dtype)
    for j in range(k):
        rows = block[targets[:, j]] if bool(targets[:, j].any()) else block
        out[j, : rows.shape[0]] = rows
    return out


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
