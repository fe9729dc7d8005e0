"""saved: Semantic-Aware Verification-Driven Decomposition of neural classifiers.

Public API (everything else is private by name or by module):

* :class:`Contract` — the thresholds ``eps, kappa, gamma, eta, delta``;
* :class:`ContractReport` — measured values, verdicts, per-class table, counterexamples;
* :class:`ClassComponents` — Phase 1, class-wise components and their aggregation;
* :func:`decompose` / :func:`evaluate` / :func:`check` — the SAVED pipeline (Phases 1-3, 4, both);
* :class:`Decomposition` and :func:`load` — masks, batched prediction, surgery, persistence;
* :func:`assess` — Phase 4, a report from reference logits, decomposed predictions and supports;
* :func:`holdout` — which samples decompose and which certify (held out by default);
* :func:`plan_samples` — how many samples a contract needs to be able to pass;
* :func:`as_inputs` — the accepted input forms, as one :class:`Inputs` type.
"""

from ._version import __version__ as __version__
from .adapters import Inputs, as_inputs, predict_logits
from .boundary import BoundaryConfig
from .components import ClassComponents
from .contract import Contract, SamplePlan, plan_samples
from .decomposition import Decomposition, load
from .evaluation import assess
from .holdout import Holdout, SameSamplesWarning, holdout
from .lbmask import LBMaskConfig
from .pipeline import METHODS, check, decompose, evaluate
from .report import ContractReport, SampleSplit

__all__ = [
    "METHODS",
    "BoundaryConfig",
    "ClassComponents",
    "Contract",
    "ContractReport",
    "Decomposition",
    "Holdout",
    "Inputs",
    "LBMaskConfig",
    "SameSamplesWarning",
    "SamplePlan",
    "SampleSplit",
    "as_inputs",
    "assess",
    "check",
    "decompose",
    "evaluate",
    "holdout",
    "load",
    "plan_samples",
    "predict_logits",
]
