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
:meth:`UnitSpace.reduce` removes the units physically (dimension surgery) and must agree with the
masked model to float precision.
"""

from __future__ import annotations

import contextlib
import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import torch
import torch_pruning as tp
from torch import Tensor, nn

from ._runtime import forward_logits
from .inputs import Batch, repeat_batch

__all__ = [
    "Allocation",
    "MaskGroup",
    "MaskSite",
    "MaskSpace",
    "UnitGroup",
    "UnitSpace",
    "find_classifier",
]

UnitKind = Literal["channels", "neurons", "heads"]
#: How a sparsity is shared out: within every group, across the groups of one unit kind, or
#: ``"auto"``: by kind in transformer blocks (a space with attention heads), by group elsewhere.
Allocation = Literal["auto", "group", "kind"]


@dataclass(frozen=True)
class MaskSite:
    """Where a group's mask multiplies activations: the output of ``module`` along ``dim``,
    each unit covering ``width`` consecutive features (1, or the head size for heads)."""

    module: str
    dim: int
    width: int = 1


@dataclass(frozen=True)
class UnitGroup:
    """Units that are pruned together in one layer (or one coupled channel set)."""

    name: str
    kind: UnitKind
    size: int
    sites: tuple[MaskSite, ...]
    params_per_unit: int
    norms: Tensor = field(repr=False)  # [size] weight norm of each unit (magnitude prior)
    surgery: dict[str, Any] = field(repr=False, default_factory=dict)


def _named(model: nn.Module) -> dict[nn.Module, str]:
    return {module: name for name, module in model.named_modules()}


def _linear_params(linear: nn.Linear, *, out: bool) -> int:
    """Parameters one output (``out``) or input feature of ``linear`` carries."""
    if out:
        return linear.in_features + (1 if linear.bias is not None else 0)
    return linear.out_features


# --------------------------------------------------------------------------- transformers


def _transformer_groups(model: nn.Module) -> list[UnitGroup]:
    """Heads and FFN neurons of BERT-like (query/key/value + output.dense, intermediate.dense +
    output.dense) and ViT-like (q/k/v/o_proj, mlp.fc1/fc2) transformers blocks."""
    names = _named(model)
    modules = dict(model.named_modules())
    groups: list[UnitGroup] = []
    for name, module in model.named_modules():
        heads = getattr(module, "num_attention_heads", None)
        if isinstance(heads, int) and all(hasattr(module, a) for a in ("query", "key", "value")):
            parent = modules[name.rsplit(".", 1)[0]]
            output = parent.output.dense  # BertAttention.output (BertSelfOutput)
            q, k, v = module.query, module.key, module.value
            head_size = module.attention_head_size
            layout = "bert"
        elif isinstance(heads, int) and all(
            hasattr(module, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj")
        ):
            q, k, v, output = module.q_proj, module.k_proj, module.v_proj, module.o_proj
            head_size = module.head_dim
            layout = "vit"
        else:
            continue
        weights = torch.stack([q.weight, k.weight, v.weight]).detach()  # [3, H*d, hidden]
        per_head = weights.view(3, heads, head_size, -1).pow(2).sum(dim=(0, 2, 3))
        per_head += (
            output.weight.detach()
            .view(output.out_features, heads, head_size)
            .pow(2)
            .sum(dim=(0, 2))
        )
        params = (
            3 * head_size * q.in_features
            + sum(head_size for lin in (q, k, v) if lin.bias is not None)
            + head_size * output.out_features
        )
        groups.append(
            UnitGroup(
                name=f"{name}:heads",
                kind="heads",
                size=heads,
                sites=(MaskSite(names[v], -1, head_size),),
                params_per_unit=params,
                norms=per_head.sqrt().cpu(),
                surgery={
                    "layout": layout,
                    "owner": name,
                    "q": names[q],
                    "k": names[k],
                    "v": names[v],
                    "o": names[output],
                },
            )
        )
    for name, module in model.named_modules():
        if name.endswith("intermediate") and isinstance(getattr(module, "dense", None), nn.Linear):
            up = module.dense
            down = modules[name.rsplit(".", 1)[0]].output.dense
        elif isinstance(getattr(module, "fc1", None), nn.Linear) and isinstance(
            getattr(module, "fc2", None), nn.Linear
        ):
            up, down = module.fc1, module.fc2
        else:
            continue
        norms = up.weight.detach().pow(2).sum(1) + down.weight.detach().pow(2).sum(0)
        groups.append(
            UnitGroup(
                name=f"{name}:neurons",
                kind="neurons",
                size=up.out_features,
                sites=(MaskSite(names[up], -1, 1),),
                params_per_unit=_linear_params(up, out=True) + _linear_params(down, out=False),
                norms=norms.sqrt().cpu(),
                surgery={"up": names[up], "down": names[down]},
            )
        )
    return groups


# --------------------------------------------------------------------------- Torch-Pruning

_OUT_HANDLERS = {"prune_out_channels"}


def _dependency_groups(
    model: nn.Module, example: Batch, classifier: nn.Module | None
) -> list[UnitGroup]:
    """Coupled channel / neuron groups from Torch-Pruning's dependency graph."""
    # Torch-Pruning traces autograd: build on a copy in eval mode with gradients enabled, so
    # the user's model (and its BatchNorm statistics and flags) are never touched.
    twin = copy.deepcopy(model).eval()
    twin.requires_grad_(True)
    twin_names = _named(twin)
    kwargs = {"forward_fn": lambda m, x: forward_logits(m, x)}
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(twin, example_inputs=example, **kwargs)
        head = (
            find_classifier(twin, example)
            if classifier is None
            else _twin_of(twin, model, classifier)
        )
        roots = (nn.Conv2d, nn.Conv1d, nn.Linear)
        groups: list[UnitGroup] = []
        for group in graph.get_all_groups(ignored_layers=[head], root_module_types=roots):
            root = group[0].dep.target.module
            size = len(group[0].idxs)
            sites: list[MaskSite] = []
            norms = torch.zeros(size)
            params = 0
            for item in group:
                module = item.dep.target.module
                if module not in twin_names or not isinstance(module, nn.Module):
                    continue
                handler = getattr(item.dep.handler, "__name__", "")
                is_out = handler in _OUT_HANDLERS
                weight = getattr(module, "weight", None)
                if is_out:
                    if len(item.idxs) != size:
                        raise ValueError(f"unsupported channel coupling at {twin_names[module]}")
                    dim = -1 if isinstance(module, nn.Linear) else 1
                    sites.append(MaskSite(twin_names[module], dim, 1))
                    if isinstance(weight, Tensor):
                        norms += weight.detach().reshape(size, -1).pow(2).sum(1).cpu()
                if is_out:  # a unit owns its producing rows; consumer columns are the
                    # next unit's rows' partners and would be counted twice
                    params += sum(p[0].numel() for p in module.parameters(recurse=False))
            groups.append(
                UnitGroup(
                    name=twin_names[root],
                    kind="neurons" if isinstance(root, nn.Linear) else "channels",
                    size=size,
                    sites=tuple(dict.fromkeys(sites)),
                    params_per_unit=params,
                    norms=norms.sqrt(),
                    surgery={"root": twin_names[root], "linear": isinstance(root, nn.Linear)},
                )
            )
    return groups


