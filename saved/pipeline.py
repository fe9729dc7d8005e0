"""Algorithm 1 of SAVED behind two calls: :func:`decompose` (Phases 1-3) and :func:`evaluate`
(Phase 4); :func:`check` does both."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._hashing import inputs_digest
from .adapters import (
    DEFAULT_BATCH_SIZE,
    STREAM_BATCHES,
    Batch,
    iter_inputs,
    match_dtype,
    on_device,
    predict_logits,
    resolve_device,
    sample_inputs,
)
from .baselines import MaskContext, magnitude, mi, random, wanda, wanda_structured
from .boundary import BoundaryConfig, BoundarySet, calibration_set, mine_boundary
from .components import Aggregator, ClassComponents
from .contract import Contract
from .decomposition import Decomposition
from .evaluation import assess
from .lbmask import LBMaskConfig, learn_masks
from .report import ContractReport
from .units import MaskSpace, UnitSpace
from .weights import WeightSpace

__all__ = ["METHODS", "check", "decompose", "evaluate"]

Method = Literal[
    "lbmask", "lbmask-unstructured", "wanda", "wanda-structured", "mi", "magnitude", "random"
]
#: Every method, with whether its supports are weights (unstructured) or structural units.
METHODS: dict[str, Literal["units", "weights"]] = {
    "lbmask": "units",
    "lbmask-unstructured": "weights",
    "wanda": "weights",
    "wanda-structured": "units",
    "mi": "units",
    "magnitude": "units",
    "random": "units",
}
_BASELINES: dict[str, Callable[..., Tensor]] = {
    "wanda": wanda.masks,
    "wanda-structured": wanda_structured.masks,
    "mi": mi.masks,
    "magnitude": magnitude.masks,
    "random": random.masks,
}
_NEEDS_CALIBRATION = {"lbmask", "lbmask-unstructured", "wanda", "wanda-structured", "mi"}


def decompose(
    model: nn.Module,
    data: object,
    *,
    method: Method | str = "lbmask",
    contract: Contract | None = None,
    sparsity: float = 0.5,
    alpha: float = 0.0,
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
) -> Decomposition:
    """Split ``model`` into class-wise components (SAVED Phases 1-3).

    Phase 1 builds one component per class (or per positive class set), Phase 2 mines boundary
    points around ``data`` and forms the calibration set, Phase 3 learns (``lbmask``) or scores
    (baselines) masks at ``sparsity``. ``model`` is left exactly as it was.

    Args:
        method: one of :data:`METHODS`.
        contract: recorded with the decomposition (the thresholds are applied by
            :func:`evaluate`).
        sparsity: the target fraction of units each component drops, in (0, 1).
        alpha: LBMask initialisation, 0 uniform (default) to 1 magnitude prior.
        boundary, lbmask: full settings of mining and mask learning; ``sparsity``/``alpha``
            given here take precedence over ``lbmask``'s.
        mined: boundary points already mined on this model and ``data`` (the result of
            :func:`saved.boundary.mine_boundary`; ``data`` then holds at most ``max_samples``),
            to share one mining run between methods; mined here when omitted.
        max_samples: decomposition uses at most this many samples of ``data`` (a seeded
            uniform sample; a DataLoader is read in one pass, never held whole). Mining and
            mask learning need the boundary's neighbourhood, not every sample; the contract
            is then checked on all of the data by :func:`evaluate`.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    config = lbmask or LBMaskConfig()
    config = dataclasses.replace(config, sparsity=sparsity, alpha=alpha)
    contract = contract or Contract()
    inputs = match_dtype(sample_inputs(data, labels, max_samples=max_samples, seed=seed), model)
    run_on = resolve_device(model, device)
    reference = predict_logits(model, inputs, device=run_on, batch_size=batch_size)
    labels_seen = inputs.labels
    if labels_seen is not None and (
        int(labels_seen.min()) < 0 or int(labels_seen.max()) >= reference.shape[1]
    ):
        raise ValueError(f"labels: class indices outside [0, {reference.shape[1]})")
    components = ClassComponents(reference.shape[1], positive_sets, aggregator)
    example: Batch = inputs.batch(slice(0, 2))
    space: MaskSpace = (
        WeightSpace.of(model, example)
        if METHODS[method] == "weights"
        else UnitSpace.of(model, example)
    )
    k = components.num_components
    calibration = inputs
    if mined is not None and (len(mined) and int(mined.source.max()) >= len(inputs)):
        raise ValueError(
            f"mined: its samples index {int(mined.source.max()) + 1} data rows, "
            f"but the data has {len(inputs)}; mine it on the same data"
        )
    if method in _NEEDS_CALIBRATION and mined is None:
        mined = mine_boundary(
            model,
            inputs,
            boundary,
            batch_size=batch_size,
            device=run_on,
            seed=seed,
            progress=progress,
        )
    if method in _NEEDS_CALIBRATION and mined is not None:
        calibration = calibration_set(inputs, mined, model) if bool(mined.refined.any()) else inputs
    if method.startswith("lbmask"):
        logits = learn_masks(
            model,
            calibration,
            components,
            space,
            config,
            seed=seed,
            device=run_on,
            progress=progress,
        )
        masks = space.binarise(logits, sparsity)
    else:
        context = MaskContext(model, calibration, components, run_on, batch_size)
        masks = _BASELINES[method](space, k, sparsity, seed=seed, context=context)
    metadata: dict[str, Any] = {
        "data_sha256": inputs_digest(inputs),
        "contract": contract.to_dict(),
        "seed": seed,
        "device": str(run_on),
        "config": {
            "alpha": alpha,
            "lbmask": dataclasses.asdict(config),
            "boundary": dataclasses.asdict(boundary or BoundaryConfig()),
        },
    }
    return Decomposition(model, space, components, masks, method, sparsity, metadata)


def evaluate(
    model: nn.Module,
    decomposition: Decomposition,
    data: object,
    contract: Contract | None = None,
    labels: object = None,
    *,
    device: torch.device | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ContractReport:
    """Check ``decomposition`` against ``contract`` on ``data`` (SAVED Phase 4).

    ``data`` is read in chunks of a few batches (a DataLoader lazily), so memory holds one
    chunk plus the ``[n, C]`` reference logits, whatever ``n`` is.
    """
    if decomposition.model is not model:
        raise ValueError("decomposition: it was made for a different model object")
    contract = contract or Contract(**decomposition.metadata.get("contract", {}))
    run_on = resolve_device(model, device)
    runner = on_device(model, run_on)  # one copy for all chunks when the device differs
    references, decomposed, label_rows = _Rows(), _Rows(), _Rows()
    for chunk in iter_inputs(data, labels, chunk_size=STREAM_BATCHES * batch_size):
        references.add(predict_logits(runner, chunk, device=run_on, batch_size=batch_size))
        decomposed.add(
            decomposition.predict(chunk, device=run_on, batch_size=batch_size, runner=runner)
        )
        if chunk.labels is not None:
            label_rows.add(chunk.labels)
    return assess(
        contract,
        references.all(),
        decomposed.all(),
        decomposition.supports,
        labels=label_rows.all() if len(label_rows) else None,
        method=decomposition.method,
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


def check(model: nn.Module, data: object, **kwargs: Any) -> ContractReport:
    """:func:`decompose` then :func:`evaluate` on the same data."""
    contract = kwargs.get("contract") or Contract()
    labels = kwargs.get("labels")
    decomposition = decompose(model, data, **kwargs)
    return evaluate(model, decomposition, data, contract, labels, device=kwargs.get("device"))
