"""Calibration statistics shared by the data-driven baselines (one batched pass each)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._runtime import forward_logits, frozen_eval, on_device, predict_logits
from . import MaskContext


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
