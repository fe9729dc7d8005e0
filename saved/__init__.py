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
* :func:`as_inputs` — the accepted input forms, as one :class:`Inputs` type;
* :func:`predict_logits` / :func:`resolve_device` — the model's logits batch by batch, and the
  device the engine runs a model on;
* :func:`fingerprint` — a content hash of a model's weights, a tensor or data (cache keys);
* :func:`mine_boundary`, :func:`continuous_form` / :class:`ContinuousForm` and
  :func:`logit_margins` — Phase 2's boundary points, the form it perturbs, and the margin
  ``m(x)`` the boundary is measured by;
* :func:`render_report` / :func:`html_page` and :class:`Counterexample` — a report in the
  terminal and as the one HTML page, and the samples it names.
"""

from ._hashing import fingerprint
from ._runtime import predict_logits, resolve_device
from ._version import __version__ as __version__
from .boundary import BoundaryConfig, mine_boundary
from .components import ClassComponents
from .contract import Contract, SamplePlan, logit_margins, plan_samples
from .decomposition import Decomposition, load
from .embedding import ContinuousForm, continuous_form
from .evaluation import assess
from .holdout import Holdout, SameSamplesWarning, holdout
from .inputs import Inputs, as_inputs
from .masking.lbmask import LBMaskConfig
from .modularity import ModularityPenalty, modularity_penalty
from .pipeline import METHODS, LittleDataWarning, check, decompose, evaluate
from .report import ContractReport, Counterexample, SampleSplit, html_page, render_report
from .wiring import BlockWiring

__all__ = [
    "METHODS",
    "BlockWiring",
    "BoundaryConfig",
    "ClassComponents",
    "ContinuousForm",
    "Contract",
    "ContractReport",
    "Counterexample",
    "Decomposition",
    "Holdout",
    "Inputs",
    "LBMaskConfig",
    "LittleDataWarning",
    "ModularityPenalty",
    "SameSamplesWarning",
    "SamplePlan",
    "SampleSplit",
    "as_inputs",
    "assess",
    "check",
    "continuous_form",
    "decompose",
    "evaluate",
    "fingerprint",
    "holdout",
    "html_page",
    "load",
    "logit_margins",
    "mine_boundary",
    "modularity_penalty",
    "plan_samples",
    "predict_logits",
    "render_report",
    "resolve_device",
]
