"""Finding a model's structural units: heads and FFN neurons of transformers blocks, coupled
channel and neuron groups of Torch-Pruning's dependency graph, and the classifier excluded."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._runtime import forward_logits
from ..inputs import Batch
from .surgery import graph_for

__all__ = [
    "Excluded",
    "MaskSite",
    "UnitGroup",
    "UnitKind",
    "find_classifier",
    "find_groups",
    "layers_run",
]

UnitKind = Literal["channels", "neurons", "heads"]


@dataclass(frozen=True)
class MaskSite:
    """Where a group's mask multiplies activations: the output of ``module`` along ``dim``,
    each unit covering ``width`` consecutive features (1, or the head size for heads)."""

    module: str
    dim: int
    width: int = 1
    #: the module's output features the units are, in unit order, when they are not all of
    #: them (a concatenation's consumer sees several groups side by side: DenseNet), and how
    #: many features it has
    index: tuple[int, ...] | None = None
    features: int = 0
    #: the mask multiplies the module's first *input* instead of its output (an FFN's
    #: down-projection: after the activation, see :class:`UnitGroup` ``mask_at``)
    input: bool = False

    def spread(self, unit_mask: Tensor) -> Tensor:
        """``[K, features]``: ``unit_mask [K, units * width]`` placed at ``index``, ones
        elsewhere (the other groups' features pass unmasked)."""
        if self.index is None:
            return unit_mask
        full = torch.ones(
            unit_mask.shape[0], self.features, dtype=unit_mask.dtype, device=unit_mask.device
        )
        columns = torch.tensor(self.index, device=unit_mask.device)
        return full.index_copy(1, columns, unit_mask)

    def select(self, features: Tensor) -> Tensor:
        """The units' features of ``features [..., module features]`` (the last dim)."""
        if self.index is None:
            return features
        return features[..., list(self.index)]


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
    #: where masks multiply, when not at ``sites`` (which the scores read: similarity, Wanda,
    #: the activity penalty). An FFN neuron is masked at the down-projection's input, after its
    #: activation: the same forward pass as at the up-projection's output wherever act(0) = 0,
    #: exactly what surgery removes for any activation, and a straight-through gradient that is
    #: what switching the neuron on adds (``act(z)``), where masking before a GELU gave
    #: ``gelu'(0) z = z / 2``, dominated by the tokens on which the neuron is off
    mask_at: tuple[MaskSite, ...] = ()

    @property
    def mask_sites(self) -> tuple[MaskSite, ...]:
        """Where :meth:`saved.masking.units.UnitSpace.masked` multiplies this group's masks."""
        return self.mask_at or self.sites


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
    output.dense; ALBERT: query/key/value + dense, ffn + ffn_output, one layer shared by every
    depth) and ViT-like (q/k/v/o_proj, mlp.fc1/fc2) transformers blocks."""
    names = _named(model)
    modules = dict(model.named_modules())
    groups: list[UnitGroup] = []
    for name, module in model.named_modules():
        heads = getattr(module, "num_attention_heads", None)
        if isinstance(heads, int) and all(hasattr(module, a) for a in ("query", "key", "value")):
            own = getattr(module, "dense", None)  # ALBERT: the projection is the module's
            parent = modules[name.rsplit(".", 1)[0]]
            output = own if isinstance(own, nn.Linear) else parent.output.dense  # BertSelfOutput
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
        elif isinstance(getattr(module, "ffn", None), nn.Linear) and isinstance(
            getattr(module, "ffn_output", None), nn.Linear
        ):  # ALBERT's layer: ffn -> activation -> ffn_output
            up, down = module.ffn, module.ffn_output
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
                mask_at=(MaskSite(names[down], -1, 1, input=True),),
            )
        )
    return groups


# --------------------------------------------------------------------------- Torch-Pruning

_OUT_HANDLERS = {"prune_out_channels"}
#: Layers that normalise *across* channels: zeroing a channel before one still moves the mean
#: and variance the other channels are divided by, so a masked channel is not a removed one
#: and surgery would not reproduce the masked model. Channels coupled to one are not units.
_CHANNEL_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
#: Per-channel affine maps in eval mode: a layer feeding only these is masked at their output.
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _behind_batch_norm(graph: Any, module: nn.Module, normalised: set[nn.Module]) -> bool:
    """Whether every consumer of ``module``'s output is a BatchNorm in ``normalised``.

    Such a layer's mask is redundant in the forward pass (the BatchNorm's own output is masked)
    and wrong in the backward pass: with the mask at both, a dropped unit's straight-through
    gradient (:func:`saved.masking.trainer.straight_through`) is ``d/dm [m BN(m z)]`` at
    ``m ~ 0``, i.e. ``BN(0)``: the normalisation's constant shift, the same for every sample,
    instead of ``BN(z)``, what switching the unit on adds. LBMask could then not tell a
    needed unit from a useless one on BatchNorm networks."""
    node = graph.module2node.get(module)
    outputs = [] if node is None else node.outputs
    return bool(outputs) and all(o.module in normalised for o in outputs)


@dataclass(frozen=True)
class Excluded:
    """A coupled channel group left out of the unit space, and why."""

    name: str  # the group's root layer
    size: int
    reason: str

    def describe(self) -> str:
        return f"{self.name} ({self.size} channels): {self.reason}"


def _dependency_groups(
    model: nn.Module, example: Batch, classifier: nn.Module | None
) -> tuple[list[UnitGroup], list[Excluded]]:
    """Coupled channel / neuron groups from Torch-Pruning's dependency graph, and the groups
    left out because a masked unit there would not equal a removed one."""
    # Torch-Pruning traces autograd: build on a copy in eval mode with gradients enabled, so
    # the user's model (and its BatchNorm statistics and flags) are never touched.
    twin = copy.deepcopy(model).eval()
    twin_names = _named(twin)
    graph = graph_for(twin, example)
    with torch.enable_grad():
        head = (
            find_classifier(twin, example)
            if classifier is None
            else _twin_of(twin, model, classifier)
        )
        roots = (nn.Conv2d, nn.Conv1d, nn.Linear)
        groups: list[UnitGroup] = []
        excluded: list[Excluded] = []
        for group in graph.get_all_groups(ignored_layers=[head], root_module_types=roots):
            root = group[0].dep.target.module
            size = len(group[0].idxs)
            norm = next(
                (
                    i.dep.target.module
                    for i in group
                    if isinstance(i.dep.target.module, _CHANNEL_NORMS)
                ),
                None,
            )
            if norm is not None:
                reason = f"normalised across channels by {type(norm).__name__} {twin_names[norm]}"
                excluded.append(Excluded(twin_names[root], size, reason))
                continue
            sites: list[MaskSite] = []
            site_modules: list[nn.Module] = []
            norms = torch.zeros(size)
            params = 0
            grouped: list[str] = []
            for item in group:
                module = item.dep.target.module
                if module not in twin_names or not isinstance(module, nn.Module):
                    continue
                handler = getattr(item.dep.handler, "__name__", "")
                is_out = handler in _OUT_HANDLERS
                weight = getattr(module, "weight", None)
                if isinstance(module, nn.Conv2d | nn.Conv1d) and _unevenly_grouped(module):
                    grouped.append(twin_names[module])
                if is_out:
                    if len(item.idxs) != size:
                        raise ValueError(f"unsupported channel coupling at {twin_names[module]}")
                    dim = -1 if isinstance(module, nn.Linear) else 1
                    index, features = _site_index(item, module, size)
                    sites.append(MaskSite(twin_names[module], dim, 1, index, features))
                    site_modules.append(module)
                    if isinstance(weight, Tensor):
                        rows = weight.detach() if index is None else weight.detach()[list(index)]
                        norms += rows.reshape(size, -1).pow(2).sum(1).cpu()
                if is_out:  # a unit owns its producing rows; consumer columns are the
                    # next unit's rows' partners and would be counted twice
                    params += sum(p[0].numel() for p in module.parameters(recurse=False))
            normalised: set[nn.Module] = {m for m in site_modules if isinstance(m, _BATCH_NORMS)}
            mask_at = [
                site
                for site, module in zip(sites, site_modules, strict=True)
                if not _behind_batch_norm(graph, module, normalised)
            ]
            groups.append(
                UnitGroup(
                    name=twin_names[root],
                    kind="neurons" if isinstance(root, nn.Linear) else "channels",
                    size=size,
                    sites=tuple(dict.fromkeys(sites)),
                    mask_at=tuple(dict.fromkeys(mask_at)) if normalised else (),
                    params_per_unit=params,
                    norms=norms.sqrt(),
                    surgery={
                        "root": twin_names[root],
                        "linear": isinstance(root, nn.Linear),
                        "grouped": sorted(set(grouped)),
                    },
                )
            )
    return groups, excluded


def _unevenly_grouped(conv: nn.Conv1d | nn.Conv2d) -> bool:
    """A grouped convolution that is not depthwise: removing channels unevenly across its
    groups leaves no ``Conv`` with equal groups (surgery refuses; masking still works)."""
    return conv.groups > 1 and not conv.groups == conv.in_channels == conv.out_channels


def _site_index(item: Any, module: nn.Module, size: int) -> tuple[tuple[int, ...] | None, int]:
    """Which of ``module``'s output features a group item's units are (in the root's unit
    order), or None when they are all of them in order; and how many features it has."""
    weight = getattr(module, "weight", None)
    features = int(weight.shape[0]) if isinstance(weight, Tensor) else size
    idxs = [int(i) for i in item.idxs]
    roots = [int(r) for r in getattr(item, "root_idxs", None) or range(size)]
    ordered = [i for _, i in sorted(zip(roots, idxs, strict=True))]
    if features == size and ordered == list(range(size)):
        return None, features
    return tuple(ordered), features


def _twin_of(twin: nn.Module, model: nn.Module, module: nn.Module) -> nn.Module:
    name = _named(model).get(module)
    if name is None:
        raise ValueError("classifier: the module given is not part of the model")
    return dict(twin.named_modules())[name]


def layers_run(model: nn.Module, example: Batch) -> list[nn.Module]:
    """The Linear and Conv layers a forward pass calls as modules, in call order (each once).

    A layer whose weight a parent reads functionally is not among them: torchvision's
    ``nn.MultiheadAttention`` passes ``out_proj.weight`` to ``F.multi_head_attention_forward``
    and never calls ``out_proj``, so no hook sees that layer's input."""
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
    return list(dict.fromkeys(order))


def find_classifier(model: nn.Module, example: Batch) -> nn.Module:
    """The last Linear (or Conv) layer run in a forward pass: the one producing the logits."""
    return layers_run(model, example)[-1]


def find_groups(
    model: nn.Module, example: Batch, classifier: nn.Module | None
) -> tuple[list[UnitGroup], list[Excluded]]:
    """Transformers blocks (BERT-like and ViT-like) give heads and FFN neurons; any other model
    gives the coupled groups of Torch-Pruning's dependency graph, the classifier (the last
    Linear/Conv layer to run, or ``classifier``) excluded; and the groups left out, with why."""
    blocks = _transformer_groups(model)
    if blocks:
        return blocks, []
    return _dependency_groups(model, example, classifier)
