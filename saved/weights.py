"""Moved: :mod:`saved.masking.weights` holds these names now (phase 3 lives in
:mod:`saved.masking`); they are re-exported here so code written against ``saved.weights`` keeps
working."""

from .masking.weights import *  # noqa: F403  (the re-export is the point)
from .masking.weights import __all__ as __all__
