"""Moved: :mod:`saved.masking.objectives` holds these names now (phase 3 lives in
:mod:`saved.masking`); they are re-exported here so code written against ``saved.objectives`` keeps
working."""

from .masking.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveTargets,
    objective_loss,
)

__all__ = ["OBJECTIVES", "Objective", "ObjectiveTargets", "objective_loss"]
