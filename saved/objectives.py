"""Moved: :mod:`saved.masking.objectives` holds these names now (phase 3 lives in
:mod:`saved.masking`); they are re-exported here so code written against ``saved.objectives`` keeps
working."""

from .masking.objectives import *  # noqa: F403  (the re-export is the point)
from .masking.objectives import __all__ as __all__
