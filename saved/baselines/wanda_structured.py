"""Wanda, structured: a unit scores the Wanda scores of its producing rows,
``sum_{i in unit} sum_j |W_ij| * ||X_j||_2``, summed over every Linear/Conv layer producing it;
each group keeps its top units (the same exact sizes as LBMask)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..activity import MaskContext, input_norms, require, wanda_scores
from ..masking.units import UnitSpace


def masks(
    space: UnitSpace,
    num_components: int,
    sparsity: float,
    *,
    seed: int = 0,
    context: MaskContext | None = None,
) -> Tensor:
    del seed  # deterministic
    context = require(context, "wanda-structured")
    modules = dict(context.model.named_modules())
    producers = sorted(
        {
            site.module
            for group in space.groups
            for site in group.sites
            if isinstance(modules[site.module], (nn.Linear, nn.Conv1d, nn.Conv2d))
        }
    )
    norms = input_norms(context, producers)
    scores = torch.zeros(num_components, space.num_units)
    for group, columns in space.group_slices():
        for site in group.sites:
            if site.module not in norms:
                continue
            layer = modules[site.module]
            assert isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d))  # the producers above
            rows = site.select(wanda_scores(layer, norms[site.module]).sum(2))  # [K, units]
            scores[:, columns] += rows.view(num_components, group.size, site.width).sum(2)
    return space.binarise(scores, sparsity)
