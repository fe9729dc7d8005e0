"""Moved: :mod:`saved.masking.adaptive` holds these names now (phase 3 lives in
:mod:`saved.masking`); they are re-exported here so code written against ``saved.adaptive`` keeps
working."""

from .masking.adaptive import *  # noqa: F403  (the re-export is the point)
from .masking.adaptive import __all__ as __all__
