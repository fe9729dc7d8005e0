"""Moved: :mod:`saved.masking.units` holds these names now (phase 3 lives in
:mod:`saved.masking`); they are re-exported here so code written against ``saved.units`` keeps
working."""

from .masking.units import *  # noqa: F403  (the re-export is the point)
from .masking.units import __all__ as __all__
