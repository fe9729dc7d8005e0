"""Algorithm 1 of SAVED behind two calls: :func:`decompose` (Phases 1-3) and :func:`evaluate`
(Phase 4); :func:`check` does both."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from rich.console import Console
from torch import Tensor, nn

from ._hashing import InputsHasher, inputs_digest
from ._methods import METHODS, Method, make_masks, merged_config, method_spec
from ._rows import GrowingRows
from ._runtime import Reference, on_device, predict_logits, resolve_device
from .boundary import (
    BoundaryConfig,
    BoundarySet,
    calibration_set,
    calibration_sources,
    mine_boundary,
)
from .components import Aggregator, ClassComponents
from .contract import Contract
from .decomposition import Decomposition, Record
from .distributed import ranks_for
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
    sample_with_positions,
)
from .masking.lbmask import LBMaskConfig
from .masking.trainer import auto_chunk
from .masking.units import MaskSpace, UnitSpace
from .masking.weights import WeightSpace
from .profile import block_profile, separation
from .report import ContractReport, SampleSplit

__all__ = ["METHODS", "LittleDataWarning", "check", "decompose", "evaluate"]

#: Fewer decomposition samples per class than this draws :class:`LittleDataWarning`. On the
#: digits MLP certified on digits it never saw (docs/STUDY.md, Q6, mean of 5 seeds), held-out
#: Dis with the defaults is 0.08-0.10 below it (7.5 and 15 per class) and 0.05-0.07 from it on
#: (30 to 120 per class), whether the samples are the model's training samples or unseen ones.
MIN_SAMPLES_PER_CLASS = 30


class LittleDataWarning(UserWarning):
    """The masks are learned on few samples per class: held-out disagreement is then higher
    than with more decomposition data (docs/STUDY.md, Q6)."""


def _warn_little_data(n: int, classes: int) -> None:
    if n < MIN_SAMPLES_PER_CLASS * classes:
        warnings.warn(
            f"decompose: {n} samples for {classes} classes ({n / classes:.1f} per class); "
            f"masks learned on fewer than {MIN_SAMPLES_PER_CLASS} per class disagree more "
            f"on unseen samples (docs/STUDY.md, Q6): pass at least "
            f"{MIN_SAMPLES_PER_CLASS * classes} samples if you have them",
            LittleDataWarning,
            stacklevel=3,
        )


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
    distributed: bool | None = None,
    reference: Reference | None = None,
) -> Decomposition:
    """Split ``model`` into class-wise components (SAVED Phases 1-3).

    Phase 1 builds one component per class (or per positive class set), Phase 2 mines boundary
    points around ``data`` and forms the calibration set, Phase 3 learns (``lbmask``) or scores
    (baselines) masks at ``sparsity``. ``model`` is left exactly as it was.

    Args:
        method: one of :data:`METHODS`.
        contract: recorded with the decomposition (the thresholds are applied by
            :func:`evaluate`); LBMask's overlap hinge (``lbmask.overlap_limit="contract"``,
            the default) aims below its gamma.
        sparsity: the target fraction of units each component drops, in (0, 1); or
            ``"auto"`` (LBMask only): masks are learned at ``lbmask.sparsity`` and each
            component then gets the largest sparsity >= ``contract.eta`` that keeps the
            disagreement on held-out calibration samples within ``contract.eps / 2``
            (:mod:`saved.masking.adaptive`). ``None``: ``lbmask.sparsity`` (0.5 by default).
        alpha: LBMask initialisation, 0 uniform to 1 the prior alone (``lbmask.prior``,
            the Taylor prior by default). ``None``: ``lbmask.alpha`` (1 by default).
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
        distributed: split LBMask's components across the ranks of torch.distributed
            (:mod:`saved.distributed`): ``None`` when a group with more than one rank is
            initialised, ``True`` also initialises one from torchrun's environment, ``False``
            never. Every rank must hold the same model and data, and gets the same
            decomposition, bit for bit equal to a single process's.
        reference: the model's logits of the samples of ``data`` (those ``keep`` selects,
            before the ``max_samples`` sample is drawn), already computed (by
            :func:`saved.holdout`); computed here when omitted.
    """
    chosen = method_spec(method)
    config = merged_config(lbmask, sparsity, alpha)
    if chosen.space == "weights" and lbmask is None:
        # per-weight masks keep each weight tensor's share, like the paper's unstructured
        # baselines; one quota across all weights of the model is not what they compare with
        config = dataclasses.replace(config, allocation="group")
    adaptive = sparsity == "auto"
    if adaptive and chosen.masks is not None:
        raise ValueError(f"sparsity: 'auto' needs learned masks (lbmask), not {method!r}")
    contract = contract or Contract()
    config = config.for_contract(contract)  # the overlap hinge aims below this contract's gamma
    sampled, positions, total = sample_with_positions(
        data, labels, max_samples=max_samples, seed=seed, keep=keep
    )
    inputs = match_dtype(sampled, model)
    digest = inputs_digest(inputs)  # once: the record's, and under ranks the same-data check
    ranks, run_on = ranks_for(distributed, resolve_device(model, device))
    if ranks is not None:
        ranks.check_same(model, digest)
        progress = progress and ranks.leader
    started = time.perf_counter()
    if reference is None:
        logits = predict_logits(model, inputs, device=run_on, batch_size=batch_size)
        per_sample = (time.perf_counter() - started) / len(inputs)
    elif len(reference.logits) != total:
        raise ValueError(
            f"reference: {len(reference.logits)} rows of logits for the {total} samples of the data"
        )
    else:
        logits, per_sample = reference.logits[positions], reference.seconds_per_sample
    labels_seen = inputs.labels
    if labels_seen is not None and (
        int(labels_seen.min()) < 0 or int(labels_seen.max()) >= logits.shape[1]
    ):
        raise ValueError(f"labels: class indices outside [0, {logits.shape[1]})")
    components = ClassComponents(logits.shape[1], positive_sets, aggregator)
    if chosen.masks is None:  # learned masks
        _warn_little_data(len(inputs), logits.shape[1])
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
    calibration_reference: Tensor | None = logits
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
            model, inputs, components, space, config, device=run_on, reference=logits
        )
        estimate = _estimate(seconds)
    if ranks is not None:  # this rank's share of mining's batches and of the component chunks
        batches = math.ceil(len(inputs) / batch_size)
        chunks = math.ceil(k / (config.component_chunk or auto_chunk(model, space, k, config)))
        estimate = dataclasses.replace(
            estimate,
            mining=estimate.mining * math.ceil(batches / ranks.world) / batches,
            masks=estimate.masks * math.ceil(chunks / ranks.world) / chunks,
        )
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
            reference=logits,
            distributed=ranks is not None,
        )
    if chosen.calibration and mined is not None and bool(mined.refined.any()):
        calibration = calibration_set(inputs, mined, model)
        sources = calibration_sources(len(inputs), mined)
        points = mined.point_logits()
        calibration_reference = torch.cat([logits, points]) if points is not None else None
    if time_budget is not None:
        left = time_budget - (time.perf_counter() - started)
        budget = max(left, 1e-3) if config.time_budget is None else min(left, config.time_budget)
        config = dataclasses.replace(config, time_budget=max(budget, 1e-3))
    made = make_masks(
        chosen,
        model,
        space,
        components,
        calibration,
        config,
        n_data=len(inputs),
        adaptive=contract if adaptive else None,
        sources=sources,
        reference=calibration_reference,
        device=run_on,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        ranks=ranks,
    )
    metadata: Record = {
        "seconds": round(time.perf_counter() - started, 2),
        "estimate_seconds": round(estimate.total, 1),
        "data_sha256": digest,
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
    if made.training is not None:
        metadata["training"] = made.training.to_dict()
    if ranks is not None:
        metadata["distributed"] = ranks.summary()
        metadata = ranks.from_leader(metadata)  # rank 0's clock: the same record everywhere
    return Decomposition(
        model, space, components, made.masks, method, made.rates, metadata, made.ranking
    )


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
    distributed: bool | None = None,
    reference: Tensor | None = None,
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
        distributed: shard the data across the ranks of torch.distributed (as in
            :func:`decompose`): each rank runs every ``world``-th chunk, and every rank
            returns the same report, equal to a single process's.
        reference: ``[n, C]``, the model's logits of the evaluated samples (those ``keep``
            selects), already computed (by :func:`saved.holdout`); the model then runs only
            as the components. Computed here, chunk by chunk, when omitted.
    """
    if decomposition.model is not model:
        raise ValueError("decomposition: it was made for a different model object")
    contract = contract or Contract(**decomposition.metadata.get("contract", {}))
    ranks, run_on = ranks_for(distributed, resolve_device(model, device))
    runner = on_device(model, run_on)  # one copy for all chunks when the device differs
    references, decomposed, label_rows = GrowingRows(), GrowingRows(), GrowingRows()
    chunks = iter_inputs(data, labels, chunk_size=STREAM_BATCHES * batch_size, keep=keep)
    classes = decomposition.components.num_classes
    seen = InputsHasher()  # under ranks: that every rank read the same samples
    batch_index = row = 0
    for chunk in chunks:
        # alone, the whole chunk; under ranks, its batches dealt out one by one (the same
        # batches as alone, so the same logits; a chunk each would leave ranks idle)
        parts = [chunk] if ranks is None else list(_batches_of(chunk, batch_size))
        for part in parts:
            if ranks is not None and not ranks.owns(batch_index):  # zeros, summed below
                references.add(torch.zeros(len(part), classes))
                decomposed.add(torch.zeros(len(part), dtype=torch.long))
            else:
                references.add(
                    predict_logits(runner, part, device=run_on, batch_size=batch_size)
                    if reference is None
                    else reference[row : row + len(part)]
                )
                decomposed.add(
                    decomposition.predict(part, device=run_on, batch_size=batch_size, runner=runner)
                )
            batch_index += 1
            row += len(part)
        if ranks is not None:
            seen.update(chunk)
        if chunk.labels is not None:
            label_rows.add(chunk.labels)
    if reference is not None and len(reference) != row:
        raise ValueError(f"reference: {len(reference)} rows of logits for {row} evaluated samples")
    reference_logits, predictions = references.all(), decomposed.all()
    if ranks is not None:
        ranks.check_same(model, seen.hexdigest())
        reference_logits = ranks.combine(reference_logits.contiguous())
        predictions = ranks.combine(predictions.long().contiguous())
    space = decomposition.space
    report = assess(
        contract,
        reference_logits,
        predictions,
        decomposition.supports,
        # sizes in parameters: with per-component sparsities or kind-wide quotas, layers keep
        # different shares of their units, and a unit's cost differs between layers
        unit_weights=space.unit_params if isinstance(space, UnitSpace) else None,
        labels=label_rows.all() if len(label_rows) else None,
        method=decomposition.method,
        split=split,
        training=decomposition.metadata.get("training"),
    )
    if not isinstance(space, UnitSpace):
        return report
    rows = block_profile(space, decomposition.supports, model)
    return dataclasses.replace(report, blocks=rows, separation=separation(rows))


