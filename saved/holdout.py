"""Which samples learn the decomposition and which certify it.

The contract's bound (Hoeffding or Clopper–Pearson) holds for samples *independent* of the
decomposition. Masks learned on the evaluated samples make Dis optimistic (a digits MLP: 0.154
on the samples that trained the masks, 0.26 on held-out ones), so the entry points that take
one data set (:func:`saved.check`, ``assert_decomposable``, ``saved check``) split it first:

* ``"held-out"`` (default): a seeded split stratified by the reference prediction; a share
  ``evaluation_fraction`` of each predicted class certifies, the rest decomposes;
* ``"calibration"``: separate decomposition data was given; all of the data certifies;
* ``"same-samples"``: the paper's literal Algorithm 1 (decompose and certify on the same S),
  only on explicit request, and labelled so in the report.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ._hashing import inputs_digest
from ._runtime import Reference, on_device, predict_logits, resolve_device
from ._validation import check_in
from .inputs import DEFAULT_BATCH_SIZE, as_inputs, iter_inputs
from .report import SampleSplit

__all__ = ["Holdout", "SameSamplesWarning", "holdout", "stratified_split"]


class SameSamplesWarning(UserWarning):
    """The decomposition was learned on the samples that certify it."""


SAME_SAMPLES_CONSEQUENCE = (
    "the masks were learned on the samples that certify them, so the measured boundary "
    "disagreement is optimistic and its confidence bound is not valid (it needs samples "
    "independent of the decomposition)"
)


@dataclass(frozen=True)
class Holdout:
    """The samples to decompose on and to certify on.

    ``decompose_data`` / ``decompose_labels`` go to :func:`saved.decompose` with
    ``keep=decompose_keep``; the data goes to :func:`saved.evaluate` with
    ``keep=evaluate_keep`` and ``split=split``. A ``None`` mask means every sample.
    ``reference``: the reference logits of every sample of the data, when the split computed
    them (``"held-out"``); :func:`saved.check` hands each part its rows, so that no sample goes
    through the model twice.
    """

    decompose_data: Any
    decompose_labels: Any
    decompose_keep: Tensor | None
    evaluate_keep: Tensor | None
    split: SampleSplit
    reference: Reference | None = None


def stratified_split(predictions: Tensor, evaluation_fraction: float, seed: int) -> Tensor:
    """A boolean mask over the samples, true for the evaluation part.

    Within every predicted class, a seeded ``floor(f * n_c + 1/2)`` of its ``n_c`` samples are
    chosen, so both parts keep the reference's class mix. Both parts are non-empty.
    """
    if predictions.dim() != 1 or predictions.numel() < 2:
        raise ValueError(
            "data: holding samples out needs at least 2 samples; pass calibration= (separate "
            "decomposition data) or same_samples=True"
        )
    generator = torch.Generator().manual_seed(seed)
    evaluation = torch.zeros(predictions.numel(), dtype=torch.bool)
    for label in torch.unique(predictions).tolist():
        members = torch.nonzero(predictions == label).flatten()
        order = members[torch.randperm(members.numel(), generator=generator)]
        evaluation[order[: math.floor(evaluation_fraction * members.numel() + 0.5)]] = True
    if bool(evaluation.all()) or not bool(evaluation.any()):  # tiny data: one sample moves
        pick = int(torch.randint(evaluation.numel(), (1,), generator=generator))
        evaluation[pick] = not bool(evaluation[pick])
    return evaluation


def _check_fraction(value: Any) -> float:
    return check_in("evaluation_fraction", value, "(0, 1)")


def _same(data: Any, calibration: Any) -> bool:
    if calibration is data:
        return True
    if isinstance(data, DataLoader) or isinstance(calibration, DataLoader):
        return False  # reading a loader twice to compare would cost a pass over the data
    first, second = as_inputs(data), as_inputs(calibration)
    return len(first) == len(second) and inputs_digest(first) == inputs_digest(second)


def holdout(
    model: nn.Module,
    data: Any,
    labels: Any = None,
    *,
    calibration: Any = None,
    calibration_labels: Any = None,
    evaluation_fraction: float = 0.5,
    same_samples: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Holdout:
    """Decide which samples decompose and which certify (see the module docstring).

    Args:
        calibration: data used only to decompose; then all of ``data`` certifies.
        evaluation_fraction: the share of ``data`` held out to certify when no
            ``calibration`` is given.
        same_samples: the paper's Algorithm 1: decompose and certify on all of ``data``.
    """
    fraction = _check_fraction(evaluation_fraction)
    if same_samples and calibration is not None:
        raise ValueError("same_samples: give either calibration= or same_samples=True, not both")
    if same_samples:
        n = len(as_inputs(data)) if not isinstance(data, DataLoader) else _count(data, labels)
        split = SampleSplit("same-samples", n, n, disjoint=False)
        return Holdout(data, labels, None, None, split)
    if calibration is not None:
        n = len(as_inputs(data)) if not isinstance(data, DataLoader) else _count(data, labels)
        same = _same(data, calibration)
        if same:
            warnings.warn(
                "calibration is the same data as the evaluated samples: "
                + SAME_SAMPLES_CONSEQUENCE,
                SameSamplesWarning,
                stacklevel=2,
            )
        used = len(as_inputs(calibration)) if not isinstance(calibration, DataLoader) else None
        split = SampleSplit(
            "same-samples" if same else "calibration", used, n, disjoint=False if same else None
        )
        return Holdout(calibration, calibration_labels, None, None, split)
    run_on = resolve_device(model, device)
    runner = on_device(model, run_on)
    started = time.perf_counter()
    logits = torch.cat(
        [
            predict_logits(runner, chunk, device=run_on, batch_size=batch_size)
            for chunk in iter_inputs(data, labels)
        ]
    )
    reference = Reference(logits, (time.perf_counter() - started) / len(logits))
    evaluation = stratified_split(logits.argmax(1), fraction, seed)
    decomposition = ~evaluation
    split = SampleSplit(
        "held-out",
        int(decomposition.sum()),
        int(evaluation.sum()),
        disjoint=not bool((decomposition & evaluation).any()),
    )
    return Holdout(data, labels, decomposition, evaluation, split, reference)


def _count(data: Any, labels: Any) -> int:
    return sum(len(chunk) for chunk in iter_inputs(data, labels))
