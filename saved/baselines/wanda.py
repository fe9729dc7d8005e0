"""Wanda, unstructured: weight ``W_ij`` scores ``|W_ij| * ||X_j||_2`` and each output row keeps its
top ``round((1 - s) * row)`` weights (Wanda's comparison group is the output row).

Per component, ``||X_j||`` is taken over the data of the component's binary task (balanced:
its positives and its negatives weigh half each), so scores differ across components only
through the data — which is why Wanda's supports nearly coincide (the paper's "structural
collapse")."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..activity import MaskContext, input_norms, require, wanda_scores
from ..masking.weights import WeightSpace


def masks(
    space: WeightSpace,
    num_components: int,
    sparsity: float,
    *,
    seed: int = 0,
    context: MaskContext | None = None,
) -> Tensor:
    del seed  # deterministic
    context = require(context, "wanda")
    if not isinstance(space, WeightSpace):
        raise TypeError("wanda: unstructured Wanda masks weights; build a WeightSpace")
    modules = [group.name.rsplit(".", 1)[0] for group in space.groups]
    norms = input_norms(context, modules)
    named = dict(context.model.named_modules())
    parts = []
    for group, module in zip(space.groups, modules, strict=True):
        if not group.name.endswith(".weight"):
            raise ValueError(f"wanda: {group.name} is not a Linear/Conv weight")
        layer = named[module]
        assert isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d))  # WeightSpace's layers
        scores = wanda_scores(layer, norms[module])  # [K, out, row]
        keep = max(1, round((1 - sparsity) * scores.shape[2]))
        top = scores.topk(keep, dim=2).indices
        mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(2, top, True)
        parts.append(mask.flatten(1))
    return torch.cat(parts, dim=1)
