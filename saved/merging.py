"""Reversible neuron merging of a component (after surgery), after hierarchical reversible
merging (HERM): a compressed skeleton plus the instructions that give the original back.

In a layer ``L`` (Linear, or Conv2d with ``groups == 1``) followed by a positively homogeneous
activation (ReLU, LeakyReLU: ``f(c z) = c f(z)`` for ``c > 0``) and then a layer ``M`` of the
same kind, two units whose incoming weights and bias are proportional, ``v_i = c v_j`` with
``c > 0``, compute ``h_i = c h_j``. Unit ``i`` is folded into ``j``: ``M``'s input slice of
``j`` gains ``c`` times that of ``i``, and ``i`` is removed from ``L`` and ``M``. The output is
unchanged up to float rounding (``tol = 0``).

With ``tol > 0`` a unit is merged when ``||v_i - c v_j|| <= tol ||v_i||`` (``c`` the
least-squares factor): the network then *changes*, and :func:`merge_report` measures the
change on data instead of assuming it away. GELU, SiLU and tanh are not positively
homogeneous, so layers followed by them are never merged, and neither are attention heads or
layers whose output reaches anything but the next layer (a residual, a BatchNorm): only the
pattern ``layer, activation, layer`` among the children of an ``nn.Sequential`` is read.

Written by hand: Torch-Pruning removes units, it does not fold one into another.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ._runtime import frozen_eval, predict_logits
from .inputs import as_inputs, match_dtype

__all__ = ["MERGE_SLACK", "MergeRow", "MergeStep", "Merged", "merge", "merge_report"]

#: ``tol = 0`` still allows this relative residual: a unit built as ``1.7 * w`` in float32 is
#: proportional to ``w`` only up to rounding
MERGE_SLACK = 1e-6
_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU)
_LAYERS = (nn.Linear, nn.Conv2d)
Layer = nn.Linear | nn.Conv2d


@dataclass
class MergeStep:
    """The recovery instructions of one layer's merges (positions are those before it).

    ``removed[r]`` was folded into ``into[r]`` with factor ``factors[r]``; ``rows``/``biases``
    are the removed units' incoming weights and biases, ``columns`` the following layer's
    input slices of the removed units, ``touched_columns`` the original slices of the
    representatives (``touched``) the folding changed.
    """

    layer: str
    following: str
    size: int  # units of the layer before the merge
    removed: list[int]
    into: list[int]
    factors: list[float]
    rows: Tensor
    biases: Tensor | None
    columns: Tensor
    touched: list[int]
    touched_columns: Tensor


@dataclass
class Merged:
    """The merged network and the steps that undo it (:meth:`unmerge`)."""

    module: nn.Module
    steps: list[MergeStep] = field(default_factory=list)

    @property
    def units_merged(self) -> int:
        return sum(len(step.removed) for step in self.steps)

    def unmerge(self) -> nn.Module:
        """A copy of the network before merging, exactly (the steps undone in reverse)."""
        module = copy.deepcopy(self.module)
        named = dict(module.named_modules())
        for step in reversed(self.steps):
            _undo(_layer(named[step.layer]), _layer(named[step.following]), step)
        return module


def merge(module: nn.Module, tol: float = 0.0) -> Merged:
    """Fold proportional units of ``module`` (a copy; ``module`` itself is left as it was).

    Layers are merged in depth order; a layer's units are compared with the earlier units of
    the same layer still kept, and the first proportional one receives the unit.
    """
    if not tol >= 0:
        raise ValueError(f"tol: expected a number >= 0, got {tol!r}")
    merged = copy.deepcopy(module)
    steps = []
    for layer_name, following_name in _pairs(merged):
        named = dict(merged.named_modules())
        layer, following = _layer(named[layer_name]), _layer(named[following_name])
        step = _merge_pair(layer_name, following_name, layer, following, tol)
        if step is not None:
            steps.append(step)
    return Merged(merged, steps)


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    """``(layer, following)`` names of every ``layer, homogeneous activation, layer`` run of
    consecutive children of an ``nn.Sequential`` (same layer kind, no groups)."""
    found = []
    for prefix, container in module.named_modules():
        if not isinstance(container, nn.Sequential):
            continue
        children = list(container.named_children())
        runs = zip(children, children[1:], children[2:], strict=False)  # windows of three
        for (a, first), (_, act), (c, third) in runs:
            if (
                isinstance(first, _LAYERS)
                and type(first) is type(third)
                and isinstance(act, _HOMOGENEOUS)
                and getattr(first, "groups", 1) == 1
                and getattr(third, "groups", 1) == 1
            ):
                found.append((f"{prefix}.{a}" if prefix else a, f"{prefix}.{c}" if prefix else c))
    return found


def _layer(module: nn.Module) -> Layer:
    assert isinstance(module, _LAYERS)
    return module


def _incoming(layer: Layer) -> Tensor:
    """``[units, d]``: each unit's incoming weights and bias as one vector (float64)."""
    weight = layer.weight.detach().double().flatten(1)
    bias = getattr(layer, "bias", None)
    if bias is None:
        return weight
    return torch.cat([weight, bias.detach().double()[:, None]], dim=1)


