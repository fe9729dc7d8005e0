"""The settings of LBMask mask learning, validated once (:class:`LBMaskConfig`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from .._validation import check_count, check_in, check_positive
from ..bounds import Contract
from .objectives import OBJECTIVES, Objective
from .space import ALLOCATIONS, Allocation

__all__ = ["OVERLAP_SHARE", "LBMaskConfig"]

#: ``overlap_limit="contract"``: the hinge starts at this share of the contract's gamma. The
#: hinge sees the hard masks through the straight-through estimator, so the learned overlap
#: settles a little above the limit (digits MLP, limit 0.45: 0.446-0.463 over five seeds); a
#: tenth of gamma leaves that room below the contract's bound.
OVERLAP_SHARE = 0.9


@dataclass(frozen=True)
class LBMaskConfig:
    """Settings of mask learning (see the module docstring). The defaults were chosen by the
    held-out study in docs/STUDY.md; docs/DECISIONS.md says why."""

    sparsity: float = 0.5
    #: the weight of the prior in the starting logits (0: a uniform start, seeded noise only)
    alpha: float = 1.0
    #: what ``alpha`` weighs in the starting logits: the units' weight norms (``"magnitude"``,
    #: the paper's prior), similarity pruning's per-component ranking (``"similarity"``,
    #: :mod:`saved.baselines.similarity`) or each unit's first-order Taylor importance for
    #: each component's score (``"taylor"``, :func:`saved.activity.taylor_scores`, the
    #: default since issue 38: docs/DECISIONS.md); ``"similarity"``: structured spaces
    #: only, per-weight spaces read the magnitude prior under ``"taylor"``
    prior: Literal["magnitude", "similarity", "taylor"] = "taylor"
    objective: Objective = "score"
    allocation: Allocation = "auto"
    steps: int | Literal["auto"] = "auto"
    max_steps: int = 400
    lr: float = 0.05
    batch_size: int = 32
    boundary_quantile: float = 0.2
    boundary_weight: float = 4.0
    #: which rows ``boundary_weight`` weighs (:func:`saved.masking.trainer.boundary_rows`)
    boundary_set: Literal["rows", "natural"] = "natural"
    sparsity_weight: float = 1.0
    #: steps over which the sparsity rises from 0 to ``sparsity`` (cubic schedule); 0: the
    #: masks are at ``sparsity`` from the first step
    ramp: int = 0
    #: a hinge on every pair of components' Jaccard overlap above this (through the
    #: straight-through masks), weighted by ``overlap_weight``. ``"contract"``:
    #: ``OVERLAP_SHARE`` times the gamma of the contract the decomposition is made for
    #: (:func:`saved.decompose`'s ``contract``; 0.45 for the default gamma 0.5); None: no
    #: overlap term
    overlap_limit: float | Literal["contract"] | None = "contract"
    overlap_weight: float = 1.0
    temperature: float = 1.0
    validation_fraction: float = 0.2
    #: what ``steps="auto"`` measures on the held-out rows (:mod:`saved.masking.lbmask`):
    #: the share of flipped decisions, ties broken by the objective, or the objective alone
    stop_on: Literal["flips", "loss"] = "flips"
    eval_every: int = 25
    patience: int = 3
    time_budget: float | None = None  # seconds of mask learning; None: no limit
    component_chunk: int | None = None  # None: by activation size (see trainer.auto_chunk)

    def __post_init__(self) -> None:
        check_in("sparsity", self.sparsity, "(0, 1)")
        check_in("alpha", self.alpha, "[0, 1]")
        if self.prior not in ("magnitude", "similarity", "taylor"):
            raise ValueError(
                f"prior: expected 'magnitude', 'similarity' or 'taylor', got {self.prior!r}"
            )
        check_in("boundary_quantile", self.boundary_quantile, "(0, 1]")
        check_in("validation_fraction", self.validation_fraction, "(0, 1)")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {OBJECTIVES}, got {self.objective!r}")
        if self.stop_on not in ("flips", "loss"):
            raise ValueError(f"stop_on: expected 'flips' or 'loss', got {self.stop_on!r}")
        if self.boundary_set not in ("rows", "natural"):
            raise ValueError(
                f"boundary_set: expected 'rows' or 'natural', got {self.boundary_set!r}"
            )
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation: expected one of {ALLOCATIONS}, got {self.allocation!r}")
        if self.steps != "auto":
            check_count("steps", self.steps)
        for name in ("max_steps", "batch_size", "eval_every", "patience"):
            check_count(name, getattr(self, name))
        if isinstance(self.ramp, bool) or not isinstance(self.ramp, int) or self.ramp < 0:
            raise ValueError(f"ramp: expected a whole number of steps >= 0, got {self.ramp!r}")
        if self.ramp >= self.step_limit:
            raise ValueError(
                f"ramp: {self.ramp} steps leave none at the target sparsity within "
                f"{self.step_limit} steps; raise max_steps (or steps) or lower ramp"
            )
        if isinstance(self.overlap_limit, str) and self.overlap_limit != "contract":
            raise ValueError(
                "overlap_limit: expected a number in (0, 1), 'contract' or None, got "
                f"{self.overlap_limit!r}"
            )
        if self.overlap_limit is not None and self.overlap_limit != "contract":
            check_in("overlap_limit", self.overlap_limit, "(0, 1)")
        check_positive("overlap_weight", self.overlap_weight)
        for name in ("lr", "boundary_weight", "temperature"):
            check_positive(name, getattr(self, name))
        check_positive("sparsity_weight", self.sparsity_weight, allow_zero=True)
        budget = self.time_budget
        if budget is not None and (
            isinstance(budget, bool)
            or not isinstance(budget, (int, float))
            or not (budget > 0 and math.isfinite(budget))
        ):
            raise ValueError(f"time_budget: expected None or seconds > 0, got {budget!r}")
        chunk = self.component_chunk
        if chunk is not None:
            check_count("component_chunk", chunk)

    def for_contract(self, contract: Contract | None = None) -> LBMaskConfig:
        """These settings with ``overlap_limit="contract"`` resolved against ``contract``'s
        gamma (the default contract when None); unchanged otherwise."""
        if self.overlap_limit != "contract":
            return self
        gamma = (contract or Contract()).gamma
        return replace(self, overlap_limit=OVERLAP_SHARE * gamma)

    @property
    def step_limit(self) -> int:
        """The most steps a run may take."""
        return self.max_steps if self.steps == "auto" else int(self.steps)
