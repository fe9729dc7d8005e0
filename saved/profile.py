"""Where in the network each component keeps its units: one row per block.

A block is a unit group's layer name up to its first numbered part (``layer1.0`` of a ResNet,
``features.3`` of a MobileNet, ``features.denseblock2`` of a DenseNet, ``bert.encoder.layer.2``
of a BERT, ``conv1``), or its first part when no part is numbered. Per block and component:
the share of the block's unit parameters the component keeps, and the largest pairwise Jaccard
overlap of the components' supports inside the block. With one quota per group every block
keeps ``1 - s``; with one quota per kind (transformers) or per-component sparsities the shares
differ, and a component that keeps little of a block whose units are a whole path (the
expanded channels of an inverted residual, the heads of a layer) has lost that path's
contribution — which tells an architecture that cannot be split from a mask that cut the
wrong place.

:func:`separation` reads the profile along depth: the block where the *mean* pairwise overlap
drops most below the block before it is where the components' supports part ways — where
class-specific structure begins (issue 18; the compositionality line of work predicts such a
depth). Per-group quotas hold every block's kept share at ``1 - s``, so only the overlap can
move: random masks at s = 0.5 give a mean Jaccard of about 1/3 in every block, and a learned
decomposition that separates shows lower overlap from some depth on.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .contract import jaccard_overlap, max_pairwise_overlap
from .masking.units import UnitSpace
from .report.model import BlockRow, Separation

__all__ = ["BlockRow", "Separation", "block_of", "block_profile", "separation"]


def block_of(name: str) -> str:
    """The block a layer belongs to: its name up to the first part that is or ends in a number
    (and the part after it when that one is a number: ``layer1.0``), else its first part."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part[-1:].isdigit():
            end = (
                i + 2
                if not part.isdigit() and parts[i + 1 : i + 2] and parts[i + 1].isdigit()
                else i + 1
            )
            return ".".join(parts[:end])
    return parts[0]


def block_profile(
    space: UnitSpace, supports: Tensor, model: nn.Module | None = None
) -> list[BlockRow]:
    """The rows of ``supports [K, N]`` (bool, over ``space``'s units): blocks in ``model``'s
    module order when it is given, else in the unit space's."""
    if supports.dim() != 2 or supports.shape[1] != space.num_units:
        raise ValueError(f"supports: expected [K, {space.num_units}], got {tuple(supports.shape)}")
    order = {n: i for i, (n, _) in enumerate(model.named_modules())} if model is not None else {}
    columns: dict[str, list[Tensor]] = {}
    first: dict[str, int] = {}  # a block's earliest layer in the model's module order
    for group, part in space.group_slices():
        block = block_of(group.name)
        columns.setdefault(block, []).append(torch.arange(part.start, part.stop))
        place = order.get(group.name, len(order))
        first[block] = min(first.get(block, place), place)
    weights = space.unit_params.double()
    masks = supports.cpu().bool()
    rows = []
    for block, parts in columns.items():
        index = torch.cat(parts)
        held = masks[:, index]
        weight = weights[index]
        kept = (held.double() * weight).sum(1) / weight.sum().clamp_min(1e-12)
        k = held.shape[0]
        if k > 1:
            pairs = jaccard_overlap(held)
            overlap = max_pairwise_overlap(pairs)
            upper = torch.triu_indices(k, k, offset=1)
            mean = float(pairs[upper[0], upper[1]].double().mean())
        else:
            overlap = mean = 0.0
        rows.append(BlockRow(block, int(index.numel()), kept.tolist(), overlap, mean))
    if model is not None:
        rows.sort(key=lambda row: first[row.block])
    return rows


def separation(rows: list[BlockRow]) -> Separation | None:
    """The block of ``rows`` (in depth order) where the mean overlap drops most; None with
    fewer than two blocks or when it never drops (earliest block on ties)."""
    best: Separation | None = None
    for depth in range(1, len(rows)):
        before, after = rows[depth - 1].mean_overlap, rows[depth].mean_overlap
        if before - after > 0 and (best is None or before - after > best.drop):
            best = Separation(rows[depth].block, depth, before, after)
    return best
