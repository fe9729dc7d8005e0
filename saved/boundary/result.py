"""What mining returns, and the calibration set built from it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..embedding import continuous_form
from ..inputs import Inputs

__all__ = ["BoundarySet", "calibration_set", "calibration_sources"]


@dataclass(frozen=True)
class BoundarySet:
    """The outcome of mining, one row per attacked sample.

    ``inside`` holds ``x_lo`` (class ``classes[:, 0]``, the sample's own) and ``outside`` holds
    ``x_hi`` (class ``classes[:, 1]``), both in the perturbed input form (embeddings for text).
    For a sample that never flipped both are its last PGD iterate and ``refined`` is False.
    """

    inside: Inputs
    outside: Inputs
    source: Tensor  # [m] index of the attacked sample in the data
    classes: Tensor  # [m, 2] (a, b)
    flipped: Tensor  # [m] PGD found a different class
    refined: Tensor  # [m] bisection reached gap < tol
    third_class: Tensor  # [m] a midpoint fell into a third class (pair retargeted)
    gaps: Tensor  # [m] final softmax gap of the pair (inf if never flipped)
    steps: Tensor  # [m] bisection steps the pair used
    margins: Tensor  # [m, 2] logit margins of x_lo and x_hi
    field: str  # the perturbed input field
    pgd_steps_run: int  # PGD iterations executed (each: one forward + backward)
    bisection_steps_run: int  # bisection iterations executed (each: one forward)
    logits: Tensor | None = None  # [m, 2, C] logits of x_lo and x_hi (float32, CPU)

    def __len__(self) -> int:
        return int(self.source.numel())

    @property
    def flip_rate(self) -> float:
        return float(self.flipped.double().mean())

    @property
    def refined_rate(self) -> float:
        """Refined pairs among flipped ones (0 when nothing flipped)."""
        flipped = int(self.flipped.sum())
        return float(self.refined.sum()) / flipped if flipped else 0.0

    def points(self, refined_only: bool = True) -> Inputs:
        """Both ends of every refined (or every flipped) pair: the boundary points."""
        keep = torch.nonzero(self.refined if refined_only else self.flipped).flatten()
        if keep.numel() == 0:
            raise ValueError("boundary: no pair reached the boundary; nothing to return")
        return self.inside.select(keep).concat(self.outside.select(keep))

    def point_logits(self, refined_only: bool = True) -> Tensor | None:
        """The model's logits on :meth:`points`, row for row (``None`` if not recorded)."""
        if self.logits is None:
            return None
        keep = torch.nonzero(self.refined if refined_only else self.flipped).flatten()
        return torch.cat([self.logits[keep, 0], self.logits[keep, 1]])


def calibration_set(data: Inputs, boundary: BoundarySet, model: nn.Module) -> Inputs:
    """``S ∪ boundary points``, in the perturbed form (embeddings for text), without labels."""
    form = continuous_form(model, data)
    return form.inputs.without_labels().concat(boundary.points())


def calibration_sources(num_samples: int, boundary: BoundarySet) -> Tensor:
    """For each row of :func:`calibration_set`, the index of the data sample it comes from:
    the samples themselves, then the attacked sample of each boundary point."""
    refined = boundary.source[boundary.refined]
    return torch.cat([torch.arange(num_samples), refined, refined])
