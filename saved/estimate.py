"""How long a decomposition will take, said before it starts.

The reference pass over the decomposition data (which :func:`saved.decompose` needs anyway)
gives the model's cost per sample ``t``. Mining then costs about ``MINING_PASSES`` passes over
the data (PGD forward + input-gradient steps, then bisection forwards over both ends of every
pair), and one LBMask step about ``STEP_PASSES`` passes over ``K * batch`` rows (forward and
mask-gradient backward of K components), plus the held-out measurements of automatic
stopping. One fixed step factor was off by 2.7x in both directions on mobilenet_v2 and MiniLM
(backward costs differ by architecture), so when mask learning looks long :func:`probe_step`
times one real step instead (:func:`saved.decompose` does; a second or two). Measured against
the time taken with benchmarks/decompose_time.py (docs/BENCHMARKS.md); with automatic
stopping the mask-learning figure is an upper bound (``max_steps``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from .activity import TAYLOR_ROWS
from .boundary import BoundaryConfig
from .components import ClassComponents
from .inputs import Inputs
from .masking.lbmask import VALIDATION_ROWS, LBMaskConfig, MaskTrainer
from .masking.space import MaskSpace

__all__ = ["PROBE_FROM", "Estimate", "estimate_seconds", "probe_step"]

#: Mask learning estimated by the step factor at or above this many seconds is timed instead.
PROBE_FROM = 10.0

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
    step_seconds: float | None = None,
) -> Estimate:
    """The estimate from the reference pass's cost per sample (seconds).

    Args:
        n: decomposition samples (before boundary points).
        mining: whether boundary points are still to be mined.
        learning: whether masks are learned (LBMask) rather than scored.
        step_seconds: one mask-learning step, timed by :func:`probe_step`; ``None``: from
            ``STEP_PASSES``.
    """
    boundary = boundary or BoundaryConfig()
    scale = (boundary.steps + boundary.max_steps) / 50  # the defaults: 20 + 30
    mined = per_sample * n * MINING_PASSES * scale if mining else 0.0
    if not learning:
        return Estimate(mined, per_sample * n * 3 * components, 0, False)
    rows = components * config.batch_size
    step = per_sample * rows * STEP_PASSES if step_seconds is None else step_seconds
    steps = config.step_limit
    measure = 0.0
    if config.steps == "auto":
        held = min(VALIDATION_ROWS, round(3 * n * config.validation_fraction))
        if step_seconds is None:
            measure = (steps // config.eval_every) * held * components * per_sample
        else:  # a measurement is forward passes only: about a third of a step per batch
            batches = math.ceil(held / config.batch_size)
            measure = (steps // config.eval_every) * batches * step_seconds / 3
    masks = step * steps + measure
    if config.prior == "taylor" and config.alpha > 0:
        # the prior's pass before the steps: a forward and backward of K masked rows per
        # calibration row it reads, about one step per batch of them
        masks += math.ceil(min(TAYLOR_ROWS, 3 * n) / config.batch_size) * step
    budget = config.time_budget
    if budget is not None:
        masks = min(masks, budget)
    return Estimate(mined, masks, steps, config.steps == "auto" or budget is not None)


def probe_step(
    model: nn.Module,
    inputs: Inputs,
    components: ClassComponents,
    space: MaskSpace,
    config: LBMaskConfig,
    *,
    device: torch.device | str | None = None,
    reference: Tensor | None = None,
) -> float:
    """Seconds of one real mask-learning step on the first rows of ``inputs``.

    Two steps run (the first warms up allocators and kernels) and the second is timed; the
    trainer works on its own logits and restores the model, so nothing is changed.
    ``reference``: the model's logits on ``inputs``, if known (not computed again).
    """
    rows = torch.arange(min(len(inputs), 2 * config.batch_size))
    # a ramp needs more steps; the start does not change a step's cost, and a prior's pass
    # would cost more than the two steps
    probe = replace(config, steps=2, ramp=0, time_budget=None, alpha=0.0)
    known = reference[rows] if reference is not None else None
    trainer = MaskTrainer(
        model, inputs.select(rows), components, space, probe, device=device, reference=known
    )
    with trainer:
        trainer.step()
        started = time.perf_counter()
        trainer.step()
        return time.perf_counter() - started
