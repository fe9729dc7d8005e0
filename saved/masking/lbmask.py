"""Phase 3 of SAVED: LBMask, learned structured binary masks over a frozen network.

For each component k, one logit per structural unit, ``p = sigmoid(logit)``. The forward pass
uses the *hard* mask — exactly the top units of every quota block by logit, the same rule as
the final binarisation (:meth:`saved.masking.space.MaskSpace.binarise`) — with a straight-through
gradient ``hard + p - p.detach()``. The model's weights are frozen (``requires_grad`` off inside
:func:`saved._runtime.frozen_eval`), so backward computes gradients for the mask logits only,
never for weights; BatchNorm stays in eval mode and dropout is off.

Loss: the objective (:mod:`saved.masking.objectives`; low-margin samples — the lowest
``boundary_quantile`` of reference margins, boundary points among them — weighted by
``boundary_weight``) plus ``sparsity_weight`` times the squared distance of each quota block's
mean ``p`` to its kept fraction.

Steps: a fixed number, or ``"auto"``: a seeded ``validation_fraction`` of the calibration
samples (with the boundary points mined from them) is held out, the objective on it is measured
every ``eval_every`` steps, and training stops when it has not improved for ``patience``
measurements, after ``max_steps``, or when ``time_budget`` seconds are spent; the logits of the
best measurement are returned. With fewer than ``MIN_SOURCES`` data samples nothing is held out
and ``"auto"`` runs ``max_steps`` (or until ``time_budget``).

Initialisation ``alpha`` in [0, 1]: ``logit = alpha * z(norm) + noise`` with ``z`` the unit weight
norms standardised within each group; 0 is uniform (the paper's best; the seeded noise of scale
1e-3 only breaks ties), 1 the magnitude prior.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from .._progress import progress_bar
from .._runtime import (
    forward_logits,
    frozen_eval,
    model_device,
    on_device,
    predict_logits,
    resolve_device,
)
from .._validation import check_count, check_in, check_positive
from ..components import ClassComponents
from ..contract import logit_margins
from ..inputs import Inputs, batch_to, trim_padding
from .objectives import OBJECTIVES, Objective, ObjectiveTargets, objective_loss
from .space import Allocation, MaskSpace

__all__ = ["LBMaskConfig", "MaskRun", "MaskTrainer", "initial_logits", "learn_masks", "train_masks"]


@dataclass(frozen=True)
class LBMaskConfig:
    """Settings of mask learning (see the module docstring). The defaults were chosen by the
    held-out study in docs/STUDY.md; docs/DECISIONS.md says why."""

    sparsity: float = 0.5
    alpha: float = 0.0
    objective: Objective = "aggregate"
    allocation: Allocation = "auto"
    steps: int | Literal["auto"] = "auto"
    max_steps: int = 400
    lr: float = 0.05
    batch_size: int = 32
    boundary_quantile: float = 0.2
    boundary_weight: float = 4.0
    sparsity_weight: float = 1.0
    temperature: float = 1.0
    validation_fraction: float = 0.2
    eval_every: int = 25
    patience: int = 3
    time_budget: float | None = None  # seconds of mask learning; None: no limit
    component_chunk: int | None = None  # None: by activation size (see _auto_chunk)

    def __post_init__(self) -> None:
        check_in("sparsity", self.sparsity, "(0, 1)")
        check_in("alpha", self.alpha, "[0, 1]")
        check_in("boundary_quantile", self.boundary_quantile, "(0, 1]")
        check_in("validation_fraction", self.validation_fraction, "(0, 1)")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {OBJECTIVES}, got {self.objective!r}")
        if self.allocation not in ("auto", "group", "kind"):
            raise ValueError(
                f"allocation: expected 'auto', 'group' or 'kind', got {self.allocation!r}"
            )
        if self.steps != "auto":
            check_count("steps", self.steps)
        for name in ("max_steps", "batch_size", "eval_every", "patience"):
            check_count(name, getattr(self, name))
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

    @property
    def step_limit(self) -> int:
        """The most steps a run may take."""
        return self.max_steps if self.steps == "auto" else int(self.steps)


def initial_logits(space: MaskSpace, k: int, alpha: float, generator: torch.Generator) -> Tensor:
    """``[K, N]`` starting logits: ``alpha`` times the standardised unit norms, plus tie-breaking
    noise of scale 1e-3 (drawn from ``generator``)."""
    prior = torch.cat(
        [
            (g.norms - g.norms.mean()) / g.norms.std().clamp_min(1e-12)
            if g.size > 1
            else torch.zeros(1)
            for g in space.groups
        ]
    )  # standardised within each group: only the ranking inside a group matters
    noise = torch.randn(k, space.num_units, generator=generator) * 1e-3
    return alpha * prior.float().expand(k, -1) + noise


@dataclass
class MaskRun:
    """The outcome of one mask-learning run.

    ``history`` has one entry per validation measurement (``"auto"`` steps) with the step, the
    held-out objective and the seconds spent; ``stopped`` says why the run ended: ``"steps"``
    (the fixed count), ``"converged"`` (no held-out improvement for ``patience``
    measurements), ``"max_steps"`` or ``"time_budget"``.
    """

    logits: Tensor
    steps_run: int
    best_step: int
    stopped: str
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    validation_rows: Tensor | None = None  # calibration rows held out (``"auto"`` steps)

    def summary(self) -> dict[str, object]:
        return {
            "steps_run": self.steps_run,
            "best_step": self.best_step,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 2),
        }


def _held_out_rows(
    sources: Tensor, fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Rows split by source sample: a sample and the boundary points mined from it stay on
    one side, so the held-out part measures samples the masks never saw."""
    unique = torch.unique(sources)
    if unique.numel() < 2:
        raise ValueError("calibration: held-out stopping needs at least two samples")
    order = unique[torch.randperm(unique.numel(), generator=generator)]
    count = min(unique.numel() - 1, max(1, round(fraction * unique.numel())))
    held = torch.isin(sources, order[:count])
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()


