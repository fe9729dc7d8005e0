"""Step 2 of mining: vectorised bisection of every flipped pair down to the boundary."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..embedding import ContinuousForm
from .config import BoundaryConfig
from .rows import COMPACT_SHARE, Rows, call_model, compact

__all__ = ["Pairs", "bisect"]


def _softmax(logits: Tensor, top: Tensor) -> Tensor:
    """Softmax over classes given each row's maximum ``top``.

    Written out: ATen's softmax kernel is several times slower than these element-wise ops on
    the narrow ``[pairs, classes]`` tensors of the bisection loop (measured on the CPU).
    """
    exp = (logits - top[:, None]).exp()
    return exp / exp.sum(dim=1, keepdim=True)


def _pair_gap(probs: Tensor, classes: Tensor) -> Tensor:
    """``max(p_a(x_lo) - p_b(x_lo), p_b(x_hi) - p_a(x_hi))``.

    Args:
        probs: ``[n, 2, C]`` softmax at ``x_lo`` (index 0) and ``x_hi`` (index 1).
        classes: ``[n, 2]`` the pair's classes ``a, b``.
    """
    at = probs.gather(2, classes[:, None, :].expand(-1, 2, -1))  # p_a, p_b at both ends
    a_minus_b = at[..., 0] - at[..., 1]
    return torch.maximum(a_minus_b[:, 0], -a_minus_b[:, 1])


@dataclass
class Pairs:
    """Where each pair ended: ``ends`` (``[n, 2, ...]``: x_lo, x_hi of the perturbed field),
    ``classes`` (``[n, 2]``: a, b), the final softmax ``gap``, whether a midpoint fell into a
    ``third`` class, and the bisection ``steps`` the pair used."""

    ends: Tensor
    classes: Tensor
    gap: Tensor
    third: Tensor
    steps: Tensor


@dataclass
class _Bisecting(Rows):
    ends: Tensor
    probs: Tensor  # [n, 2, C] softmax at both ends
    classes: Tensor
    gap: Tensor
    third: Tensor
    steps: Tensor
    active: Tensor  # still above the tolerance


def bisect(
    model: nn.Module,
    form: ContinuousForm,
    ends: Tensor,
    probs: Tensor,
    classes: Tensor,
    others: dict[str, Tensor],
    config: BoundaryConfig,
) -> tuple[Pairs, int]:
    """Bisect flipped pairs: ``ends`` ``[n, 2, ...]`` (x_lo, x_hi), ``probs`` ``[n, 2, C]``
    (softmax at both ends), ``classes`` ``[n, 2]`` (a, b), ``others`` the pairs' other input
    fields. Returns where the pairs ended and the number of iterations run."""
    n = classes.shape[0]
    device = classes.device
    gap = _pair_gap(probs, classes)
    state = _Bisecting(
        row=torch.arange(n, device=device),
        others=dict(others),
        ends=ends,
        probs=probs,
        classes=classes,
        gap=gap,
        third=torch.zeros(n, dtype=torch.bool, device=device),
        steps=torch.zeros(n, dtype=torch.long, device=device),
        active=gap >= config.tol,
    )
    outcome = Pairs(
        state.ends.clone(),
        state.classes.clone(),
        state.gap.clone(),
        state.third.clone(),
        state.steps.clone(),
    )
    state = compact(state, ~state.active, outcome, share=COMPACT_SHARE)
    iterations = 0
    for _ in range(config.max_steps):
        if state.row.numel() == 0:
            break
        iterations += 1
        ends, classes, active = state.ends, state.classes, state.active
        mid = ends.mean(dim=1)
        with torch.no_grad():
            logits = call_model(model, form, state.others, mid).float()
        top = logits.max(dim=1)
        to_lo = (top.indices == classes[:, 0]) & active
        to_hi = active ^ to_lo  # active pairs whose midpoint is not in class a
        # lerp with weight exactly 0 or 1 returns one end unchanged: a branch-free select of
        # which end the midpoint replaces, for the points and for their probabilities at once
        weight = torch.stack([to_lo, to_hi], dim=1).float()
        end_weight = weight.view(*weight.shape, *([1] * (mid.dim() - 1))).to(mid.dtype)
        state.ends = torch.lerp(ends, mid[:, None], end_weight)
        probs = _softmax(logits, top.values)
        state.probs = torch.lerp(state.probs, probs[:, None], weight[..., None])
        # a midpoint outside {a, b} becomes the new b: [x_lo, x_mid] straddles a's boundary
        new_b = torch.where(to_hi, top.indices, classes[:, 1])
        state.third = state.third | (new_b != classes[:, 1])
        state.classes = torch.stack([classes[:, 0], new_b], dim=1)
        state.steps = state.steps + active
        state.gap = _pair_gap(state.probs, state.classes)
        state.active = active & (state.gap >= config.tol)
        state = compact(state, ~state.active, outcome, share=COMPACT_SHARE)
    compact(state, torch.ones_like(state.row, dtype=torch.bool), outcome)
    return outcome, iterations
