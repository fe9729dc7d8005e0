"""Moved: :mod:`saved.masking.lbmask` holds these names now (phase 3 lives in
:mod:`saved.masking`); they are re-exported here so code written against ``saved.lbmask`` keeps
working."""

from .masking.lbmask import (
    ACTIVATION_BUDGET,
    MIN_SOURCES,
    VALIDATION_ROWS,
    LBMaskConfig,
    MaskRun,
    MaskTrainer,
    initial_logits,
    learn_masks,
    train_masks,
)

__all__ = [
    "ACTIVATION_BUDGET",
    "MIN_SOURCES",
    "VALIDATION_ROWS",
    "LBMaskConfig",
    "MaskRun",
    "MaskTrainer",
    "initial_logits",
    "learn_masks",
    "train_masks",
]
