"""Phase 1 of SAVED: class-wise binary components and their aggregation.

Component ``k`` owns a set of positive classes ``P_k`` (by default ``{k}``) and outputs

    m_k(x) = [ max_{i in P_k} F^(k)_i(x),  max_{j not in P_k} F^(k)_j(x) ]

where ``F^(k)`` are the logits of component k's (masked) network. The decomposed prediction is
``y_dec(x) = argmax_k m_k(x)[0]`` (the paper's aggregator) or ``argmax_k (m_k[0] - m_k[1])``
(binary-margin aggregator); the winning component names the class ``argmax_{i in P_k} F^(k)_i``.

Unmasked, every ``F^(k) = F`` and ``y_dec = argmax F = y`` exactly, ties included, because
``torch.argmax`` returns the first maximal index on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["Aggregator", "ClassComponents"]

Aggregator = Literal["paper", "margin"]
_AGGREGATORS: tuple[str, ...] = ("paper", "margin")


@dataclass(frozen=True)
class ClassComponents:
    """K class-wise components over a C-class classifier.

    Args:
        num_classes: C, the number of classes of the reference model (>= 2).
        positive_sets: ``P_k`` for each component: disjoint, non-empty, proper subsets of
            ``range(C)`` that together cover every class (a partition), so every class stays
            predictable. ``None`` means one component per class.
        aggregator: ``"paper"`` (``argmax_k m_k[0]``, default) or ``"margin"``
            (``argmax_k m_k[0] - m_k[1]``).
    """

    num_classes: int
    positive_sets: tuple[tuple[int, ...], ...] | None = None
    aggregator: Aggregator = "paper"

    def __post_init__(self) -> None:
        c = self.num_classes
        if isinstance(c, bool) or not isinstance(c, int) or c < 2:
            raise ValueError(f"num_classes: expected an integer >= 2, got {c!r}")
        if self.aggregator not in _AGGREGATORS:
            raise ValueError(f"aggregator: expected one of {_AGGREGATORS}, got {self.aggregator!r}")
        sets = self.positive_sets
        if sets is None:
            sets = tuple((k,) for k in range(c))
        else:
            sets = tuple(tuple(sorted(int(i) for i in group)) for group in sets)
            _check_partition(sets, c)
        object.__setattr__(self, "positive_sets", sets)

    @property
    def num_components(self) -> int:
        """K, the number of components."""
        return len(self.sets)

    @property
    def sets(self) -> tuple[tuple[int, ...], ...]:
        assert self.positive_sets is not None  # filled in by __post_init__
        return self.positive_sets

    def membership(self, device: torch.device | str | None = None) -> Tensor:
        """Boolean ``[K, C]``: entry ``(k, i)`` is true when class ``i`` is in ``P_k``."""
        member = torch.zeros(self.num_components, self.num_classes, dtype=torch.bool)
        for k, group in enumerate(self.sets):
            member[k, list(group)] = True
        return member.to(device)

    def binary_targets(self, reference_predictions: Tensor) -> Tensor:
        """Component k's binary label: does the *reference* model predict a class in ``P_k``?

        This is the only place in the engine that maps classes to "target vs rest"; boundary
        mining, mask training and the baselines all call it.

        Returns:
            Boolean ``[n, K]``.
        """
        predictions = torch.as_tensor(reference_predictions)
        if predictions.dim() != 1 or predictions.is_floating_point():
            raise ValueError("reference_predictions: expected a 1-D tensor of class indices")
        if predictions.numel() and (
            int(predictions.min()) < 0 or int(predictions.max()) >= self.num_classes
        ):
            raise ValueError(
                f"reference_predictions: class indices outside [0, {self.num_classes})"
            )
        return self.membership(predictions.device).T[predictions]

    def outputs(self, logits: Tensor, members: slice | None = None) -> tuple[Tensor, Tensor]:
        """Component outputs ``m_k(x)`` and the best positive class of each component.

        Args:
            logits: ``[n, C]`` shared by all components (one forward pass, unmasked), or
                ``[K, n, C]`` with component k's own logits in row k.
            members: only these components (then ``logits`` has one row per member).

        Returns:
            ``m`` of shape ``[n, K, 2]`` and ``[n, K]`` indices of ``argmax_{i in P_k} F^(k)_i``.
        """
        membership = self.membership(logits.device)
        if members is not None:
            membership = membership[members]
        per_component = self._per_component(logits, membership.shape[0])
        member = membership[:, None, :]
        low = torch.finfo(per_component.dtype).min
        positive = per_component.masked_fill(~member, low).max(dim=-1)
        negative = per_component.masked_fill(member, low).amax(dim=-1)
        m = torch.stack([positive.values, negative], dim=-1).transpose(0, 1)
        return m, positive.indices.T

    def scores(self, m: Tensor) -> Tensor:
        """``[n, K]`` aggregation scores from component outputs ``m`` of shape ``[n, K, 2]``."""
        if self.aggregator == "paper":
            return m[..., 0]
        return m[..., 0] - m[..., 1]

    def predict(self, logits: Tensor) -> Tensor:
        """Decomposed predictions ``y_dec`` (class indices ``[n]``) from component logits."""
        m, best_positive = self.outputs(logits)
        winner = self.scores(m).argmax(dim=1)
        return best_positive.gather(1, winner[:, None]).squeeze(1)

    def _per_component(self, logits: Tensor, count: int) -> Tensor:
        if not isinstance(logits, Tensor) or not logits.is_floating_point():
            raise TypeError("logits: expected a floating-point tensor")
        if logits.dim() == 2:
            logits = logits.unsqueeze(0).expand(count, -1, -1)
        if logits.dim() != 3 or logits.shape[0] != count:
            raise ValueError(
                f"logits: expected [n, C] or [K={count}, n, C], got {tuple(logits.shape)}"
            )
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"logits: expected C = {self.num_classes} classes, got {logits.shape[-1]}"
            )
        return logits


def _check_partition(sets: Sequence[tuple[int, ...]], num_classes: int) -> None:
    if len(sets) < 2:
        raise ValueError(f"positive_sets: need at least two components, got {len(sets)}")
    seen: set[int] = set()
    for k, group in enumerate(sets):
        if not group:
            raise ValueError(f"positive_sets[{k}]: empty set of positive classes")
        outside = [i for i in group if not 0 <= i < num_classes]
        if outside:
            raise ValueError(f"positive_sets[{k}]: classes {outside} outside [0, {num_classes})")
        shared = seen.intersection(group)
        if shared:
            raise ValueError(f"positive_sets[{k}]: classes {sorted(shared)} are in two sets")
        seen.update(group)
    missing = sorted(set(range(num_classes)) - seen)
    if missing:
        raise ValueError(
            f"positive_sets: classes {missing} belong to no component and could never be predicted"
        )
