"""Phase 3 of SAVED: LBMask, learned structured binary masks over a frozen network.

For each component k, one logit per structural unit, ``p = sigmoid(logit)``. The forward pass
uses the *hard* mask — exactly the top units of every quota block by logit, the same rule as
the final binarisation (:meth:`saved.masking.space.MaskSpace.binarise`) — with a straight-through
gradient ``hard + (p - p.detach())``, a dropped unit's forward value a tiny positive number so
that a ReLU after it passes the gradient of switching it back on
(:func:`saved.masking.trainer.straight_through`). The model's weights are frozen
(``requires_grad`` off inside :func:`saved._runtime.frozen_eval`), so backward computes
gradients for the mask logits only, never for weights; BatchNorm stays in eval mode and dropout
is off.

Loss: the objective (:mod:`saved.masking.objectives`; the boundary rows weighted by
``boundary_weight``: by default every mined boundary point and the low-margin data samples the
contract's own rule picks, :func:`saved.masking.trainer.boundary_rows`) plus
``sparsity_weight`` times the squared distance of each quota block's mean ``p`` to its kept
fraction, plus ``overlap_weight`` times a hinge on the components' pairwise Jaccard overlap
above ``overlap_limit`` (by default 0.9 x the contract's gamma).

Steps: a fixed number, or ``"auto"``: a seeded ``validation_fraction`` of the calibration
samples (with the boundary points mined from them) is held out and measured every
``eval_every`` steps, and training stops when it has not improved for ``patience``
measurements, after ``max_steps``, or when ``time_budget`` seconds are spent; the logits of the
best measurement are returned. ``stop_on="flips"`` (the default) keeps the measurement with
the smallest weighted share of held-out data samples (not mined points) whose decomposed
prediction differs from the model's, the objective breaking ties, and counts a measurement as
progress while either that share or the objective improves; ``"loss"``: the objective
alone. The objective is a poor judge of masks: on a network decomposable by construction
(benchmarks/cotrain_probe.py ``--blocks``), ``"score"``'s held-out loss was lowest at step 25,
where 36 % of the held-out rows flipped, against 4 % at step 100 with a higher loss
(docs/DECISIONS.md, LBMask). With fewer than ``MIN_SOURCES`` data samples
nothing is held out and ``"auto"`` runs ``max_steps`` (or until ``time_budget``).

Initialisation ``alpha`` in [0, 1]: ``logit = alpha * z(prior) + noise`` with ``z`` the prior's
scores standardised within each group (the seeded noise of scale 1e-3 only breaks ties); 0 is
uniform (the paper's best), 1 (the default) the prior alone. The default prior is each unit's
first-order Taylor importance for each component's score (:func:`saved.activity.taylor_scores`):
a component starts from the units its class's logit depends on, where a uniform start left the
search far from a decomposition that holds (docs/DECISIONS.md, "The Taylor prior and masks at
the BatchNorm").

Files: the settings are :mod:`saved.masking.config`, one step over the frozen model
:mod:`saved.masking.trainer`; this module runs the steps and stops them. Every name of the
three is importable from here, as before the split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._progress import progress_bar
from ..components import ClassComponents
from ..distributed import Ranks
from ..inputs import Inputs
from ..report.model import StopReason, Training
from .config import LBMaskConfig
from .space import MaskSpace
from .trainer import ACTIVATION_BUDGET as ACTIVATION_BUDGET  # still importable from here
from .trainer import MIN_SOURCES as MIN_SOURCES
from .trainer import VALIDATION_ROWS as VALIDATION_ROWS
from .trainer import MaskTrainer, initial_logits

__all__ = ["LBMaskConfig", "MaskRun", "MaskTrainer", "initial_logits", "train_masks"]


@dataclass
class MaskRun:
    """The outcome of one mask-learning run.

    ``history`` has one entry per validation measurement (``"auto"`` steps) with the step, the
    held-out flip share (``"flips"``), the held-out objective (``"validation"``) and the seconds
    spent; ``stopped`` says why the run ended: ``"steps"``
    (the fixed count), ``"converged"`` (no held-out improvement for ``patience``
    measurements), ``"max_steps"`` or ``"time_budget"``.
    """

    logits: Tensor
    steps_run: int
    best_step: int
    stopped: StopReason
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    validation_rows: Tensor | None = None  # calibration rows held out (``"auto"`` steps)

    def summary(self) -> Training:
        return Training(self.steps_run, self.best_step, self.stopped, round(self.seconds, 2))


def train_masks(
    model: nn.Module,
    calibration: Inputs,
    components: ClassComponents,
    space: MaskSpace,
    config: LBMaskConfig | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    sources: Tensor | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
    reference: Tensor | None = None,
    ranks: Ranks | None = None,
) -> MaskRun:
    """Train mask logits for every component (see the module docstring for when it stops).

    Args:
        sources: the data sample of each calibration row (see :class:`MaskTrainer`).
        callback: called as ``callback(step, logits)`` after every step (learning curves).
        reference: the model's logits on ``calibration``, if known (see :class:`MaskTrainer`).
        ranks: the process group sharing the run (:mod:`saved.distributed`); every rank
            returns the same logits, and rank 0 alone shows progress.

    Returns:
        A :class:`MaskRun`; binarise its ``[K, N]`` CPU logits with
        ``space.binarise(run.logits, config.sparsity, config.allocation)``.
    """
    config = config or LBMaskConfig()
    started = time.perf_counter()  # the prior's pass (in the trainer) counts in the budget
    trainer = MaskTrainer(
        model,
        calibration,
        components,
        space,
        config,
        seed=seed,
        device=device,
        sources=sources,
        reference=reference,
        ranks=ranks,
    )
    auto = trainer.validation_rows is not None
    progress = progress and (ranks is None or ranks.leader)
    best_flips, best_loss, lowest = math.inf, math.inf, math.inf
    best_step, best_logits = 0, trainer.logits.detach().clone()
    stopped: StopReason = "steps" if config.steps != "auto" else "max_steps"
    stale, history = 0, []
    setup = time.perf_counter() - started
    step = 0
    with trainer, progress_bar("Learning masks", config.step_limit, progress) as advance:
        while step < config.step_limit:
            trainer.step()
            step += 1
            advance(1)
            if callback is not None:
                callback(step, trainer.logits.detach())
            elapsed = time.perf_counter() - started
            if config.time_budget is not None:
                over = setup + (elapsed - setup) * (step + 1) / step > config.time_budget
                if ranks is not None:
                    over = ranks.any(over)  # clocks differ: the ranks stop together
                if over:
                    stopped = "time_budget"  # the next step would overrun the budget
            if (
                auto
                and trainer.ramped
                and (step % config.eval_every == 0 or stopped == "time_budget")
            ):
                flips, loss = trainer.validation()
                history.append(
                    {"step": step, "flips": flips, "validation": loss, "seconds": elapsed}
                )
                if config.stop_on == "loss":
                    flips = 0.0  # the objective alone decides
                lower = loss < lowest - 1e-3 * abs(lowest)
                lowest = min(lowest, loss)
                if (
                    best_step == 0
                    or flips < best_flips
                    or (flips == best_flips and loss < best_loss - 1e-3 * abs(best_loss))
                ):
                    best_flips, best_loss, best_step, stale = flips, loss, step, 0
                    best_logits = trainer.logits.detach().clone()
                elif lower:
                    stale = 0  # the objective still falls: the search goes on
                else:
                    stale += 1
                    if stale >= config.patience:
                        stopped = "converged"
            if stopped in ("converged", "time_budget"):
                break
    # no measurement yet (a time budget spent within the ramp): the masks as they stand
    logits = best_logits if auto and best_step else trainer.logits.detach()
    return MaskRun(
        logits=logits.cpu(),
        steps_run=step,
        best_step=best_step if auto and best_step else step,
        stopped=stopped,
        seconds=time.perf_counter() - started,
        history=history,
        validation_rows=trainer.validation_rows,
    )
