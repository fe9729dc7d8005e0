"""Baseline mask makers, one file each, one signature:

``masks(space, num_components, sparsity, *, seed=0) -> Tensor`` (bool ``[K, N]``), every group
keeping exactly ``space.keep_counts(sparsity)`` units, like the final LBMask binarisation.
"""

from . import magnitude, random

__all__ = ["magnitude", "random"]
