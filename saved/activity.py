"""What a model's units do on calibration data: the statistics the data-driven baselines and
LBMask's similarity and Taylor priors read, one batched pass each.

Below both :mod:`saved.baselines` and :mod:`saved.masking` (the trainer starts from
similarity pruning's ranking, ``LBMaskConfig(prior="similarity")``), so neither reaches up
into the other. ``space`` arguments are :class:`~saved.masking.units.UnitSpace` objects, typed
``Any`` here so that this module does not import the masking package it sits under.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ._runtime import forward_logits, frozen_eval, on_device, predict_logits
from .components import ClassComponents
from .inputs import Inputs, repeat_batch, trim_padding

__all__ = [
    "MaskContext",
    "component_targets",
    "drop_order",
    "input_norms",
    "per_sample",
    "require",
    "similarity_scores",
    "taylor_scores",
    "unit_activations",
    "wanda_scores",
]


@dataclass(frozen=True)
class MaskContext:
    """What data-driven baselines look at: the frozen model and its calibration set."""

    model: nn.Module
    calibration: Inputs
    components: ClassComponents
    device: torch.device
    batch_size: int = 256


def require(context: MaskContext | None, method: str) -> MaskContext:
    if context is None:
        raise ValueError(f"{method}: needs the model and calibration data (context=MaskContext)")
    return context


def component_targets(context: MaskContext) -> Tensor:
    """``[n, K]`` float: does the reference model put calibration sample i in ``P_k``?"""
    reference = predict_logits(context.model, context.calibration, device=context.device)
    return context.components.binary_targets(reference.argmax(1)).float()


def per_sample(x: Tensor, n: int, name: str) -> Tensor:
    """``x`` of a layer that ran on a batch of ``n`` samples, as ``[n, m, ...]``: ``m`` rows
    per sample when the model folded several into the batch dimension, batch-major (MobileViT
    runs its transformer on ``[n * patch_area, patches, dim]``)."""
    if x.shape[0] % n:
        raise ValueError(
            f"{name}: ran on {x.shape[0]} rows for a batch of {n} samples; which sample each "
            "row belongs to cannot be told, so activation statistics cannot be taken here"
        )
    return x.reshape(n, x.shape[0] // n, *x.shape[1:])


def input_norms(context: MaskContext, names: list[str]) -> dict[str, Tensor]:
    """``||X_j||_2`` per input feature j of each named Linear/Conv module, ``[K, in]``, over the
    data of component k's binary task, balanced: half the weight on the samples the reference
    assigns to ``P_k``, half on the others (all tokens / spatial positions of each sample).
    Conv inputs are per channel, shared by the kernel positions."""
    labels = component_targets(context)
    positives = labels.sum(0).clamp_min(1)
    negatives = (labels.shape[0] - labels.sum(0)).clamp_min(1)
    targets = labels / (2 * positives) + (1 - labels) / (2 * negatives)
    model = on_device(context.model, context.device)
    modules = dict(model.named_modules())
    sums: dict[str, Tensor] = {}
    current: dict[str, Tensor] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            weights = current["targets"]
            x = per_sample(inputs[0].detach().float(), weights.shape[0], name)  # [n, m, ...]
            n = x.shape[0]
            if isinstance(module, nn.Linear):
                squares = x.pow(2).reshape(n, -1, x.shape[-1]).sum(1)
            else:  # [n, m, C, *spatial]: per channel, over the folded rows and positions
                squares = x.pow(2).transpose(1, 2).reshape(n, x.shape[2], -1).sum(2)
            sums[name] = sums.get(name, 0) + weights.T @ squares

        return record

    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in names]
    try:
        with frozen_eval(model), torch.no_grad():
            size = context.batch_size
            for start in range(0, len(context.calibration), size):
                rows = torch.arange(start, min(start + size, len(context.calibration)))
                current["targets"] = targets[rows].to(context.device)
                forward_logits(model, context.calibration.batch(rows, context.device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name].sqrt().cpu() for name in names}


def wanda_scores(module: nn.Linear | nn.Conv1d | nn.Conv2d, feature: Tensor) -> Tensor:
    """``[K, out, fan_in]``: Wanda's ``|W_ij| * ||X_j||_2`` of every weight of ``module`` (a
    Linear or Conv), its input norms ``feature [K, in]`` from :func:`input_norms`.

    A grouped convolution (``groups > 1``; depthwise when ``groups == in``) connects output
    channel ``o`` only to the ``in / groups`` input channels of its group, so each weight row
    is scored with the norms of *its* group's inputs, not of all inputs.
    """
    weight = module.weight.detach().abs().float().cpu()  # [out, in / groups, *kernel]
    groups = int(getattr(module, "groups", 1))
    k, out, per_group = feature.shape[0], weight.shape[0], weight.shape[1]
    if feature.shape[1] != groups * per_group:
        raise ValueError(
            f"{type(module).__name__}: {feature.shape[1]} input features for a weight of "
            f"{per_group} inputs x {groups} groups"
        )
    kernel = (1,) * (weight.dim() - 2)
    by_group = weight.view(groups, out // groups, per_group, *weight.shape[2:])
    norms = feature.view(k, groups, 1, per_group, *kernel)
    return (by_group[None] * norms).reshape(k, out, -1)


def unit_activations(context: MaskContext, space: Any) -> Tensor:
    """``[n, N]``: each unit's activity on each calibration sample, read at the unit's first
    mask site: the mean over spatial / sequence positions, and the l2 norm over a head's
    features."""
    model = on_device(context.model, context.device)
    modules = dict(model.named_modules())
    columns: list[Tensor] = []
    batch_parts: list[list[Tensor]] = [[] for _ in space.groups]
    # a layer may run several times per forward (ALBERT shares one layer across depths): its
    # activity on a sample is the mean over those calls
    calls: list[list[Tensor]] = [[] for _ in space.groups]
    rows = {"n": 0}

    def hook(g: int, site: Any, size: int) -> Any:
        def record(module: nn.Module, inputs: Any, output: Tensor) -> None:
            dim, width = site.dim, site.width
            out = site.select(output.detach().float().movedim(dim, -1))
            out = per_sample(out, rows["n"], site.module)  # [n, m, ..., features]
            out = out.reshape(rows["n"], -1, size, width).mean(1)
            calls[g].append(out.norm(dim=-1) if width > 1 else out[..., 0])

        return record

    handles = []
    for g, group in enumerate(space.groups):
        site = group.sites[0]
        handles.append(modules[site.module].register_forward_hook(hook(g, site, group.size)))
    try:
        with frozen_eval(model), torch.no_grad():
            for start in range(0, len(context.calibration), context.batch_size):
                index = torch.arange(
                    start, min(start + context.batch_size, len(context.calibration))
                )
                rows["n"] = index.numel()
                forward_logits(model, context.calibration.batch(index, context.device))
                for g, seen in enumerate(calls):
                    batch_parts[g].append(torch.stack(seen).mean(0))
                    seen.clear()
    finally:
        for handle in handles:
            handle.remove()
    for parts in batch_parts:
        columns.append(torch.cat(parts).cpu())
    return torch.cat(columns, dim=1)


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


def similarity_scores(space: Any, context: MaskContext) -> Tensor:
    """Similarity pruning's ranking (:mod:`saved.baselines.similarity`), ``[K, N]`` over a
    :class:`~saved.masking.units.UnitSpace`: within each group, the units' drop positions
    scaled to [0, 1] (higher is kept longer); comparable across groups of different sizes."""
    activations = unit_activations(context, space)  # [n, N]
    targets = component_targets(context).bool()  # [n, K]
    columns = []
    for _, part in space.group_slices():
        block = activations[:, part]
        size = block.shape[1]
        columns.append(drop_order(_patterns(block, targets)).double() / max(size - 1, 1))
    return torch.cat(columns, dim=1).float()


#: Calibration rows :func:`taylor_scores` reads at most (spread evenly over the set).
TAYLOR_ROWS = 512


def taylor_scores(space: Any, context: MaskContext) -> Tensor:
    """``[K, N]`` first-order Taylor importance of every unit for every component: the mean
    over calibration rows of ``|d s_k / d m_u|`` at ``m = 1``, ``s_k`` component k's
    aggregation score and ``m_u`` unit u's mask, i.e. the unit's activation times the score's
    gradient with respect to it, summed over positions (the pruning criterion of Molchanov et
    al., ICLR 2017, taken per component and per sample, then averaged).

    A unit with no path to class k's logit scores 0 for component k, so on a network that
    decomposes by construction (:class:`saved.BlockWiring`) the ranking is each class's own
    units first, where a random start left LBMask far from them (docs/DECISIONS.md). Each
    sample gets its own copy of the masks (``K * b`` mask rows for ``b`` samples, one
    repeated-batch pass), so the absolute value is taken per sample and opposite effects on
    different samples do not cancel. Reads at most ``TAYLOR_ROWS`` rows."""
    components = context.components
    k, n = components.num_components, len(context.calibration)
    rows = torch.linspace(0, n - 1, min(n, TAYLOR_ROWS)).round().long().unique()
    order = context.calibration.select(rows).length_order()  # texts: batches of like length
    rows = rows if order is None else rows[order]
    chunk = max(1, context.batch_size // (4 * k))
    model = on_device(context.model, context.device)
    total = torch.zeros(k, space.num_units, dtype=torch.float64)
    with frozen_eval(model), torch.enable_grad():
        for start in range(0, rows.numel(), chunk):
            part = rows[start : start + chunk]
            batch = trim_padding(context.calibration.batch(part, context.device))
            b = part.numel()
            masks = torch.ones(k * b, space.num_units, device=context.device, requires_grad=True)
            with space.masked(model, masks):  # row k * b + i: component k on sample i
                logits = forward_logits(model, repeat_batch(batch, k)).float()
            m, _ = components.outputs(logits.view(k, b, -1))
            components.scores(m).sum().backward()
            assert masks.grad is not None
            total += masks.grad.view(k, b, -1).abs().sum(1).double().cpu()
    return (total / rows.numel()).float()


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
