"""What a ``[K, N]`` mask ranges over: groups of maskable things, their quotas and binarisation.

Shared by the structural units (:mod:`saved.masking.units`) and the per-weight space
(:mod:`saved.masking.weights`): exact per-group (or per-kind) keep counts and the binarisation
of learned scores into masks.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Generic, Literal, Protocol, TypeVar

import torch
from torch import Tensor, nn

from ..inputs import Batch

__all__ = ["ALLOCATIONS", "Allocation", "MaskGroup", "MaskSpace"]

#: How a sparsity is shared out: within every group, across the groups of one unit kind, by
#: parameters across every unit of the model (``"params"``: one global threshold on the scores,
#: a head and an FFN neuron weighed by the parameters each carries), or ``"auto"``: by kind in
#: transformer blocks (a space with attention heads), by group elsewhere.
Allocation = Literal["auto", "group", "kind", "params"]
ALLOCATIONS: tuple[str, ...] = ("auto", "group", "kind", "params")


class MaskGroup(Protocol):
    """What every group of a :class:`MaskSpace` offers: a name, its size, a magnitude per
    member (the magnitude prior) and the kind of unit it holds (the quota of ``"kind"``
    allocation: ``"heads"``, ``"neurons"``, ``"channels"``, or ``"weights"``)."""

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def norms(self) -> Tensor: ...

    @property
    def kind(self) -> str: ...


G = TypeVar("G", bound=MaskGroup)


class MaskSpace(ABC, Generic[G]):
    """What a ``[K, N]`` mask ranges over: groups of maskable things (units or weights).

    Group ``g`` owns columns ``offsets[g] : offsets[g] + groups[g].size`` of every mask. The
    shared rules live here: exact per-group keep counts and binarisation. Subclasses say how
    K masked models run (:meth:`run`).
    """

    def __init__(self, groups: list[G], example: Batch) -> None:
        if not groups:
            raise ValueError(
                "model: no maskable units (hidden Linear neurons, Conv channels or heads)"
            )
        self.groups = groups
        self.example = example  # a small CPU batch of the model's inputs
        offsets = [0]
        for group in groups:
            offsets.append(offsets[-1] + group.size)
        self.offsets = offsets

    @property
    def num_units(self) -> int:
        """``|S|``: the number of maskable things."""
        return self.offsets[-1]

    @property
    def norms(self) -> Tensor:
        """``[N]`` magnitude of each unit or weight (the magnitude prior)."""
        return torch.cat([g.norms for g in self.groups])

    @property
    def unit_params(self) -> Tensor:
        """``[N]`` parameters each unit or weight carries (1 per weight; structural spaces
        count a unit's own weights): what ``"params"`` allocation weighs."""
        return torch.ones(self.num_units, dtype=torch.long)

    def group_slices(self) -> Iterator[tuple[G, slice]]:
        for group, start in zip(self.groups, self.offsets, strict=False):
            yield group, slice(start, start + group.size)

    def keep_counts(self, sparsity: float) -> list[int]:
        """Kept per group at ``sparsity``: ``max(1, round((1 - s) * size))``."""
        return [max(1, round((1 - sparsity) * g.size)) for g in self.groups]

    def resolve_allocation(self, allocation: Allocation) -> Allocation:
        """``"auto"`` made concrete: ``"kind"`` for a space with attention heads (transformer
        blocks, where whole layers differ in how much they matter: docs/STUDY.md, Q3), else
        ``"group"``."""
        if allocation == "auto":
            heads = any(g.kind == "heads" for g in self.groups)
            return "kind" if heads else "group"
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation: expected one of {ALLOCATIONS}, got {allocation!r}")
        return allocation

    def quota_blocks(self, allocation: Allocation = "group") -> list[list[tuple[G, slice]]]:
        """The sets of groups that share one keep quota: every group alone (``"group"``), or
        every group of one unit kind together (``"kind"``: heads, FFN or hidden neurons,
        channels; each weight tensor of an unstructured space is of kind ``"weights"``)."""
        allocation = self.resolve_allocation(allocation)
        if allocation == "group":
            return [[pair] for pair in self.group_slices()]
        if allocation == "params":
            return [list(self.group_slices())]
        blocks: dict[str, list[tuple[G, slice]]] = {}
        for group, columns in self.group_slices():
            blocks.setdefault(group.kind, []).append((group, columns))
        return list(blocks.values())

    def quota_keeps(self, sparsity: float, allocation: Allocation = "group") -> list[int]:
        """Units each quota block keeps at ``sparsity``: ``max(groups, round((1 - s) * size))``,
        so every group keeps at least one unit (a layer is never removed outright). Not a
        count under ``"params"``, whose one block keeps a share of parameters."""
        allocation = self.resolve_allocation(allocation)
        if allocation == "params":
            raise ValueError("quota_keeps: 'params' allocation keeps parameters, not a count")
        if allocation == "group":
            return self.keep_counts(sparsity)
        return [
            max(len(block), round((1 - sparsity) * sum(g.size for g, _ in block)))
            for block in self.quota_blocks(allocation)
        ]

    def binarise(
        self,
        scores: Tensor,
        sparsity: float | Sequence[float] | Tensor,
        allocation: Allocation = "group",
    ) -> Tensor:
        """Keep exactly the top ``quota_keeps`` of every quota block, per component row.

        Args:
            scores: ``[K, N]``, higher is kept first.
            sparsity: one sparsity for every row, or one per row (``K`` values).
            allocation: ``"group"`` (every group keeps ``1 - s`` of its own units), ``"kind"``
                (one quota per unit kind across layers; each group's best unit is always kept)
                or ``"auto"`` (:meth:`resolve_allocation`).
        """
        if scores.dim() != 2 or scores.shape[1] != self.num_units:
            raise ValueError(f"scores: expected [K, {self.num_units}], got {tuple(scores.shape)}")
        rates = torch.as_tensor(sparsity, dtype=torch.float64).flatten()
        if rates.numel() == 1:
            rates = rates.expand(scores.shape[0])
        if rates.numel() != scores.shape[0]:
            raise ValueError(
                f"sparsity: expected one value or one per component ({scores.shape[0]}), "
                f"got {rates.numel()}"
            )
        masks = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        for rate in torch.unique(rates).tolist():
            rows = torch.nonzero(rates == rate).flatten().to(scores.device)
            masks[rows] = self._binarise_rows(scores[rows], rate, allocation)
        return masks

    def _best_first(self, scores: Tensor, block: list[tuple[G, slice]], columns: Tensor) -> Tensor:
        """``scores`` of ``columns`` with every group's best unit raised to +inf: kept first."""
        ranked = scores[:, columns].clone()
        start = 0
        for group, _ in block:
            best = ranked[:, start : start + group.size].argmax(1) + start
            ranked.scatter_(1, best[:, None], math.inf)
            start += group.size
        return ranked

    def _binarise_params(self, scores: Tensor, sparsity: float) -> Tensor:
        """One global threshold per row: units in descending score order (each group's best
        first) while their parameters add up to at most ``(1 - s)`` of all units' parameters."""
        block = self.quota_blocks("params")[0]
        columns = torch.arange(self.num_units, device=scores.device)
        ranked = self._best_first(scores, block, columns)
        order = ranked.argsort(dim=1, descending=True, stable=True)
        params = self.unit_params.to(scores.device, torch.float64)
        budget = (1 - sparsity) * float(params.sum())
        kept = (params[order].cumsum(1) <= budget) | ranked.gather(1, order).isinf()
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device).scatter(
            1, order, kept
        )

    def _binarise_rows(self, scores: Tensor, sparsity: float, allocation: Allocation) -> Tensor:
        if self.resolve_allocation(allocation) == "params":
            return self._binarise_params(scores, sparsity)
        masks = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        blocks = self.quota_blocks(allocation)
        for block, keep in zip(blocks, self.quota_keeps(sparsity, allocation), strict=True):
            if len(block) == 1:
                group_columns = block[0][1]
                top = scores[:, group_columns].topk(keep, dim=1).indices + group_columns.start
                masks.scatter_(1, top, True)
                continue
            columns = torch.cat(
                [torch.arange(c.start, c.stop, device=scores.device) for _, c in block]
            )
            ranked = self._best_first(scores, block, columns)
            top = ranked.topk(keep, dim=1).indices
            masks.scatter_(1, columns[top], True)
        return masks

    @abstractmethod
    def run(self, model: nn.Module, masks: Tensor, batch: Batch) -> Tensor:
        """Logits ``[K * B, C]`` of the K masked models (rows ``k*B:(k+1)*B`` for mask k)."""