def _merge_pair(
    layer_name: str, following_name: str, layer: Layer, following: Layer, tol: float
) -> MergeStep | None:
    vectors = _incoming(layer)
    units = vectors.shape[0]
    gram = vectors @ vectors.T
    squares = gram.diagonal()
    removed: list[int] = []
    into: list[int] = []
    factors: list[float] = []
    representatives: list[int] = []
    limit = (tol + MERGE_SLACK) ** 2
    for i in range(units):
        found = torch.zeros(0, dtype=torch.long)
        if representatives and float(squares[i]) > 0:
            rep = torch.tensor(representatives)
            inner, norms = gram[i, rep], squares[rep]
            # least squares: c = <v_i, v_j> / |v_j|^2, residual |v_i|^2 - <v_i, v_j>^2 / |v_j|^2
            residual = squares[i] - inner.pow(2) / norms.clamp_min(1e-300)
            alike = (inner > 0) & (norms > 0) & (residual <= limit * squares[i])
            found = rep[alike]
        if found.numel() == 0:
            representatives.append(i)
            continue
        j = int(found[0])
        removed.append(i)
        into.append(j)
        factors.append(float(gram[i, j] / squares[j]))
    if not removed:
        return None
    weight_in, weight_out = layer.weight.detach(), following.weight.detach()
    bias = layer.bias.detach() if layer.bias is not None else None
    touched = sorted(set(into))
    step = MergeStep(
        layer=layer_name,
        following=following_name,
        size=units,
        removed=removed,
        into=into,
        factors=factors,
        rows=weight_in[removed].clone(),
        biases=bias[removed].clone() if bias is not None else None,
        columns=weight_out[:, removed].clone(),
        touched=touched,
        touched_columns=weight_out[:, touched].clone(),
    )
    folded = weight_out.double()  # summed in float64, rounded once
    for i, j, factor in zip(removed, into, factors, strict=True):
        folded[:, j] += factor * folded[:, i]
    folded = folded.to(weight_out.dtype)
    keep = [u for u in range(units) if u not in set(removed)]
    _set_units(layer, weight_in[keep], bias[keep] if bias is not None else None)
    _set_inputs(following, folded[:, keep])
    return step


def _set_units(layer: Layer, weight: Tensor, bias: Tensor | None) -> None:
    layer.weight = nn.Parameter(weight.clone(), requires_grad=layer.weight.requires_grad)
    if bias is not None and layer.bias is not None:
        layer.bias = nn.Parameter(bias.clone(), requires_grad=layer.bias.requires_grad)
    if isinstance(layer, nn.Linear):
        layer.out_features = weight.shape[0]
    else:
        layer.out_channels = weight.shape[0]


def _set_inputs(layer: Layer, weight: Tensor) -> None:
    layer.weight = nn.Parameter(weight.clone(), requires_grad=layer.weight.requires_grad)
    if isinstance(layer, nn.Linear):
        layer.in_features = weight.shape[1]
    else:
        layer.in_channels = weight.shape[1]


def _undo(layer: Layer, following: Layer, step: MergeStep) -> None:
    keep = [u for u in range(step.size) if u not in set(step.removed)]
    weight_in = layer.weight.detach()
    rows = torch.empty(step.size, *weight_in.shape[1:], dtype=weight_in.dtype)
    rows[keep] = weight_in
    rows[step.removed] = step.rows
    bias = None
    if step.biases is not None and layer.bias is not None:
        bias = torch.empty(step.size, dtype=step.biases.dtype)
        bias[keep] = layer.bias.detach()
        bias[step.removed] = step.biases
    weight_out = following.weight.detach()
    columns = torch.empty(
        weight_out.shape[0], step.size, *weight_out.shape[2:], dtype=weight_out.dtype
    )
    columns[:, keep] = weight_out
    columns[:, step.removed] = step.columns
    columns[:, step.touched] = step.touched_columns
    _set_units(layer, rows, bias)
    _set_inputs(following, columns)


@dataclass(frozen=True)
class MergeRow:
    """One component merged: units before, units merged away, and the largest absolute
    difference of its logits from the unmerged component's on the data."""

    component: int
    units: int
    merged: int
    max_difference: float


def merge_report(
    components: list[nn.Module], data: object, tol: float = 0.0
) -> tuple[list[Merged], list[MergeRow]]:
    """Merge every component network (e.g. ``decomposition.component(k)`` for each k) and
    measure, on ``data``, how far each merged network's logits move from its own."""
    merged_all, rows = [], []
    for k, component in enumerate(components):
        merged = merge(component, tol)
        inputs = match_dtype(as_inputs(data).without_labels(), component)
        with frozen_eval(component):
            before = predict_logits(component, inputs)
        after = predict_logits(merged.module, inputs)
        units = sum(
            int(layer.weight.shape[0])
            for name, layer in component.named_modules()
            if name in {a for a, _ in _pairs(component)}
        )
        difference = float((before - after).abs().max()) if before.numel() else 0.0
        merged_all.append(merged)
        rows.append(MergeRow(k, units, merged.units_merged, difference))
    return merged_all, rows
