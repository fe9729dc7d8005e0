"""Phase 4 of SAVED: measure a decomposition against a contract and build the report."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .contract import (
    Contract,
    boundary_subset,
    component_sizes,
    confusion_deviation,
    disagreement,
    disagreement_by_margin,
    hoeffding_radius,
    jaccard_overlap,
    logit_margins,
    per_class_disagreement,
    per_class_upper_bounds,
    upper_bound,
)
from .report import (
    ClassRow,
    ContractReport,
    Counterexample,
    MarginBin,
    SampleSplit,
    Training,
)

__all__ = ["assess"]


def assess(
    contract: Contract,
    reference_logits: Tensor,
    decomposed_predictions: Tensor,
    supports: Tensor,
    *,
    labels: Tensor | None = None,
    unit_weights: Tensor | None = None,
    method: str = "unknown",
    split: SampleSplit | None = None,
    training: Training | dict[str, Any] | None = None,
) -> ContractReport:
    """Check every axis of ``contract`` from the reference logits and decomposed predictions.

    Args:
        contract: the thresholds.
        reference_logits: ``[n, C]`` logits ``F(x)`` of the reference model on the samples S.
        decomposed_predictions: ``[n]`` decomposed predictions ``y_dec(x)`` on the same samples.
        supports: boolean ``[K, N]`` supports of the K components over N units (or weights).
        labels: optional ``[n]`` ground-truth labels (used by the confusion deviation).
        unit_weights: optional ``[N]`` weights turning unit counts into weighted sizes.
        method: the name shown in the report.
        split: which samples decomposed and which are evaluated here (shown in the report).
        training: how mask learning ended (the decomposition's ``metadata["training"]``).
    """
    if not isinstance(contract, Contract):
        raise TypeError(f"contract: expected a saved.Contract, got {type(contract).__name__}")
    margins = logit_margins(reference_logits)
    n, num_classes = reference_logits.shape
    reference = reference_logits.argmax(dim=1)
    decomposed = torch.as_tensor(decomposed_predictions).to(reference.device)
    if decomposed.shape != (n,):
        raise ValueError(
            f"decomposed_predictions: expected {n} predictions, got shape {tuple(decomposed.shape)}"
        )
    if labels is not None:
        labels = torch.as_tensor(labels).to(reference.device)
        if labels.shape != (n,) or labels.is_floating_point():
            raise ValueError(f"labels: expected {n} integer labels, got {tuple(labels.shape)}")
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"labels: class indices outside [0, {num_classes})")

    if contract.kappa_margin is None:
        boundary = boundary_subset(margins, q=contract.kappa)
    else:
        boundary = boundary_subset(margins, kappa_margin=contract.kappa_margin)
    ref_b, dec_b = reference[boundary], decomposed[boundary]
    labels_b = labels[boundary] if labels is not None else None

    per_class = per_class_disagreement(ref_b, dec_b, num_classes)
    uppers = per_class_upper_bounds(ref_b, dec_b, num_classes, contract.delta, contract.bound)
    counts = torch.bincount(ref_b, minlength=num_classes)
    rows = [
        ClassRow(k, int(counts[k]), None if math.isnan(rate) else rate, upper)
        for k, (rate, upper) in enumerate(zip(per_class.tolist(), uppers, strict=True))
    ]
    wrong = boundary[ref_b != dec_b]  # already in margin order
    n_boundary = int(boundary.numel())
    counterexamples = [
        Counterexample(
            index=int(i),
            reference=int(reference[i]),
            decomposed=int(decomposed[i]),
            margin=float(margins[i]),
            label=None if labels is None else int(labels[i]),
        )
        for i in wrong[: ContractReport.MAX_COUNTEREXAMPLES].tolist()
    ]
    overlap = jaccard_overlap(supports)
    # for plots: margins up to their 99th percentile in 30 bins, and the boundary cut
    top = float(torch.quantile(margins.double(), 0.99)) or float(margins.max()) or 1.0
    counts = torch.histc(margins.clamp(max=top).double(), bins=30, min=0.0, max=top)
    histogram = {"edges": torch.linspace(0, top, 31).tolist(), "counts": counts.long().tolist()}
    profile = [
        MarginBin(index, int(count), int(wrong), float(low), float(high))
        for index, (count, wrong, low, high) in enumerate(
            zip(*disagreement_by_margin(margins, reference, decomposed), strict=True)
        )
    ]
    return ContractReport(
        contract=contract,
        method=method,
        n_samples=n,
        n_boundary=n_boundary,
        boundary_margin=float(margins[boundary].max()),
        disagreement=disagreement(ref_b, dec_b),
        hoeffding=hoeffding_radius(n_boundary, contract.delta),
        binomial=upper_bound(int(wrong.numel()), n_boundary, contract.delta, "binomial"),
        global_disagreement=disagreement(reference, decomposed),
        overlap=overlap.tolist(),
        sizes=component_sizes(supports, unit_weights).tolist(),
        confusion_deviation=confusion_deviation(ref_b, dec_b, labels_b, num_classes),
        per_class=rows,
        counterexamples=counterexamples,
        n_counterexamples=int(wrong.numel()),
        split=split,
        extra={"margin_histogram": histogram},
        training=Training.from_dict(training) if isinstance(training, dict) else training,
        margin_profile=profile,
    )
