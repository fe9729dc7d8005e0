"""saved: Semantic-Aware Verification-Driven Decomposition of neural classifiers.

Public API (everything else is private by name or by module):

* :class:`Contract` — the thresholds ``eps, kappa, gamma, eta, delta``;
* :class:`ContractReport` — measured values, verdicts, per-class table, counterexamples;
* :class:`ClassComponents` — Phase 1, class-wise components and their aggregation;
* :func:`assess` — Phase 4, a report from reference logits, decomposed predictions and supports;
* :func:`as_inputs` — the accepted input forms, as one :class:`Inputs` type.
"""

from importlib import metadata as _metadata

from .adapters import Inputs, as_inputs, predict_logits
from .components import ClassComponents
from .contract import Contract
from .evaluation import assess
from .report import ContractReport

__all__ = [
    "ClassComponents",
    "Contract",
    "ContractReport",
    "Inputs",
    "as_inputs",
    "assess",
    "predict_logits",
]

try:
    __version__ = _metadata.version("pytest-decompose")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
