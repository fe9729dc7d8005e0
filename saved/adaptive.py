"""Moved: :mod:`saved.masking.adaptive` holds these names now (phase 3 lives in
:mod:`saved.masking`); they are re-exported here so code written against ``saved.adaptive`` keeps
working."""

from .masking.adaptive import (
    MAX_SPARSITY,
    STEP,
    adaptive_sparsity,
)

__all__ = ["MAX_SPARSITY", "STEP", "adaptive_sparsity"]
