"""Moved: :mod:`saved.masking.lbmask` holds these names now (phase 3 lives in
:mod:`saved.masking`); they are re-exported here so code written against ``saved.lbmask`` keeps
working."""

from .masking.lbmask import *  # noqa: F403  (the re-export is the point)
from .masking.lbmask import ACTIVATION_BUDGET as ACTIVATION_BUDGET
from .masking.lbmask import MIN_SOURCES as MIN_SOURCES
from .masking.lbmask import VALIDATION_ROWS as VALIDATION_ROWS
from .masking.lbmask import __all__ as __all__
