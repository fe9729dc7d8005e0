"""A modularity regulariser for training: class-wise components that the contract can find.

The contract asks that each class keep a small set of units that overlaps little with the other
classes' sets (the Jaccard overlap of LBMask's component supports, ``<= gamma``) while every
component keeps the decisions near the boundary. A network trained with cross-entropy alone has
no reason to route classes through different units, and real ones do not (docs/RESULTS.md).
Modular training (MwT's cohesion and coupling losses on CNN kernels, MODA's intra-class affinity
and inter-class dispersion of activations) adds that reason to the training loss; this module
does it on the *units LBMask masks* (:class:`saved.masking.units.UnitSpace`: hidden neurons,
coupled conv channels, attention heads, FFN neurons), so what training encourages is what the
contract measures.

For a batch with labels ``y``, each unit's activity on each sample is read where its mask
would apply (the mean absolute activation over positions; a head's l2 norm over its features),
normalised within its layer to a distribution ``p_i`` over the layer's units. Per class ``c``
present in the batch, ``P_c`` is the mean of ``p_i`` over its samples. The penalty, averaged
over layers:

* **coupling**: the mean cosine similarity of ``P_c`` and ``P_c'`` over pairs of classes —
  classes that use the same units couple;
* **cohesion**: ``1 -`` the mean cosine similarity of ``p_i`` and its class's ``P_{y_i}`` —
  samples of one class should use their class's units;
* **compactness** (weight ``compactness``, default 0.1): the share of a layer's units a class
  uses, ``(sum_u sqrt(P_cu))^2 / units`` (1 when a class spreads evenly over every unit,
  ``1 / units`` when it uses one).

One forward pass: the penalty reads activity through forward hooks during the model call that
also gives the logits, vectorised over the batch; it is differentiable and adds no pass of its
own (its step cost: ``benchmarks/modularity.py``, docs/BENCHMARKS.md).

    penalty = saved.ModularityPenalty(model, x[:2])
    for x, y in loader:
        logits, modular = penalty(x, y)
        loss = F.cross_entropy(logits, y) + 0.5 * modular
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._runtime import forward_logits
from .activity import per_sample
from .inputs import as_inputs
from .masking.discovery import MaskSite
from .masking.units import UnitSpace

__all__ = ["ModularityPenalty", "modularity_penalty"]


class ModularityPenalty:
    """The modularity regulariser of one model (its units found once, at construction).

    Args:
        model: the network being trained (any model :class:`saved.decompose` takes).
        example: one small batch of its inputs, to find the units.
        coupling, cohesion, compactness: the terms' weights (see the module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        example: Any,
        *,
        coupling: float = 1.0,
        cohesion: float = 1.0,
        compactness: float = 0.1,
    ) -> None:
        for name, value in (
            ("coupling", coupling),
            ("cohesion", cohesion),
            ("compactness", compactness),
        ):
            if not value >= 0:
                raise ValueError(f"{name}: expected a weight >= 0, got {value!r}")
        self.model = model
        self.space = UnitSpace.of(model, as_inputs(example).without_labels().batch(slice(0, 2)))
        self.weights = (coupling, cohesion, compactness)
        modules = dict(model.named_modules())
        self._sites = [(modules[g.sites[0].module], g.sites[0], g.size) for g in self.space.groups]

    def __call__(self, inputs: Any, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits, penalty)`` of one forward pass of the model on ``inputs`` (a tensor or a
        dict batch); ``labels`` are the batch's class indices (``[B]``)."""
        batch = as_inputs(inputs).without_labels()
        n = len(batch)
        labels = torch.as_tensor(labels).reshape(-1)
        if labels.numel() != n:
            raise ValueError(f"labels: {labels.numel()} for a batch of {n} samples")
        activity: list[list[Tensor]] = [[] for _ in self._sites]
        handles = [
            module.register_forward_hook(_recorder(calls, site, size, n))
            for calls, (module, site, size) in zip(activity, self._sites, strict=True)
        ]
        try:
            logits = forward_logits(self.model, batch.batch(slice(0, n)))
        finally:
            for handle in handles:
                handle.remove()
        classes = labels.to(logits.device)
        terms = [
            _layer_penalty(torch.stack(calls).mean(0), classes, self.weights)
            for calls in activity
            if calls
        ]
        penalty = torch.stack(terms).mean() if terms else logits.new_zeros(())
        return logits, penalty


def modularity_penalty(
    model: nn.Module, inputs: Any, labels: Tensor, **weights: float
) -> tuple[Tensor, Tensor]:
    """``(logits, penalty)`` of one forward pass: :class:`ModularityPenalty` built for this
    call. In a training loop build the class once instead: finding the units traces the model."""
    return ModularityPenalty(model, inputs, **weights)(inputs, labels)


def _recorder(calls: list[Tensor], site: MaskSite, size: int, n: int) -> Any:
    """A forward hook appending ``[n, size]`` unit activity, with gradient (a layer run twice
    per forward, as ALBERT's shared one, gives one entry per call)."""

    def record(module: nn.Module, inputs: Any, output: Tensor) -> None:
        out = site.select(output.float().movedim(site.dim, -1))
        out = per_sample(out, n, site.module).reshape(n, -1, size, site.width)
        if site.width > 1:
            calls.append(out.norm(dim=-1).mean(1))
        else:
            calls.append(out[..., 0].abs().mean(1))

    return record


def _layer_penalty(activity: Tensor, labels: Tensor, weights: tuple[float, ...]) -> Tensor:
    """The penalty of one layer from its ``[n, units]`` activity and the batch's labels."""
    coupling_w, cohesion_w, compactness_w = weights
    p = activity / activity.sum(1, keepdim=True).clamp_min(1e-8)
    present = labels.unique()
    onehot = (labels[:, None] == present[None, :]).to(p.dtype)  # [n, C present]
    profiles = (onehot.T @ p) / onehot.sum(0)[:, None]  # [C, units]
    total = p.new_zeros(())
    if len(present) > 1 and coupling_w:
        unit = F.normalize(profiles, dim=1)
        pairs = torch.tensor(list(itertools.combinations(range(len(present)), 2)))
        similarity = (unit[pairs[:, 0]] * unit[pairs[:, 1]]).sum(1)
        total = total + coupling_w * similarity.mean()
    if cohesion_w:
        own = profiles[onehot.argmax(1)]  # each sample's class profile
        total = total + cohesion_w * (1 - F.cosine_similarity(p, own, dim=1)).mean()
    if compactness_w:
        share = profiles.clamp_min(0).sqrt().sum(1).pow(2) / p.shape[1]
        total = total + compactness_w * share.mean()
    return total
