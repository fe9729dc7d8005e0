"""Moved: :mod:`saved.masking.units` holds these names now (phase 3 lives in
:mod:`saved.masking`); they are re-exported here so code written against ``saved.units`` keeps
working."""

from .masking.units import (
    Allocation,
    MaskGroup,
    MaskSite,
    MaskSpace,
    UnitGroup,
    UnitKind,
    UnitSpace,
    find_classifier,
)

__all__ = [
    "Allocation",
    "MaskGroup",
    "MaskSite",
    "MaskSpace",
    "UnitGroup",
    "UnitKind",
    "UnitSpace",
    "find_classifier",
]
