"""Algorithm 1 of SAVED behind two calls: :func:`decompose` (Phases 1-3) and :func:`evaluate`
(Phase 4); :func:`check` does both."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from rich.console import Console
from torch import Tensor, nn

from ._hashing import inputs_digest
from ._runtime import on_device, predict_logits, resolve_device
from .baselines import MaskContext, magnitude, mi, random, wanda, wanda_structured
from .boundary import (
    BoundaryConfig,
    BoundarySet,
    calibration_set,
    calibration_sources,
    mine_boundary,
)
from .components import Aggregator, ClassComponents
from .contract import Contract
from .decomposition import Decomposition
from .estimate import PROBE_FROM, Estimate, estimate_seconds, probe_step
from .evaluation import assess
from .holdout import holdout
from .inputs import (
    DEFAULT_BATCH_SIZE,
    STREAM_BATCHES,
    Batch,
    Inputs,
    iter_inputs,
    match_dtype,
    sample_inputs,
)
from .masking.adaptive import adaptive_sparsity
from .masking.lbmask import LBMaskConfig, train_masks
from .masking.units import MaskSpace, UnitSpace
from .masking.weights import WeightSpace
from .report import ContractReport, SampleSplit

__all__ = ["METHODS", "check", "decompose", "evaluate"]

Method = Literal[
    "lbmask", "lbmask-unstructured", "wanda", "wanda-structured", "mi", "magnitude", "random"
]


@dataclasses.dataclass(frozen=True)
class _Method:
    """How one method makes masks: over structural units or single weights; learned by LBMask
    (``masks`` None) or scored by a baseline; whether it needs the calibration set (mined
    boundary points)."""

    space: Literal["units", "weights"]
    masks: Callable[..., Tensor] | None
    calibration: bool


_REGISTRY: dict[str, _Method] = {
    "lbmask": _Method("units", None, True),
    "lbmask-unstructured": _Method("weights", None, True),
    "wanda": _Method("weights", wanda.masks, True),
    "wanda-structured": _Method("units", wanda_structured.masks, True),
    "mi": _Method("units", mi.masks, True),
    "magnitude": _Method("units", magnitude.masks, False),
    "random": _Method("units", random.masks, False),
}
#: Every method, with whether its supports are weights (unstructured) or structural units.
METHODS: dict[str, Literal["units", "weights"]] = {k: m.space for k, m in _REGISTRY.items()}


def decompose(
    model: nn.Module,
    data: object,
    *,
    method: Method | str = "lbmask",
    contract: Contract | None = None,
    sparsity: float | Literal["auto"] | None = None,
    alpha: float | None = None,
    labels: object = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
    positive_sets: tuple[tuple[int, ...], ...] | None = None,
    aggregator: Aggregator = "paper",
    boundary: BoundaryConfig | None = None,
    lbmask: LBMaskConfig | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    mined: BoundarySet | None = None,
    max_samples: int = 10_000,
    keep: Tensor | None = None,
    time_budget: float | None = None,
    on_estimate: Callable[[Estimate], None] | None = None,
) -> Decomposition:
    """Split ``model`` into class-wise components (SAVED Phases 1-3).

    Phase 1 builds one component per class (or per positive class set), Phase 2 mines boundary
    points around ``data`` and forms the calibration set, Phase 3 learns (``lbmask``) or scores
    (baselines) masks at ``sparsity``. ``model`` is left exactly as it was.

    Args:
        method: one of :data:`METHODS`.
        contract: recorded with the decomposition (the thresholds are applied by
            :func:`evaluate`).
        sparsity: the target fraction of units each component drops, in (0, 1); or
            ``"auto"`` (LBMask only): masks are learned at ``lbmask.sparsity`` and each
            component then gets the largest sparsity >= ``contract.eta`` that keeps the
            disagreement on held-out calibration samples within ``contract.eps / 2``
            (:mod:`saved.masking.adaptive`). ``None``: ``lbmask.sparsity`` (0.5 by default).
        alpha: LBMask initialisation, 0 uniform to 1 magnitude prior. ``None``:
            ``lbmask.alpha`` (0 by default).
        boundary, lbmask: full settings of mining and mask learning. A ``sparsity`` or
            ``alpha`` given both here and, differently, in ``lbmask`` is an error: the call
            would otherwise have to ignore one of them.
        mined: boundary points already mined on this model and ``data`` (the result of
            :func:`saved.boundary.mine_boundary`; ``data`` then holds at most ``max_samples``),
            to share one mining run between methods; mined here when omitted.
        max_samples: decomposition uses at most this many samples of ``data`` (a seeded
            uniform sample; a DataLoader is read in one pass, never held whole). Mining and
            mask learning need the boundary's neighbourhood, not every sample; the contract
            is then checked by :func:`evaluate` — on samples it did not use, when the
            data came from :func:`saved.holdout`.
        keep: a boolean mask over the samples of ``data``: decompose on those only (the
            decomposition part of :func:`saved.holdout`).
        time_budget: seconds for the whole call; mask learning stops (keeping its best
            masks so far) when the rest would overrun it. Mining is not interrupted.
        on_estimate: called with the :class:`saved.estimate.Estimate` before the long work
            starts; with ``progress`` the estimate is also printed (on stderr) when it is
            10 s or more.
    """
    if method not in _REGISTRY:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    chosen = _REGISTRY[method]
    config = _merged_config(lbmask, sparsity, alpha)
    if chosen.space == "weights" and lbmask is None:
        # per-weight masks keep each weight tensor's share, like the paper's unstructured
        # baselines; one quota across all weights of the model is not what they compare with
        config = dataclasses.replace(config, allocation="group")
    adaptive = sparsity == "auto"
    if adaptive and chosen.masks is not None:
        raise ValueError(f"sparsity: 'auto' needs learned masks (lbmask), not {method!r}")
    contract = contract or Contract()
    inputs = match_dtype(
        sample_inputs(data, labels, max_samples=max_samples, seed=seed, keep=keep), model
    )
    run_on = resolve_device(model, device)
    started = time.perf_counter()
    reference = predict_logits(model, inputs, device=run_on, batch_size=batch_size)
    per_sample = (time.perf_counter() - started) / len(inputs)
    labels_seen = inputs.labels
    if labels_seen is not None and (
        int(labels_seen.min()) < 0 or int(labels_seen.max()) >= reference.shape[1]
    ):
        raise ValueError(f"labels: class indices outside [0, {reference.shape[1]})")
    components = ClassComponents(reference.shape[1], positive_sets, aggregator)
    example: Batch = inputs.batch(slice(0, 2))
    space: MaskSpace = (
        WeightSpace.of(model, example)
        if chosen.space == "weights"
        else UnitSpace.of(model, example)
    )
    k = components.num_components
    # the reference logits of the data are computed once, above; the calibration rows' are
    # those plus the boundary points' (recorded by mining), so mask learning computes none
    calibration, sources = inputs, None
    calibration_reference: Tensor | None = reference
    if mined is not None and (len(mined) and int(mined.source.max()) >= len(inputs)):
        raise ValueError(
            f"mined: its samples index {int(mined.source.max()) + 1} data rows, "
            f"but the data has {len(inputs)}; mine it on the same data"
        )

    def _estimate(step_seconds: float | None = None) -> Estimate:
        return estimate_seconds(
            per_sample,
            len(inputs),
            k,
            config,
            boundary,
            mining=chosen.calibration and mined is None,
            learning=chosen.masks is None,
            step_seconds=step_seconds,
        )

    estimate = _estimate()
    if estimate.masks >= PROBE_FROM and chosen.masks is None:
        seconds = probe_step(
            model, inputs, components, space, config, device=run_on, reference=reference
        )
        estimate = _estimate(seconds)
    if on_estimate is not None:
        on_estimate(estimate)
    if progress and estimate.total >= 10:
        Console(stderr=True).print(f"[dim]decompose ({method}): {estimate.describe()}[/dim]")
    if chosen.calibration and mined is None:
        mined = mine_boundary(
            model,
            inputs,
            boundary,
            batch_size=batch_size,
            device=run_on,
            seed=seed,
            progress=progress,
            reference=reference,
        )
    if chosen.calibration and mined is not None and bool(mined.refined.any()):
        calibration = calibration_set(inputs, mined, model)
        sources = calibration_sources(len(inputs), mined)
        points = mined.point_logits()
        calibration_reference = torch.cat([reference, points]) if points is not None else None
    training: dict[str, Any] = {}
    ranking: Tensor | None = None
    if time_budget is not None:
        left = time_budget - (time.perf_counter() - started)
        budget = max(left, 1e-3) if config.time_budget is None else min(left, config.time_budget)
        config = dataclasses.replace(config, time_budget=max(budget, 1e-3))
    if chosen.masks is None:
        run = train_masks(
            model,
            calibration,
            components,
            space,
            config,
            seed=seed,
            device=run_on,
            progress=progress,
            sources=sources,
            reference=calibration_reference,
        )
        training = run.summary()
        rates: float | list[float] = config.sparsity
        if adaptive:
            rates = adaptive_sparsity(
                model,
                space,
                components,
                run.logits,
                _held_out_samples(calibration, len(inputs), run.validation_rows),
                contract,
                allocation=config.allocation,
                device=run_on,
            )
        masks = space.binarise(run.logits, rates, config.allocation)
        ranking = run.logits
    else:
        context = MaskContext(model, calibration, components, run_on, batch_size)
        rates = config.sparsity
        masks = chosen.masks(space, k, rates, seed=seed, context=context)
    metadata: dict[str, Any] = {
        "seconds": round(time.perf_counter() - started, 2),
        "estimate_seconds": round(estimate.total, 1),
        "data_sha256": inputs_digest(inputs),
        "n_samples": len(inputs),
        "contract": contract.to_dict(),
        "seed": seed,
        "device": str(run_on),
        "config": {
            "alpha": config.alpha,
            "lbmask": dataclasses.asdict(config),
            "boundary": dataclasses.asdict(boundary or BoundaryConfig()),
        },
    }
    if training:
        metadata["training"] = training
    return Decomposition(model, space, components, masks, method, rates, metadata, ranking)


def _merged_config(
    lbmask: LBMaskConfig | None,
    sparsity: float | Literal["auto"] | None,
    alpha: float | None,
) -> LBMaskConfig:
    """``lbmask`` (or the defaults) with ``sparsity`` and ``alpha`` filled in; each may be
    given once, here or in ``lbmask``, or twice with the same value."""
    config = lbmask or LBMaskConfig()
    if sparsity is not None and sparsity != "auto":
        _agree("sparsity", sparsity, lbmask)
        config = dataclasses.replace(config, sparsity=sparsity)
    if alpha is not None:
        _agree("alpha", alpha, lbmask)
        config = dataclasses.replace(config, alpha=alpha)
    return config


def _agree(name: str, value: float, lbmask: LBMaskConfig | None) -> None:
    if lbmask is not None and getattr(lbmask, name) != value:
        raise ValueError(
            f"{name}: decompose({name}={value!r}) and lbmask.{name}={getattr(lbmask, name)!r} "
            "disagree; give it in one place"
        )


def _held_out_samples(calibration: Inputs, n_data: int, rows: Tensor | None) -> Inputs:
    """The data samples among the calibration rows mask learning held out (all calibration
    data samples when it held none out: fixed steps)."""
    if rows is not None:
        real = rows[rows < n_data]
        if real.numel() >= 10:
            return calibration.select(real)
        return calibration.select(rows)
    return calibration.select(torch.arange(min(n_data, len(calibration))))


def evaluate(
    model: nn.Module,
    decomposition: Decomposition,
    data: object,
    contract: Contract | None = None,
    labels: object = None,
    *,
    device: torch.device | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    keep: Tensor | None = None,
    split: SampleSplit | None = None,
) -> ContractReport:
    """Check ``decomposition`` against ``contract`` on ``data`` (SAVED Phase 4).

    ``data`` is read in chunks of a few batches (a DataLoader lazily), so memory holds one
    chunk plus the ``[n, C]`` reference logits, whatever ``n`` is. The bound is valid only
    for samples the decomposition did not learn from: :func:`check` and :func:`saved.holdout`
    arrange that.

    Args:
        keep: a boolean mask over the samples of ``data``: evaluate those only (the
            evaluation part of :func:`saved.holdout`).
        split: which samples decomposed and which certify, recorded in the report.
    """
    if decomposition.model is not model:
        raise ValueError("decomposition: it was made for a different model object")
    contract = contract or Contract(**decomposition.metadata.get("contract", {}))
    run_on = resolve_device(model, device)
    runner = on_device(model, run_on)  # one copy for all chunks when the device differs
    references, decomposed, label_rows = _Rows(), _Rows(), _Rows()
    chunks = iter_inputs(data, labels, chunk_size=STREAM_BATCHES * batch_size, keep=keep)
    for chunk in chunks:
        references.add(predict_logits(runner, chunk, device=run_on, batch_size=batch_size))
        decomposed.add(
            decomposition.predict(chunk, device=run_on, batch_size=batch_size, runner=runner)
        )
        if chunk.labels is not None:
            label_rows.add(chunk.labels)
    space = decomposition.space
    return assess(
        contract,
        references.all(),
        decomposed.all(),
        decomposition.supports,
        # sizes in parameters: with per-component sparsities or kind-wide quotas, layers keep
        # different shares of their units, and a unit's cost differs between layers
        unit_weights=space.unit_params if isinstance(space, UnitSpace) else None,
        labels=label_rows.all() if len(label_rows) else None,
        method=decomposition.method,
        split=split,
        training=decomposition.metadata.get("training"),
    )


class _Rows:
    """Tensors appended along dim 0 into one buffer that doubles when full.

    Why not a list and ``torch.cat``: per-chunk result tensors are small and live to the end,
    and glibc's allocator places each one above the large input chunk freed before it, so the
    heap cannot shrink — measured with benchmarks/streaming.py, 139 MB of growth over 100,000
    Fashion-MNIST images with a list, against about 1 MB of results. A few large buffers leave
    no such pins.
    """

    def __init__(self) -> None:
        self.buffer: Tensor | None = None
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, rows: Tensor) -> None:
        if self.buffer is None:
            self.buffer = torch.empty((max(1024, rows.shape[0]), *rows.shape[1:]), dtype=rows.dtype)
        elif self.size + rows.shape[0] > self.buffer.shape[0]:
            grown = torch.empty(
                (max(2 * self.buffer.shape[0], self.size + rows.shape[0]), *rows.shape[1:]),
                dtype=rows.dtype,
            )
            grown[: self.size] = self.buffer[: self.size]
            self.buffer = grown
        self.buffer[self.size : self.size + rows.shape[0]] = rows
        self.size += rows.shape[0]

    def all(self) -> Tensor:
        assert self.buffer is not None, "no rows were added"
        return self.buffer[: self.size].clone()


def check(
    model: nn.Module,
    data: object,
    *,
    labels: object = None,
    calibration: object = None,
    calibration_labels: object = None,
    evaluation_fraction: float = 0.5,
    same_samples: bool = False,
    contract: Contract | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **kwargs: Any,
) -> ContractReport:
    """:func:`decompose` then :func:`evaluate`, certifying on samples the decomposition never
    saw (:func:`saved.holdout`).

    By default a seeded ``evaluation_fraction`` of ``data`` (stratified by the reference
    prediction) is held out to certify and the rest decomposes; with ``calibration=`` that
    data decomposes and all of ``data`` certifies; ``same_samples=True`` is the paper's literal
    Algorithm 1 (labelled in the report: its bound is not valid). ``batch_size`` applies to
    every step (the split, decomposition and evaluation); other keyword arguments go to
    :func:`decompose`.
    """
    contract = contract or Contract()
    plan = holdout(
        model,
        data,
        labels,
        calibration=calibration,
        calibration_labels=calibration_labels,
        evaluation_fraction=evaluation_fraction,
        same_samples=same_samples,
        seed=seed,
        device=device,
        batch_size=batch_size,
    )
    decomposition = decompose(
        model,
        plan.decompose_data,
        labels=plan.decompose_labels,
        keep=plan.decompose_keep,
        contract=contract,
        device=device,
        seed=seed,
        batch_size=batch_size,
        **kwargs,
    )
    return evaluate(
        model,
        decomposition,
        data,
        contract,
        labels,
        device=device,
        batch_size=batch_size,
        keep=plan.evaluate_keep,
        split=plan.split,
    )
