"""Boundary mining's settings, and the radius, step and domain they resolve to on the data."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from torch import nn

from .._validation import check_count, check_positive
from ..embedding import ContinuousForm, continuous_form
from ..inputs import as_inputs

__all__ = ["BoundaryConfig", "Norm", "Plan", "concrete_config", "plan_for"]

Norm = Literal["inf", "2"]


@dataclass(frozen=True)
class BoundaryConfig:
    """How boundary points are mined.

    Args:
        norm: ``"inf"`` (l_inf ball, sign steps) or ``"2"`` (l_2 ball, normalised steps).
        radius: ball radius in input units; ``None`` picks ``relative_radius`` times the data's
            scale (the standard deviation of the perturbed values, times ``sqrt(d)`` for l_2
            with ``d`` values per sample).
        relative_radius: the radius as a multiple of the data's scale when ``radius`` is None.
        step_size: PGD step; ``None`` is ``2.5 * radius / steps`` (the usual choice, which lets
            a sample cross the whole ball).
        steps: PGD iterations (>= 1).
        random_start: start from a uniform point in the ball rather than from ``x``.
        targeted: push toward the runner-up class instead of away from the predicted one.
        tol: bisection stops once the pair's softmax gap is below this (> 0).
        max_steps: bisection step cap (>= 1): mining always ends.
        domain: ``"auto"`` clamps to the data's own [min, max] (not for embeddings, which have
            no box domain); a ``(low, high)`` pair clamps to it; ``None`` never clamps.
    """

    norm: Norm = "inf"
    radius: float | None = None
    relative_radius: float = 1.0
    step_size: float | None = None
    steps: int = 20
    random_start: bool = True
    targeted: bool = False
    tol: float = 1e-4
    max_steps: int = 30
    domain: tuple[float, float] | Literal["auto"] | None = "auto"

    def __post_init__(self) -> None:
        aliases: dict[object, str] = {"inf": "inf", "2": "2", math.inf: "inf", 2: "2"}
        norm = None if isinstance(self.norm, bool) else aliases.get(self.norm)
        if norm is None:
            raise ValueError(f"norm: expected 'inf' or '2', got {self.norm!r}")
        object.__setattr__(self, "norm", norm)
        if self.radius is not None:
            check_positive("radius", self.radius)
        if self.relative_radius is not None:
            check_positive("relative_radius", self.relative_radius)
        if self.step_size is not None:
            check_positive("step_size", self.step_size)
        if self.tol is not None:
            check_positive("tol", self.tol)
        check_count("steps", self.steps)
        check_count("max_steps", self.max_steps)
        if isinstance(self.domain, tuple):
            low, high = (float(bound) for bound in self.domain)
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(
                    f"domain: expected finite (low, high) with low < high, got {self.domain!r}"
                )
            object.__setattr__(self, "domain", (low, high))
        elif self.domain not in ("auto", None):
            raise ValueError(f"domain: expected 'auto', None or (low, high), got {self.domain!r}")

    def resolved_on(self, model: nn.Module, data: object) -> BoundaryConfig:
        """This config with the radius, step and domain it takes on ``data`` made explicit, so
        that mining a few of its samples later uses the scale of the whole data set."""
        return concrete_config(model, data, self)


@dataclass(frozen=True)
class Plan:
    """The attack's concrete scale on one data set: ball radius, PGD step, clamping box."""

    radius: float
    step_size: float
    domain: tuple[float, float] | None


def concrete_config(model: nn.Module, data: object, config: BoundaryConfig) -> BoundaryConfig:
    """``config`` with the radius, step and domain it would take on ``data`` made explicit, so
    that mining a few samples later uses the scale of the whole data set
    (:meth:`BoundaryConfig.resolved_on`)."""
    plan = plan_for(config, continuous_form(model, as_inputs(data)))
    return dataclasses.replace(
        config, radius=plan.radius, step_size=plan.step_size, domain=plan.domain
    )


def plan_for(config: BoundaryConfig, form: ContinuousForm) -> Plan:
    """What ``config`` resolves to on ``form``'s values (only the unpadded positions count)."""
    values = form.values
    selected = form.movable_values()
    if config.radius is not None:
        radius = float(config.radius)
    else:
        scale = float(selected.float().std()) if selected.numel() > 1 else 1.0
        if config.norm == "2":
            scale *= math.sqrt(values[0].numel())
        radius = config.relative_radius * (scale if scale > 0 else 1.0)
    step = config.step_size if config.step_size is not None else 2.5 * radius / config.steps
    domain: tuple[float, float] | None
    if config.domain == "auto":
        domain = None if form.embedded else (float(selected.min()), float(selected.max()))
    else:
        domain = config.domain
    return Plan(radius, float(step), domain)