#: Rows of the held-out part measured at each validation (a seeded subsample beyond this).
VALIDATION_ROWS = 512
#: Fewer data samples than this: nothing is held out and ``"auto"`` runs ``max_steps``.
MIN_SOURCES = 10


class MaskTrainer:
    """One LBMask run: the frozen model, the targets and the mask logits being learned.

    Use as a context manager (the model is frozen in eval mode inside it, and restored after)
    and call :meth:`step`; :func:`train_masks` does both.

    Args:
        sources: for each calibration row, the data sample it comes from (a boundary point's
            attacked sample); keeps a sample and its boundary points on one side of the
            held-out split. ``None``: every row is its own sample.
        reference: the model's ``[rows, C]`` logits on ``calibration`` when the caller has
            them (``decompose`` does, from its own pass and boundary mining's); ``None``: one
            pass computes them.
    """

    def __init__(
        self,
        model: nn.Module,
        calibration: Inputs,
        components: ClassComponents,
        space: MaskSpace,
        config: LBMaskConfig,
        *,
        seed: int = 0,
        device: torch.device | str | None = None,
        sources: Tensor | None = None,
        reference: Tensor | None = None,
    ) -> None:
        self.config, self.space, self.components = config, space, components
        self.calibration = calibration
        self.generator = torch.Generator().manual_seed(seed)
        self.device = resolve_device(model, device)
        self.model = on_device(model, self.device)
        if reference is None:
            reference = predict_logits(self.model, calibration)
        elif reference.dim() != 2 or reference.shape[0] != len(calibration):
            raise ValueError(
                f"reference: expected [{len(calibration)}, C] logits of the calibration rows, "
                f"got {tuple(reference.shape)}"
            )
        self.reference = reference.detach().float().cpu()
        if self.reference.shape[1] != components.num_classes:
            raise ValueError(
                f"components: built for {components.num_classes} classes, the model has "
                f"{self.reference.shape[1]}"
            )
        margins = logit_margins(self.reference)
        self.boundary = margins <= torch.quantile(margins, config.boundary_quantile)
        self.weights = torch.where(self.boundary, config.boundary_weight, 1.0)
        targets = components.binary_targets(self.reference.argmax(1)).float()
        positives = targets.sum(0)
        negatives = targets.shape[0] - positives
        self.pos_weight = (negatives / positives.clamp_min(1)).clamp(1.0, 100.0).to(self.device)
        self.scale = float(self.reference.std().clamp_min(1e-6))
        n = len(calibration)
        if sources is None:
            sources = torch.arange(n)
        if sources.shape != (n,):
            raise ValueError(f"sources: expected one sample index per row ({n})")
        if config.steps == "auto" and torch.unique(sources).numel() >= MIN_SOURCES:
            self.train_rows, held = _held_out_rows(
                sources, config.validation_fraction, self.generator
            )
            if held.numel() > VALIDATION_ROWS:
                pick = torch.randperm(held.numel(), generator=self.generator)[:VALIDATION_ROWS]
                held = held[pick.sort().values]
            self.validation_rows: Tensor | None = held
        else:
            self.train_rows, self.validation_rows = torch.arange(n), None
        k = components.num_components
        start = initial_logits(space, k, config.alpha, self.generator)
        self.logits = start.to(self.device).requires_grad_(True)
        self.optimiser = torch.optim.Adam([self.logits], lr=config.lr)
        blocks = space.quota_blocks(config.allocation)
        keeps = space.quota_keeps(config.sparsity, config.allocation)
        self._block_columns = [
            torch.cat([torch.arange(c.start, c.stop) for _, c in block]).to(self.device)
            for block in blocks
        ]
        self.keep_fraction = torch.tensor(
            [
                keep / columns.numel()
                for keep, columns in zip(keeps, self._block_columns, strict=True)
            ],
            device=self.device,
        )
        self._frozen: contextlib.AbstractContextManager[nn.Module] | None = None
        self.chunk = config.component_chunk or _auto_chunk(self.model, space, k, config.batch_size)

    def __enter__(self) -> MaskTrainer:
        self._frozen = frozen_eval(self.model)
        self._frozen.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._frozen is not None
        self._frozen.__exit__(*exc)  # type: ignore[arg-type]

    def _targets(self, rows: Tensor) -> ObjectiveTargets:
        return ObjectiveTargets(
            reference=self.reference[rows].to(self.device),
            weights=self.weights[rows].to(self.device),
            boundary=self.boundary[rows].to(self.device),
            pos_weight=self.pos_weight,
            scale=self.scale,
        )

    def _component_logits(self, masks: Tensor, rows: Tensor) -> Tensor:
        """``[K, B, C]`` logits of the K masked models on the calibration ``rows``."""
        batch = trim_padding(self.calibration.batch(rows, self.device))
        k = masks.shape[0]
        parts = []
        for first in range(0, k, self.chunk):
            members = masks[first : first + self.chunk]
            out = self.space.run(self.model, members, batch)
            parts.append(out.view(members.shape[0], -1, out.shape[-1]))
        return torch.cat(parts)

    def _loss(self, logits: Tensor, rows: Tensor) -> Tensor:
        return objective_loss(
            self.config.objective,
            logits.float(),
            self._targets(rows),
            self.components,
            temperature=self.config.temperature,
        )

    def step(self) -> float:
        """One optimisation step on a random batch of the training rows; returns the loss."""
        config = self.config
        size = min(config.batch_size, self.train_rows.numel())
        pick = torch.randint(0, self.train_rows.numel(), (size,), generator=self.generator)
        rows = self.train_rows[pick]
        self.optimiser.zero_grad(set_to_none=True)
        probs = torch.sigmoid(self.logits)
        hard = self.space.binarise(self.logits.detach(), config.sparsity, config.allocation)
        masks = hard.float() + probs - probs.detach()  # straight-through: hard forward
        loss = self._loss(self._component_logits(masks, rows), rows)
        kept = torch.stack([probs[:, columns].mean(1) for columns in self._block_columns], 1)
        penalty = (kept - self.keep_fraction).pow(2).sum(1).mean()
        total = loss + config.sparsity_weight * penalty
        total.backward()
        self.optimiser.step()
        return float(total.detach())

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The objective of the current hard masks on the held-out rows."""
        if self.validation_rows is None:
            raise ValueError("validation_loss: only runs with steps='auto' hold rows out")
        config = self.config
        masks = self.space.binarise(self.logits, config.sparsity, config.allocation).float()
        total, weight = 0.0, 0.0
        for start in range(0, self.validation_rows.numel(), config.batch_size):
            rows = self.validation_rows[start : start + config.batch_size]
            share = float(self.weights[rows].sum())
            total += float(self._loss(self._component_logits(masks, rows), rows)) * share
            weight += share
        return total / weight


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
) -> MaskRun:
    """Train mask logits for every component (see the module docstring for when it stops).

    Args:
        sources: the data sample of each calibration row (see :class:`MaskTrainer`).
        callback: called as ``callback(step, logits)`` after every step (learning curves).
        reference: the model's logits on ``calibration``, if known (see :class:`MaskTrainer`).

    Returns:
        A :class:`MaskRun`; binarise its ``[K, N]`` CPU logits with
        ``space.binarise(run.logits, config.sparsity, config.allocation)``.
    """
    config = config or LBMaskConfig()
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
    )
    auto = trainer.validation_rows is not None
    best_loss, best_step, best_logits = math.inf, 0, trainer.logits.detach().clone()
    stale, stopped, history = 0, "steps" if config.steps != "auto" else "max_steps", []
    started = time.perf_counter()
    step = 0
    with trainer, progress_bar("Learning masks", config.step_limit, progress) as advance:
        while step < config.step_limit:
            trainer.step()
            step += 1
            advance(1)
            if callback is not None:
                callback(step, trainer.logits.detach())
            elapsed = time.perf_counter() - started
            if config.time_budget is not None and elapsed * (step + 1) / step > config.time_budget:
                stopped = "time_budget"  # the next step would overrun the budget
            if auto and (step % config.eval_every == 0 or stopped == "time_budget"):
                loss = trainer.validation_loss()
                history.append({"step": step, "validation": loss, "seconds": elapsed})
                if best_step == 0 or loss < best_loss - 1e-3 * abs(best_loss):
                    best_loss, best_step, stale = loss, step, 0
                    best_logits = trainer.logits.detach().clone()
                else:
                    stale += 1
                    if stale >= config.patience:
                        stopped = "converged"
            if stopped in ("converged", "time_budget"):
                break
    logits = best_logits if auto else trainer.logits.detach()
    return MaskRun(
        logits=logits.cpu(),
        steps_run=step,
        best_step=best_step if auto else step,
        stopped=stopped,
        seconds=time.perf_counter() - started,
        history=history,
        validation_rows=trainer.validation_rows,
    )


#: Activation elements one masked pass may produce before components are split into chunks.
ACTIVATION_BUDGET = 1 << 22


def _auto_chunk(model: nn.Module, space: MaskSpace, k: int, batch_size: int) -> int:
    """Components per pass: all K unless their activations exceed ``ACTIVATION_BUDGET``.

    Measured with benchmarks/lbmask.py (docs/BENCHMARKS.md): a pass over K * B rows costs less
    than K passes while its activations stay cache-sized (the digits MLP: all 10 components
    together, 0.78 of K separate passes), and more beyond (a small CNN with 10 x 64 rows: 1.94
    jointly, 0.95 in chunks of five).
    """
    elements = 0

    def count(module: nn.Module, inputs: object, output: object) -> None:
        nonlocal elements
        if isinstance(output, Tensor):
            elements += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with frozen_eval(model), torch.no_grad():
            example = space.example
            forward_logits(model, batch_to(example, model_device(model)))
    finally:
        for hook in hooks:
            hook.remove()
    rows = next(iter(example.values())).shape[0] if isinstance(example, dict) else example.shape[0]
    per_component = elements / rows * batch_size
    largest = max(1, min(k, int(ACTIVATION_BUDGET // max(per_component, 1))))
    # equal chunks: uneven ones alternate two batch shapes, which measured slower for convs
    return math.ceil(k / math.ceil(k / largest))


def learn_masks(
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
) -> Tensor:
    """:func:`train_masks`, returning only the final ``[K, N]`` logits (CPU).

    Binarise with ``space.binarise(logits, config.sparsity, config.allocation)``. The model is
    left unchanged.
    """
    return train_masks(
        model,
        calibration,
        components,
        space,
        config,
        seed=seed,
        device=device,
        progress=progress,
        sources=sources,
    ).logits
