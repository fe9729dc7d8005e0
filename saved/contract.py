"""The decomposition contract: every quantity of the specification as a pure tensor function.

Notation: ``F(x)`` are the reference model's logits, ``y(x) = argmax_i F_i(x)`` its prediction,
``y_dec(x)`` the decomposed prediction, ``S`` the evaluation samples.

The thresholds (:class:`Contract`) and the counts behind the semantic axis (``|B|``, the
Hoeffding and Clopper-Pearson bounds, the samples a contract needs) are :mod:`saved.bounds`,
torch-free; their names are re-exported here, where the contract's users look.

Each function validates its arguments once and raises a ``ValueError`` / ``TypeError`` that
names the argument, the value and the accepted range.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._validation import check_number
from .bounds import (
    ADAPTIVE_FIELDS,
    BOUNDS,
    Bound,
    Contract,
    SamplePlan,
    boundary_size,
    clopper_pearson_upper,
    hoeffding_radius,
    plan_samples,
    samples_needed,
    upper_bound,
)

__all__ = [
    "ADAPTIVE_FIELDS",
    "BOUNDS",
    "Bound",
    "Contract",
    "SamplePlan",
    "boundary_size",
    "boundary_subset",
    "clopper_pearson_upper",
    "component_sizes",
    "confusion_deviation",
    "disagreement",
    "disagreement_by_margin",
    "hoeffding_radius",
    "jaccard_overlap",
    "logit_margins",
    "max_pairwise_overlap",
    "per_class_disagreement",
    "per_class_upper_bounds",
    "plan_samples",
    "samples_needed",
    "upper_bound",
]


# --------------------------------------------------------------------------- validation


def _check_logits(logits: Tensor) -> Tensor:
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits: expected a tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"logits: expected shape [n, C], got {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("logits: empty (0 samples)")
    if logits.shape[1] < 2:
        raise ValueError(f"logits: need at least two classes, got C = {logits.shape[1]}")
    if not logits.is_floating_point():
        raise TypeError(f"logits: expected a floating-point tensor, got {logits.dtype}")
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise ValueError(f"logits: non-finite values (NaN/Inf) in {bad} rows")
    return logits


def _check_predictions(reference: Tensor, decomposed: Tensor) -> None:
    for name, tensor in (("reference", reference), ("decomposed", decomposed)):
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"{name}: expected a tensor of class indices, got {type(tensor).__name__}"
            )
        if tensor.dim() != 1:
            raise ValueError(
                f"{name}: expected a 1-D tensor of class indices, got {tuple(tensor.shape)}"
            )
        if tensor.is_floating_point():
            raise TypeError(f"{name}: expected integer class indices, got {tensor.dtype}")
    if reference.shape != decomposed.shape:
        raise ValueError(
            f"decomposed: {decomposed.shape[0]} predictions for {reference.shape[0]} reference ones"
        )
    if reference.numel() == 0:
        raise ValueError("reference: no predictions (empty boundary subset?)")


def _check_supports(supports: Tensor) -> Tensor:
    if not isinstance(supports, Tensor):
        raise TypeError(
            f"supports: expected a boolean tensor [K, N], got {type(supports).__name__}"
        )
    if supports.dim() != 2 or supports.shape[0] < 1 or supports.shape[1] < 1:
        raise ValueError(
            f"supports: expected a non-empty [K, N] tensor, got {tuple(supports.shape)}"
        )
    if supports.dtype != torch.bool:
        raise TypeError(f"supports: expected dtype torch.bool, got {supports.dtype}")
    return supports


# --------------------------------------------------------------------------- semantic axis


def logit_margins(logits: Tensor) -> Tensor:
    """Logit margin ``m(x) = F_y(x) - max_{j != y} F_j(x)`` of each row, always ``>= 0``.

    Args:
        logits: ``[n, C]`` finite logits, ``C >= 2``.

    Returns:
        ``[n]`` margins (0 where the top two logits tie).
    """
    top2 = _check_logits(logits).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def boundary_subset(
    margins: Tensor, q: float | None = None, kappa_margin: float | None = None
) -> Tensor:
    """Indices of the boundary subset ``B``, lowest margin first.

    Exactly one rule applies:

    * quantile ``q`` in (0, 1]: the ``boundary_size(n, q)`` lowest-margin samples, where
      ``boundary_size(n, q) = max(1, floor(q * n + 1/2))``;
    * absolute ``kappa_margin >= 0``: ``B = {x : m(x) <= kappa_margin}``.

    Ties are broken deterministically by sample index (a stable sort on the margin), so the same
    margins always give the same subset.

    Raises:
        ValueError: for bad margins, both or neither rule, or an empty boundary subset.
    """
    if (q is None) == (kappa_margin is None):
        raise ValueError("boundary_subset: give exactly one of q (quantile) or kappa_margin")
    if not isinstance(margins, Tensor) or margins.dim() != 1 or margins.numel() == 0:
        raise ValueError("margins: expected a non-empty 1-D tensor")
    if not bool(torch.isfinite(margins).all()) or bool((margins < 0).any()):
        raise ValueError("margins: expected finite values >= 0 (use logit_margins)")
    order = torch.sort(margins, stable=True).indices
    if q is not None:
        return order[: boundary_size(margins.numel(), q)]
    threshold = check_number("kappa_margin", kappa_margin)
    if threshold < 0:
        raise ValueError(f"kappa_margin: expected a margin >= 0, got {kappa_margin!r}")
    count = int((margins <= threshold).sum())
    if count == 0:
        raise ValueError(
            f"kappa_margin: empty boundary subset: no sample has margin <= {threshold:g} "
            f"(smallest margin is {float(margins.min()):.4g})"
        )
    return order[:count]


def disagreement(reference: Tensor, decomposed: Tensor) -> float:
    """``Dis = (1/|B|) * sum_{x in B} 1[y_dec(x) != y(x)]`` over the given predictions."""
    _check_predictions(reference, decomposed)
    return float((reference != decomposed).double().mean())


def disagreement_by_margin(
    margins: Tensor, reference: Tensor, decomposed: Tensor, bins: int = 10
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Where along the margin the decomposition disagrees: the samples ranked by margin (ties by
    index, as in :func:`boundary_subset`) and cut into ``min(bins, n)`` groups of equal size
    (sizes differ by at most one; group ``b`` holds the ranks ``r`` with
    ``floor(r * bins / n) = b``, so group 0 is the lowest margins).

    Returns:
        per group: the sample count, the count of ``y_dec(x) != y(x)``, and the lowest and
        highest margin in it. ``wrong / count`` is the group's disagreement; with ``bins = 10``
        and ``kappa = 0.1`` on ``n`` divisible by 10, group 0 is the boundary subset.
    """
    _check_predictions(reference, decomposed)
    if not isinstance(margins, Tensor) or margins.shape != reference.shape:
        raise ValueError("margins: expected one margin per prediction")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins: expected an integer >= 1, got {bins!r}")
    n = margins.numel()
    groups = min(bins, n)
    order = torch.sort(margins, stable=True).indices
    device = margins.device
    group = torch.empty(n, dtype=torch.long, device=device)
    group[order] = torch.arange(n, device=device) * groups // n
    wrong = (reference != decomposed).to(device)
    counts = torch.bincount(group, minlength=groups)
    wrongs = torch.bincount(group, weights=wrong.double(), minlength=groups).long()
    values = margins.double()
    low, high = (
        torch.full((groups,), start, dtype=torch.float64, device=device).scatter_reduce(
            0, group, values, reduce=reduce
        )
        for start, reduce in ((math.inf, "amin"), (-math.inf, "amax"))
    )
    return counts, wrongs, low, high