def _batches_of(chunk: Inputs, batch_size: int) -> Iterator[Inputs]:
    """``chunk`` cut into the batches ``predict_logits`` would run, each as its own Inputs."""
    for start in range(0, len(chunk), batch_size):
        yield chunk.select(torch.arange(start, min(start + batch_size, len(chunk))))


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
    distributed: bool | None = None,
    decomposer: Callable[..., Decomposition] | None = None,
    **kwargs: Any,
) -> ContractReport:
    """:func:`decompose` then :func:`evaluate`, certifying on samples the decomposition never
    saw (:func:`saved.holdout`).

    By default a seeded ``evaluation_fraction`` of ``data`` (stratified by the reference
    prediction) is held out to certify and the rest decomposes; with ``calibration=`` that
    data decomposes and all of ``data`` certifies; ``same_samples=True`` is the paper's literal
    Algorithm 1 (labelled in the report: its bound is not valid). ``batch_size`` applies to
    every step (the split, decomposition and evaluation); ``distributed`` to both steps (the
    split runs whole on every rank); other keyword arguments go to :func:`decompose`.
    ``decomposer`` makes the decomposition in its place, called like it (``decomposer(model,
    data, labels=..., keep=..., contract=..., ...)``): the pytest plugin passes its cache.
    """
    contract = contract or Contract()
    decomposer = decomposer or decompose
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
    known = plan.reference  # the split's pass over the data: no sample runs through it again
    decomposition = decomposer(
        model,
        plan.decompose_data,
        labels=plan.decompose_labels,
        keep=plan.decompose_keep,
        reference=known.select(plan.decompose_keep) if known is not None else None,
        contract=contract,
        device=device,
        seed=seed,
        batch_size=batch_size,
        distributed=distributed,
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
        distributed=distributed,
        reference=known.select(plan.evaluate_keep).logits if known is not None else None,
    )
