"""Block wiring for training: a network whose class-wise components exist by construction.

The activity regulariser (:mod:`saved.modularity`) lowers the components' overlap but leaves the
near-boundary decisions spread over every unit, and no real network trained with it holds the
contract (docs/CONTROL.md). Block wiring asks for the structure the contract looks for directly,
on the weights. Every unit group LBMask masks (:class:`saved.masking.units.UnitSpace`: hidden
neurons, coupled conv channels) is split into a *shared* block, about ``shared`` of its units,
and one *private* block per class. A weight is *crossing* when it carries a signal out of a
private block into anything but the same class's block:

* a unit private to class ``k`` reads the shared units and ``k``'s;
* a shared unit reads only shared units;
* logit ``k`` reads the shared units of the last layer and ``k``'s.

With every crossing weight at zero, logit ``k`` depends on the shared units and ``k``'s alone
(:attr:`BlockWiring.masks`), so the component that keeps them reproduces it exactly and the
decomposition keeps every decision, near-ties included. Two class masks overlap by Jaccard
``s / (s + 2p)``, ``s`` the shared share and ``p = (1 - s) / K`` a class's: at most a third
while ``s <= 1 / (K + 1)`` (the default 0.1 with 10 classes: 0.36, under the default gamma).

:meth:`BlockWiring.penalty` is the L1 norm of the crossing weights, a term for the training
loss; :meth:`BlockWiring.shrink` is its proximal step (soft-thresholding), to call after each
optimiser step, of at least the learning rate (Adam moves a weight by up to about the learning
rate a step, and a smaller shrink leaves it there). Only the proximal step reaches *exact*
zeros: with Adam and the L1 term alone
the crossing weights hover at about the learning rate, and near-ties still flip (the small CNN of
``benchmarks/cotrain_probe.py``: boundary Dis 0.085 with the term at weight 300; 0.035 and a
holding verdict with ``shrink(1e-3)`` at learning rate 1e-3; docs/CONTROL.md)::

    wiring = saved.BlockWiring(model, x[:2])
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        wiring.shrink(1e-3)  # the learning rate (Adam, lr=1e-3)

Which weights cross comes from Torch-Pruning's dependency graph: for every unit group, the
output rows of its producers and the input columns of its consumers (through flattening and
residual additions). Transformers are refused: their heads and FFN neurons all write into the
residual stream, which every class shares, so no weight there is private to a class.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ._runtime import forward_logits
from .inputs import as_inputs
from .masking.discovery import find_classifier
from .masking.surgery import graph_for
from .masking.units import UnitSpace

__all__ = ["BlockWiring", "blocks_of"]

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def blocks_of(size: int, classes: int, shared: float) -> Tensor:
    """``[size]`` int: ``-1`` for a unit every class shares, ``k`` for one private to class
    ``k``: about ``shared`` of the units first, then the rest split evenly between the classes
    (the remainder shared).

    Raises:
        ValueError: when ``size`` units cannot give every class one.
    """
    if size < classes:
        raise ValueError(f"a group of {size} units cannot give {classes} classes one unit each")
    private = max(1, round(size * (1 - shared) / classes))
    private = min(private, size // classes)
    owners = torch.full((size,), -1)
    owners[size - classes * private :] = torch.arange(classes).repeat_interleave(private)
    return owners


class BlockWiring:
    """The block wiring of one model: which weights cross between class blocks.

    Args:
        model: the network being trained (an MLP or CNN: a model whose units are neurons or
            channels).
        example: one small batch of its inputs, to trace it.
        shared: the share of every unit group that every class uses, in ``[0, 1)``.

    Raises:
        ValueError: for a model with attention heads or FFN neurons, a unit group with fewer
            units than classes, or a grouped (not depthwise) convolution reading a unit group.
    """

    def __init__(self, model: nn.Module, example: Any, *, shared: float = 0.1) -> None:
        if not 0 <= shared < 1:
            raise ValueError(f"shared: expected a share in [0, 1), got {shared!r}")
        batch = as_inputs(example).without_labels().batch(slice(0, 2))
        space = UnitSpace.of(model, batch)
        kinds = {g.kind for g in space.groups} - {"neurons", "channels"}
        if kinds or any("up" in g.surgery for g in space.groups):
            raise ValueError(
                "model: block wiring needs neuron or channel units; this model has attention "
                "heads or FFN neurons, whose outputs all add into the residual stream every "
                "class shares, so no weight is private to a class"
            )
        twin = copy.deepcopy(model).eval()  # tracing must not touch the user's model
        with torch.no_grad():
            self.classes = int(forward_logits(twin, batch).shape[-1])
        owners: dict[str, Tensor] = {}
        for group in space.groups:
            if group.size < self.classes:
                raise ValueError(
                    f"model: {group.name} has {group.size} {group.kind}, fewer than its "
                    f"{self.classes} classes; block wiring gives every class one of its own"
                )
            owners[group.surgery["root"]] = blocks_of(group.size, self.classes, shared)
        rows, columns = _owners(twin, batch, owners, self.classes)
        modules = dict(model.named_modules())
        self.crossing: list[tuple[Tensor, Tensor]] = []
        for name, column in columns.items():
            module = modules[name]
            weight = module.weight
            assert isinstance(weight, nn.Parameter)  # a Linear or Conv layer's (_owners)
            row = rows.get(name, torch.full((weight.shape[0],), -1))
            groups = int(getattr(module, "groups", 1))
            self.crossing.append((weight, _crossing(weight, groups, name, row, column)))
        self.masks = torch.cat(
            [
                (owner == -1) | (owner == torch.arange(self.classes)[:, None])
                for owner in (owners[g.surgery["root"]] for g in space.groups)
            ],
            dim=1,
        )
        self.space = space
        self._masks: dict[int, Tensor] = {}

    def penalty(self) -> Tensor:
        """The L1 norm of the crossing weights (differentiable), a term for the loss."""
        return torch.stack([(weight.abs() * cross).sum() for weight, cross in self._dense()]).sum()

    @torch.no_grad()
    def shrink(self, step: float) -> None:
        """The proximal step of ``step * penalty()``: every crossing weight moves ``step``
        towards zero and stops there (soft-thresholding). Call it after the optimiser's step,
        with ``step`` at least its learning rate for the crossing weights to end at zero."""
        if not step >= 0:
            raise ValueError(f"step: expected a step >= 0, got {step!r}")
        for weight, cross in self._dense():
            # dense arithmetic, not boolean indexing: a gather and scatter of a boolean
            # index cost resnet18 more than its whole training step (benchmarks/modularity.py)
            weight.sub_(weight.abs().clamp_max(step).mul_(weight.sign()).mul_(cross))

    @torch.no_grad()
    def leak(self) -> float:
        """The share of the wired layers' absolute weight that crosses between blocks: 0 when
        the components reproduce the model exactly."""
        crossing = sum(float((w.abs() * c).sum()) for w, c in self._dense())
        total = sum(float(w.abs().sum()) for w, _ in self.crossing)
        return crossing / total if total else 0.0

    def _dense(self) -> list[tuple[Tensor, Tensor]]:
        """Each crossing mask as 0/1 in its weight's dtype and on its device (kept until the
        model moves)."""
        dense = []
        for index, (weight, cross) in enumerate(self.crossing):
            cached = self._masks.get(index)
            if cached is None or cached.device != weight.device or cached.dtype != weight.dtype:
                cached = cross.to(device=weight.device, dtype=weight.dtype)
                self._masks[index] = cached
            dense.append((weight, cached))
        return dense


def _owners(
    twin: nn.Module, batch: Any, owners: dict[str, Tensor], classes: int
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The block of every output row (``rows``) and input column (``columns``) of the layers
    a unit group touches, by layer name; ``-1`` (shared) where no unit is."""
    names = {module: name for name, module in twin.named_modules()}
    graph = graph_for(twin, batch)
    with torch.enable_grad():
        head = find_classifier(twin, batch)
    rows: dict[str, Tensor] = {}
    columns: dict[str, Tensor] = {}

    def blank(store: dict[str, Tensor], name: str, size: int) -> Tensor:
        return store.setdefault(name, torch.full((size,), -1))

    for group in graph.get_all_groups(ignored_layers=[head], root_module_types=_LAYERS):
        root = names.get(group[0].dep.target.module)
        if root not in owners:
            continue  # a group left out of the units (normalised across channels): shared
        owner = owners[root]
        for item in group:
            module = item.dep.target.module
            if not isinstance(module, _LAYERS):
                continue
            handler = getattr(item.dep.handler, "__name__", "")
            idxs = torch.tensor([int(i) for i in item.idxs])
            units = torch.tensor([int(r) for r in item.root_idxs])
            weight = module.weight
            if handler == "prune_out_channels":
                blank(rows, names[module], weight.shape[0])[idxs] = owner[units]
            elif handler == "prune_in_channels":
                size = weight.shape[1] * getattr(module, "groups", 1)
                blank(columns, names[module], size)[idxs] = owner[units]
    if isinstance(head, _LAYERS) and head.weight.shape[0] == classes:
        rows[names[head]] = torch.arange(classes)  # logit k is class k's
    return rows, columns


def _crossing(weight: Tensor, groups: int, name: str, row: Tensor, column: Tensor) -> Tensor:
    """``weight``-shaped bool: the weights from a private block into another block."""
    if groups > 1:
        if groups == weight.shape[0] == column.numel():
            return torch.zeros(weight.shape, dtype=torch.bool)  # depthwise: a unit reads itself
        raise ValueError(
            f"model: the grouped convolution {name} reads a unit group; block wiring supports "
            "plain and depthwise convolutions"
        )
    cross = (column[None, :] != -1) & (column[None, :] != row[:, None])
    return cross.reshape(*cross.shape, *([1] * (weight.dim() - 2))).expand(weight.shape)