def per_class_disagreement(reference: Tensor, decomposed: Tensor, num_classes: int) -> Tensor:
    """Disagreement restricted to samples with ``y(x) = k``, for each class ``k``.

    Returns:
        ``[num_classes]`` float64 rates, NaN for a class with no sample.
    """
    _check_predictions(reference, decomposed)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    if int(reference.min()) < 0 or int(reference.max()) >= num_classes:
        raise ValueError(f"reference: class indices outside [0, {num_classes})")
    counts = torch.bincount(reference, minlength=num_classes).double()
    wrong = torch.bincount(
        reference, weights=(reference != decomposed).double(), minlength=num_classes
    )
    rates = wrong / counts
    return torch.where(counts > 0, rates, torch.full_like(rates, math.nan))


def per_class_upper_bounds(
    reference: Tensor, decomposed: Tensor, num_classes: int, delta: float, bound: Bound
) -> list[float | None]:
    """An upper limit on each class's boundary disagreement, all holding *together* with
    probability at least ``1 - delta``: each class gets ``delta / m`` (Bonferroni over the
    ``m`` classes present), so the worst class is bounded, not only estimated. ``None`` for a
    class with no boundary sample."""
    _check_predictions(reference, decomposed)
    counts = torch.bincount(reference, minlength=num_classes)
    wrong = torch.bincount(reference[reference != decomposed], minlength=num_classes)
    present = int((counts > 0).sum())
    share = delta / max(present, 1)
    return [
        upper_bound(int(w), int(c), share, bound) if c > 0 else None
        for c, w in zip(counts.tolist(), wrong.tolist(), strict=True)
    ]


