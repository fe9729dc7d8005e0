"""Baseline mask makers, one file each, one signature:

``masks(space, num_components, sparsity, *, seed=0, context=None) -> Tensor``

returning bool ``[K, N]`` masks over ``space`` with the same per-group sizes as the final LBMask
binarisation. Data-driven baselines (Wanda, MI) read the model, the calibration set and the
components from ``context``.
"""

from __future__ import annotations

from ..activity import MaskContext, require

__all__ = ["MaskContext", "require"]
