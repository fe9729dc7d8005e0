"""Baseline mask makers, one file each, one signature:

``masks(space, num_components, sparsity, *, seed=0, context=None) -> Tensor``

returning bool ``[K, N]`` masks over ``space`` with the same per-group sizes as the final LBMask
binarisation. Data-driven baselines (Wanda, MI) read the model, the calibration set and the
components from ``context``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..components import ClassComponents
from ..inputs import Inputs


@dataclass(frozen=True)
class MaskContext:
    """What data-driven baselines look at: the frozen model and its calibration set."""

    model: nn.Module
    calibration: Inputs
    components: ClassComponents
    device: torch.device
    batch_size: int = 256


def require(context: MaskContext | None, method: str) -> MaskContext:
    if context is None:
        raise ValueError(f"{method}: needs the model and calibration data (context=MaskContext)")
    return context


__all__ = ["MaskContext", "require"]
