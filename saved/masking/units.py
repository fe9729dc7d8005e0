"""Structural units of a model: what a component keeps or drops, how masks apply, and surgery.

A *unit* is the smallest piece a structured mask removes:

* a neuron of a hidden Linear layer (MLP hidden layers; FFN intermediate neurons of transformers);
* an output channel of a Conv layer, where channels coupled through residual additions and
  normalisation form **one** unit (Torch-Pruning's dependency graph finds the coupling);
* an attention head of a transformers model.

Units come in *groups* (a layer's neurons, a coupled channel set, a layer's heads). A mask over
all ``N`` units is a ``[K, N]`` tensor, one row per component. :meth:`UnitSpace.masked` applies it
with forward hooks that multiply unit activations, without copying weights, so K components run
in one batched pass over a K-times repeated batch. The classifier's outputs are never units.

Masking a unit zeroes its activation where it is produced (after normalisation, so a BatchNorm
bias cannot revive it): every consumer then sees 0 from it, exactly as if it had been removed.
An FFN neuron is masked where its one consumer reads it, the down-projection's input (after
the activation: :attr:`UnitGroup.mask_at`).
:meth:`UnitSpace.reduce` removes the units physically (dimension surgery) and must agree with the
masked model to float precision.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
import torch_pruning as tp
from torch import Tensor, nn

from .._runtime import forward_logits
from ..inputs import Batch, repeat_batch
from .discovery import Excluded, MaskSite, UnitGroup, UnitKind, find_classifier, find_groups
from .hooks import mask_hook, mask_input_hook
from .space import Allocation, MaskGroup, MaskSpace
from .surgery import graph_for, remove_heads

__all__ = [
    "Allocation",
    "MaskGroup",
    "MaskSite",
    "MaskSpace",
    "UnitGroup",
    "UnitKind",
    "UnitSpace",
    "find_classifier",
]


class UnitSpace(MaskSpace[UnitGroup]):
    """The structural units of one model, with masking hooks and surgery. Build it with
    :meth:`of`; ``excluded`` lists the channel groups that are not units, and why."""

    excluded: tuple[Excluded, ...] = ()

    @classmethod
    def of(cls, model: nn.Module, example: Batch, classifier: nn.Module | None = None) -> UnitSpace:
        """Find the units of ``model``; ``example`` is one small batch of its inputs.

        Transformers blocks (BERT-like and ViT-like) give heads and FFN neurons; any other model
        gives the coupled groups of Torch-Pruning's dependency graph, the classifier (the last
        Linear/Conv layer to run, or ``classifier``) excluded.
        """
        groups, excluded = find_groups(model, example, classifier)
        if not groups and excluded:
            raise ValueError(
                "model: no maskable units; every channel group is left out: "
                + "; ".join(e.describe() for e in excluded[:3])
            )
        space = cls(groups, example)
        space.excluded = tuple(excluded)
        return space

    @property
    def unit_params(self) -> Tensor:
        """``[N]`` parameters carried by each unit."""
        return torch.cat([torch.full((g.size,), g.params_per_unit) for g in self.groups])

    @property
    def num_params(self) -> int:
        """``|S|`` in parameters: those the units own. A channel or neuron owns its producing
        weights (row, bias, normalisation scale and shift); a head its query, key and value rows
        and its output-projection columns; an FFN neuron also its down-projection column.
        Embeddings, the classifier and residual-stream norms belong to no unit."""
        return int(self.unit_params.sum())

    def run(self, model: nn.Module, masks: Tensor, batch: Batch) -> Tensor:
        with self.masked(model, masks):
            return forward_logits(model, repeat_batch(batch, masks.shape[0]))

    @contextlib.contextmanager
    def masked(self, model: nn.Module, masks: Tensor) -> Iterator[None]:
        """Within the block, ``model`` runs K masked copies on a K-times repeated batch.

        Args:
            masks: ``[K, N]`` (bool or float, differentiable for straight-through training);
                a batch of ``K * B`` rows is read as K blocks of B, block k masked by row k.
        """
        if masks.dim() != 2 or masks.shape[1] != self.num_units:
            raise ValueError(f"masks: expected [K, {self.num_units}], got {tuple(masks.shape)}")
        modules = dict(model.named_modules())
        handles = []
        k = masks.shape[0]
        weights = masks if masks.is_floating_point() else masks.float()
        try:
            for group, columns in self.group_slices():
                for site in group.mask_sites:
                    unit_mask = weights[:, columns]
                    if site.width > 1:
                        unit_mask = unit_mask.repeat_interleave(site.width, dim=1)
                    unit_mask = site.spread(unit_mask)
                    module = modules[site.module]
                    handles.append(
                        module.register_forward_pre_hook(mask_input_hook(unit_mask, k, site.dim))
                        if site.input
                        else module.register_forward_hook(mask_hook(unit_mask, k, site.dim))
                    )
            yield
        finally:
            for handle in handles:
                handle.remove()

    def reduce(self, model: nn.Module, keep: Tensor) -> nn.Module:
        """A standalone copy of ``model`` with the units outside ``keep`` (``[N]`` bool)
        physically removed: producing layers' outputs, consumers' inputs, norms, coupled
        residual channels, attention heads (with the attention modules' head counts updated)."""
        if keep.shape != (self.num_units,) or keep.dtype != torch.bool:
            raise ValueError(f"keep: expected a bool tensor of shape [{self.num_units}]")
        reduced = copy.deepcopy(model)
        modules = dict(reduced.named_modules())
        graph = None
        for group, columns in self.group_slices():
            pruned = torch.nonzero(~keep[columns].cpu()).flatten().tolist()
            if not pruned:
                continue
            info = group.surgery
            if info.get("grouped"):
                raise ValueError(
                    f"surgery: the channels of {group.name} pass through the grouped "
                    f"convolution {info['grouped'][0]}, which cannot lose channels unevenly "
                    "across its groups; the masked model is exact (evaluate, predict), but no "
                    "standalone smaller network exists for this mask"
                )
            if group.kind == "heads":
                remove_heads(modules, info, pruned, group.sites[0].width)
            elif "up" in info:
                tp.prune_linear_out_channels(modules[info["up"]], pruned)
                tp.prune_linear_in_channels(modules[info["down"]], pruned)
            else:
                if graph is None:
                    graph = graph_for(reduced, self.example)
                handler = (
                    tp.prune_linear_out_channels if info["linear"] else tp.prune_conv_out_channels
                )
                graph.get_pruning_group(modules[info["root"]], handler, idxs=pruned).prune()
        return reduced
