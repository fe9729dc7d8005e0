"""Step 1 of mining: PGD from each sample until its class flips (or the steps run out)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..embedding import ContinuousForm, broadcast_mask
from .config import BoundaryConfig, Norm, Plan
from .rows import COMPACT_SHARE, Rows, call_model, compact

__all__ = ["pgd"]


def _per_sample_norm(tensor: Tensor) -> Tensor:
    return tensor.flatten(1).norm(dim=1).view(-1, *([1] * (tensor.dim() - 1)))


def _project(delta: Tensor, radius: float, norm: Norm) -> Tensor:
    if norm == "inf":
        return delta.clamp(-radius, radius)
    return delta * (radius / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)


def _random_start(
    shape: torch.Size, radius: float, norm: Norm, generator: torch.Generator
) -> Tensor:
    if norm == "inf":
        return (torch.rand(shape, generator=generator) * 2 - 1) * radius
    direction = torch.randn(shape, generator=generator)
    direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
    scale = torch.rand(shape[0], generator=generator).view(-1, *([1] * (len(shape) - 1)))
    return direction * radius * scale


@dataclass
class _Attack(Rows):
    """PGD's rows: the current ``point`` and what projects it back — the l_inf box
    (``lower``, ``upper``, already clamped to the domain) or the l_2 ``origin`` with the
    positions allowed to move (``keep``) —, and what it pushes toward (``goal``, targeted)
    or away from (``reference``, untargeted)."""

    point: Tensor
    lower: Tensor | None = None
    upper: Tensor | None = None
    origin: Tensor | None = None
    keep: Tensor | None = None
    goal: Tensor | None = None
    reference: Tensor | None = None

    def project(self, point: Tensor, plan: Plan) -> Tensor:
        if self.lower is not None and self.upper is not None:
            return torch.clamp(point, self.lower, self.upper)
        assert self.origin is not None
        delta = point - self.origin
        point = self.origin + _project(
            delta if self.keep is None else delta * self.keep, plan.radius, "2"
        )
        # clamping coordinates into the box only shrinks |delta|: the point stays in the ball
        return point if plan.domain is None else point.clamp(*plan.domain)


@dataclass
class _Reached:
    point: Tensor  # [rows, ...] where each row stopped


def pgd(
    model: nn.Module,
    form: ContinuousForm,
    others: dict[str, Tensor],
    x0: Tensor,
    reference: Tensor,
    goal: Tensor,
    config: BoundaryConfig,
    plan: Plan,
    generator: torch.Generator,
) -> tuple[Tensor, int]:
    """PGD on one chunk: the last iterate of every row (the first that flipped, for rows that
    flipped) and the number of iterations run (each one forward + input-gradient backward)."""
    keep = broadcast_mask(others.get("attention_mask"), x0) if form.embedded else None
    rows = torch.arange(x0.shape[0], device=x0.device)
    state = _Attack(rows, dict(others), point=x0)
    if config.norm == "inf":
        # the l_inf ball intersected with the domain is a box: one clamp projects onto it
        radius = plan.radius if keep is None else plan.radius * keep
        state.lower, state.upper = x0 - radius, x0 + radius
        if plan.domain is not None:
            state.lower = state.lower.clamp_min(plan.domain[0])
            state.upper = state.upper.clamp_max(plan.domain[1])
    else:
        state.origin, state.keep = x0, keep
    start = (
        _random_start(x0.shape, plan.radius, config.norm, generator).to(x0.device, x0.dtype)
        if config.random_start
        else torch.zeros_like(x0)
    )
    state.point = state.project(x0 + start, plan)
    if config.targeted:
        state.goal = goal
    else:
        state.reference = reference
    reached = _Reached(x0.clone())
    iterations = 0
    while iterations < config.steps and state.row.numel():
        iterations += 1
        point = state.point.requires_grad_(True)
        logits = call_model(model, form, state.others, point)
        if state.goal is not None:
            loss = -nn.functional.cross_entropy(logits, state.goal, reduction="sum")
            flipped = logits.argmax(dim=1) != reference[state.row]
        else:
            assert state.reference is not None
            loss = nn.functional.cross_entropy(logits, state.reference, reduction="sum")
            flipped = logits.argmax(dim=1) != state.reference
        (gradient,) = torch.autograd.grad(loss, point)
        point = point.detach()
        if config.norm == "inf":
            direction = gradient.sign()
        else:
            direction = gradient / _per_sample_norm(gradient).clamp_min(1e-12)
        stepped = state.project(torch.add(point, direction, alpha=plan.step_size), plan)
        # flipped rows stay at the point that flipped (lerp with weight 1 returns it exactly)
        frozen = flipped.to(point.dtype).view(-1, *([1] * (point.dim() - 1)))
        state.point = torch.lerp(stepped, point, frozen)
        state = compact(state, flipped, reached, share=COMPACT_SHARE)
    compact(state, torch.ones_like(state.row, dtype=torch.bool), reached)
    return reached.point, iterations
