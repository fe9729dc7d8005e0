"""How long a decomposition will take, said before it starts.

The reference pass over the decomposition data (which :func:`saved.decompose` needs anyway)
gives the model's cost per sample ``t``. Mining then costs about ``MINING_PASSES`` passes over
the data (PGD forward + input-gradient steps, then bisection forwards over both ends of every
pair), and one LBMask step about ``STEP_PASSES`` passes over ``K * batch`` rows (forward and
mask-gradient backward of K components), plus the held-out measurements of automatic
stopping. The factors were measured on the digits MLP, MiniLM and mobilenet_v2
(benchmarks/decompose_time.py, docs/BENCHMARKS.md); the estimate is rough — within a factor
of two — and, with automatic stopping, an upper bound on mask learning.
"""

from __future__ import annotations

from dataclasses import dataclass

from .boundary import BoundaryConfig
from .lbmask import VALIDATION_ROWS, LBMaskConfig

__all__ = ["Estimate", "estimate_seconds"]

#: Passes over the data that boundary mining costs (measured; see the module docstring).
MINING_PASSES = 40.0
#: Passes over K * batch rows that one LBMask step costs (measured).
STEP_PASSES = 4.0


@dataclass(frozen=True)
class Estimate:
    """Seconds each phase of :func:`saved.decompose` is expected to take."""

    mining: float
    masks: float  # at most: automatic stopping usually ends sooner
    steps: int  # the most mask-learning steps
    automatic: bool

    @property
    def total(self) -> float:
        return self.mining + self.masks

    def describe(self) -> str:
        masks = f"mask learning {'up to ' if self.automatic else ''}{_duration(self.masks)}"
        parts = [f"mining {_duration(self.mining)}"] if self.mining else []
        parts.append(f"{masks} ({self.steps} steps)")
        return f"about {_duration(self.total)}: " + ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def estimate_seconds(
    per_sample: float,
    n: int,
    components: int,
    config: LBMaskConfig,
    boundary: BoundaryConfig | None,
    *,
    mining: bool,
    learning: bool,
) -> Estimate:
    """The estimate from the reference pass's cost per sample (seconds).

    Args:
        n: decomposition samples (before boundary points).
        mining: whether boundary points are still to be mined.
        learning: whether masks are learned (LBMask) rather than scored.
    """
    boundary = boundary or BoundaryConfig()
    scale = (boundary.steps + boundary.max_steps) / 50  # the defaults: 20 + 30
    mined = per_sample * n * MINING_PASSES * scale if mining else 0.0
    if not learning:
        return Estimate(mined, per_sample * n * 3 * components, 0, False)
    rows = components * config.batch_size
    step = per_sample * rows * STEP_PASSES
    steps = config.step_limit
    measure = 0.0
    if config.steps == "auto":
        held = min(VALIDATION_ROWS, round(3 * n * config.validation_fraction))
        measure = (steps // config.eval_every) * held * components * per_sample
    budget = config.time_budget
    masks = step * steps + measure
    if budget is not None:
        masks = min(masks, budget)
    return Estimate(mined, masks, steps, config.steps == "auto" or budget is not None)