def _twin_of(twin: nn.Module, model: nn.Module, module: nn.Module) -> nn.Module:
    name = _named(model).get(module)
    if name is None:
        raise ValueError("classifier: the module given is not part of the model")
    return dict(twin.named_modules())[name]


def find_classifier(model: nn.Module, example: Batch) -> nn.Module:
    """The last Linear (or Conv) layer run in a forward pass: the one producing the logits."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: order.append(m))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv1d))
    ]
    try:
        with torch.no_grad():
            forward_logits(model, example)
    finally:
        for hook in hooks:
            hook.remove()
    if not order:
        raise ValueError("model: no Linear or Conv layer ran, so there is nothing to mask")
    return order[-1]


# --------------------------------------------------------------------------- the space


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
        if allocation not in ("group", "kind"):
            raise ValueError(f"allocation: expected 'auto', 'group' or 'kind', got {allocation!r}")
        return allocation

    def quota_blocks(self, allocation: Allocation = "group") -> list[list[tuple[G, slice]]]:
        """The sets of groups that share one keep quota: every group alone (``"group"``), or
        every group of one unit kind together (``"kind"``: heads, FFN or hidden neurons,
        channels; each weight tensor of an unstructured space is of kind ``"weights"``)."""
        allocation = self.resolve_allocation(allocation)
        if allocation == "group":
            return [[pair] for pair in self.group_slices()]
        blocks: dict[str, list[tuple[G, slice]]] = {}
        for group, columns in self.group_slices():
            blocks.setdefault(group.kind, []).append((group, columns))
        return list(blocks.values())

    def quota_keeps(self, sparsity: float, allocation: Allocation = "group") -> list[int]:
        """Units each quota block keeps at ``sparsity``: ``max(groups, round((1 - s) * size))``,
        so every group keeps at least one unit (a layer is never removed outright)."""
        if self.resolve_allocation(allocation) == "group":
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

    def _binarise_rows(self, scores: Tensor, sparsity: float, allocation: Allocation) -> Tensor:
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
            ranked = scores[:, columns].clone()
            start = 0
            for group, _ in block:  # every group's best unit goes first
                best = ranked[:, start : start + group.size].argmax(1) + start
                ranked.scatter_(1, best[:, None], math.inf)
                start += group.size
            top = ranked.topk(keep, dim=1).indices
            masks.scatter_(1, columns[top], True)
        return masks

    @abstractmethod
    def run(self, model: nn.Module, masks: Tensor, batch: Batch) -> Tensor:
        """Logits ``[K * B, C]`` of the K masked models (rows ``k*B:(k+1)*B`` for mask k)."""


class UnitSpace(MaskSpace[UnitGroup]):
    """The structural units of one model, with masking hooks and surgery. Build it with
    :meth:`of`."""

    @classmethod
    def of(cls, model: nn.Module, example: Batch, classifier: nn.Module | None = None) -> UnitSpace:
        """Find the units of ``model``; ``example`` is one small batch of its inputs.

        Transformers blocks (BERT-like and ViT-like) give heads and FFN neurons; any other model
        gives the coupled groups of Torch-Pruning's dependency graph, the classifier (the last
        Linear/Conv layer to run, or ``classifier``) excluded.
        """
        groups = _transformer_groups(model)
        if not groups:
            groups = _dependency_groups(model, example, classifier)
        return cls(groups, example)

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
                for site in group.sites:
                    unit_mask = weights[:, columns]
                    if site.width > 1:
                        unit_mask = unit_mask.repeat_interleave(site.width, dim=1)
                    handles.append(
                        modules[site.module].register_forward_hook(
                            _mask_hook(unit_mask, k, site.dim)
                        )
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
            if group.kind == "heads":
                _remove_heads(modules, info, pruned, group.sites[0].width)
            elif "up" in info:
                tp.prune_linear_out_channels(modules[info["up"]], pruned)
                tp.prune_linear_in_channels(modules[info["down"]], pruned)
            else:
                if graph is None:
                    graph = _graph_for(reduced, self.example)
                handler = (
                    tp.prune_linear_out_channels if info["linear"] else tp.prune_conv_out_channels
                )
                graph.get_pruning_group(modules[info["root"]], handler, idxs=pruned).prune()
        return reduced


def _graph_for(model: nn.Module, example: Batch) -> tp.DependencyGraph:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(True)
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, forward_fn=lambda m, x: forward_logits(m, x)
            )
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _remove_heads(
    modules: dict[str, nn.Module], info: dict[str, Any], heads: list[int], size: int
) -> None:
    rows = [h * size + i for h in heads for i in range(size)]
    for key in ("q", "k", "v"):
        tp.prune_linear_out_channels(modules[info[key]], rows)
    tp.prune_linear_in_channels(modules[info["o"]], rows)
    # the attention module reshapes with its own head count: keep it (and BERT's total size)
    # in step with the sliced projections
    owner: Any = modules[info["owner"]]
    remaining = int(owner.num_attention_heads) - len(heads)
    owner.num_attention_heads = remaining
    if hasattr(owner, "all_head_size"):
        owner.all_head_size = remaining * size


def _mask_hook(unit_mask: Tensor, k: int, dim: int) -> Any:
    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        blocks = output.reshape(k, -1, *output.shape[1:])
        shape = [k] + [1] * (blocks.dim() - 1)
        axis = dim + 1 if dim >= 0 else blocks.dim() + dim
        shape[axis] = unit_mask.shape[1]
        return (blocks * unit_mask.to(output.dtype).view(shape)).reshape(output.shape)

    return hook
