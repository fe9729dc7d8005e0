"""Mutual-information pruning: each component keeps the units whose activity tells most about its
binary label (does the reference predict a class of ``P_k``).

Estimator: plug-in mutual information on a histogram — each unit's activation over the
calibration set is cut into 10 equal-frequency bins, and ``I(A; T) = sum p(b, t) log(p(b, t) /
(p(b) p(t)))`` is computed from the joint counts of bin and label; vectorised over units."""

from __future__ import annotations

import torch
from torch import Tensor

from ..activity import MaskContext, component_targets, require, unit_activations
from ..masking.units import UnitSpace

BINS = 10


def histogram_mutual_information(activations: Tensor, labels: Tensor, bins: int = BINS) -> Tensor:
    """``[N]`` plug-in MI (nats) between each column of ``activations [n, N]`` and binary
    ``labels [n]``, with ``bins`` equal-frequency bins per column (ties by sample order)."""
    n = activations.shape[0]
    ranks = activations.argsort(dim=0, stable=True).argsort(dim=0)
    binned = ranks * bins // n  # [n, N] in [0, bins)
    joint = binned * 2 + labels.long()[:, None]
    counts = torch.zeros(activations.shape[1], bins * 2)
    counts.scatter_add_(1, joint.T, torch.ones_like(joint.T, dtype=counts.dtype))
    p = counts.view(-1, bins, 2) / n
    p_bin = p.sum(2, keepdim=True)
    p_label = p.sum(1, keepdim=True)
    ratio = torch.where(p > 0, p / (p_bin * p_label).clamp_min(1e-30), torch.ones_like(p))
    return (p * ratio.log()).sum(dim=(1, 2))


def masks(
    space: UnitSpace,
    num_components: int,
    sparsity: float,
    *,
    seed: int = 0,
    context: MaskContext | None = None,
) -> Tensor:
    del seed  # deterministic
    context = require(context, "mi")
    activations = unit_activations(context, space)
    targets = component_targets(context)
    scores = torch.stack(
        [histogram_mutual_information(activations, targets[:, k]) for k in range(num_components)]
    )
    return space.binarise(scores, sparsity)