# --------------------------------------------------------------------------- structural axis

_OVERLAP_CHUNK = 1 << 20  # columns per matmul: counts stay exact in float32 (< 2**24)


def jaccard_overlap(supports: Tensor) -> Tensor:
    """Pairwise Jaccard overlap ``|S_i ∩ S_j| / |S_i ∪ S_j|`` of K supports.

    Args:
        supports: boolean ``[K, N]``; row k marks the units (or weights) component k keeps.

    Returns:
        ``[K, K]`` float64, symmetric, 1 on the diagonal. Two empty supports are identical
        sets and count as overlap 1.
    """
    supports = _check_supports(supports)
    k = supports.shape[0]
    intersection = torch.zeros(k, k, dtype=torch.float64, device=supports.device)
    for start in range(0, supports.shape[1], _OVERLAP_CHUNK):
        chunk = supports[:, start : start + _OVERLAP_CHUNK].float()
        intersection += (chunk @ chunk.T).double()
    sizes = intersection.diagonal()
    union = sizes[:, None] + sizes[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union)).cpu()


def max_pairwise_overlap(overlap: Tensor) -> float:
    """``max_{i != j} Overlap(S_i, S_j)``; 0 for a single component."""
    if overlap.dim() != 2 or overlap.shape[0] != overlap.shape[1]:
        raise ValueError(f"overlap: expected a square [K, K] matrix, got {tuple(overlap.shape)}")
    k = overlap.shape[0]
    if k < 2:
        return 0.0
    off_diagonal = overlap[~torch.eye(k, dtype=torch.bool, device=overlap.device)]
    return float(off_diagonal.max())


def component_sizes(supports: Tensor, unit_weights: Tensor | None = None) -> Tensor:
    """``Size_k = |S_k| / |S|`` for each component (``Prune_k = 1 - Size_k``).

    Args:
        supports: boolean ``[K, N]`` over the ``N = |S|`` structural units or weights.
        unit_weights: optional ``[N]`` non-negative weight of each unit (for example its
            parameter count), turning the count into a weighted size.
    """
    supports = _check_supports(supports)
    if unit_weights is None:
        return supports.double().mean(dim=1).cpu()
    if unit_weights.shape != (supports.shape[1],) or bool((unit_weights < 0).any()):
        raise ValueError(f"unit_weights: expected [N={supports.shape[1]}] values >= 0")
    total = float(unit_weights.sum())
    if total <= 0:
        raise ValueError("unit_weights: the total weight must be > 0")
    return (supports.double() @ unit_weights.double().to(supports.device) / total).cpu()


# --------------------------------------------------------------------------- confusion


def confusion_deviation(
    reference: Tensor,
    decomposed: Tensor,
    labels: Tensor | None = None,
    num_classes: int | None = None,
) -> float:
    """``||C_dec - C||_1`` between normalised joint label distributions.

    ``C[r, p]`` is the fraction of samples with reference label ``r`` and reference prediction
    ``p``; ``C_dec`` uses the decomposed prediction instead. The reference label is the
    ground-truth label when ``labels`` is given, else ``y(x)``. Each disagreeing sample moves
    ``1/n`` of mass between two cells, so the result is at most ``2 * Dis``.
    """
    _check_predictions(reference, decomposed)
    rows = reference if labels is None else labels
    if labels is not None and (labels.shape != reference.shape or labels.is_floating_point()):
        raise ValueError(f"labels: expected {reference.shape[0]} integer labels")
    size = num_classes
    if size is None:
        size = int(max(rows.max(), reference.max(), decomposed.max())) + 1
    for name, tensor in (("labels", rows), ("reference", reference), ("decomposed", decomposed)):
        if int(tensor.min()) < 0 or int(tensor.max()) >= size:
            raise ValueError(f"{name}: class indices outside [0, {size})")
    n = reference.numel()
    joint = torch.bincount(rows * size + reference, minlength=size * size).double()
    joint_dec = torch.bincount(rows * size + decomposed, minlength=size * size).double()
    return float((joint_dec - joint).abs().sum() / n)
