"""Phase 2 of SAVED: boundary-aware input generation (PGD, then bisection to the boundary).

The contract is about behaviour where decisions change, and data rarely sits there. For each
sample ``x`` with reference class ``a = y(x)``:

1. **PGD** (l_inf or l_2 ball of radius r around x, projected and clamped to the input domain)
   looks for ``x_adv`` with ``y(x_adv) = b != a`` (untargeted, or targeted at the runner-up
   class). A sample stops moving as soon as it flips, so ``x_adv`` sits just past the boundary.
2. **Bisection** of every flipped pair ``(x_lo, x_hi) = (x, x_adv)``: ``x_mid = (x_lo + x_hi)/2``
   replaces the end whose class it shares. A pair stops when the softmax gap between its two
   classes, ``max(p_a(x_lo) - p_b(x_lo), p_b(x_hi) - p_a(x_hi))``, is below ``tol``, or after
   ``max_steps`` (so it always terminates). After B steps the ends are ``2^-B`` of the original
   segment apart, and both are boundary points.

   Third class rule: when ``x_mid`` falls into a class ``c`` not in ``{a, b}``, the segment
   ``[x_lo, x_mid]`` still straddles a boundary of ``a`` (between a and c), so the pair becomes
   ``(a, c)`` with ``x_hi = x_mid`` and bisection goes on; the pair is flagged ``third_class``.

Text models are perturbed in the word-embedding space (``inputs_embeds``; padding positions
never move); the boundary points are then embeddings, and so is the calibration set.
Everything is batched: one forward (+ one input-gradient backward for PGD) per step for all
pairs still active, no Python loop over samples.

The package: ``config`` (settings and their concrete scale on the data), ``rows`` (the loops'
typed working state), ``pgd`` (step 1), ``bisect`` (step 2), ``mine`` (the entry point,
chunk by chunk) and ``result`` (what mining returns, and the calibration set built from it).
"""

from __future__ import annotations

from .config import BoundaryConfig, concrete_config
from .mine import mine_boundary
from .result import BoundarySet, calibration_set, calibration_sources

__all__ = [
    "BoundaryConfig",
    "BoundarySet",
    "calibration_set",
    "calibration_sources",
    "concrete_config",
    "mine_boundary",
]
