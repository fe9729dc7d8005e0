"""What LBMask minimises: losses of the K masked components against the reference model.

Every objective takes the components' logits ``F^(k)(x)`` (``[K, B, C]``, with gradient) and the
reference logits ``F(x)`` (``[B, C]``) of one batch, and returns one scalar. Which one is the
default was decided by the held-out study in docs/STUDY.md (benchmarks/lbmask_study.py); the
others stay available for comparison:

* ``"bce"``: binary cross-entropy on each component's own margin ``z_k = m_k[0] - m_k[1]``
  against "the reference predicts a class of ``P_k``", positives re-weighted by
  ``n_neg / n_pos``. It is unchanged when a component's logits all shift by one constant, while
  the paper's aggregator ``argmax_k m_k[0]`` compares those logits *across* components;
* ``"bce-plain"``: the same without the positive re-weighting;
* ``"match"``: squared error between ``m_k = [F^(k)_{P_k}, max_{j not in P_k} F^(k)_j]`` and the
  reference's ``[F_{P_k}, max_{j not in P_k} F_j]``, in units of the reference logits' standard
  deviation: both numbers the aggregators read, at the reference's level;
* ``"kl"``: ``KL(softmax(F / T) || softmax(F^(k) / T))`` for every component: each component
  distils the whole reference;
* ``"tie"``: ``"bce"`` plus the squared error between ``m_k[0]`` and the reference's on the
  low-margin (boundary) samples: it pins the level the paper's aggregator compares;
* ``"aggregate"``: ``KL(softmax(r / T) || softmax(s / T))`` between the aggregation scores of
  the components, ``s_k`` (``m_k[0]`` for the paper's aggregator, ``m_k[0] - m_k[1]`` for the
  margin one), and the same scores of the reference ``r_k``: the loss sees exactly what the
  aggregator compares, across components;
* ``"aggregate-match"``: ``"aggregate"`` plus ``"match"``;
* ``"hinge"``: ``"aggregate"`` plus ``relu(HINGE_SHARE * g_ref - g) / scale``, where ``g`` is
  the components' score gap ``s_c - max_{j != c} s_j`` for the class ``c`` the reference's
  scores decide and ``g_ref`` the reference's own gap: a flip costs in proportion to its depth,
  where the KL of a near-tie of gap d moves only by O(d^2), although a flip is exactly what
  the contract counts;
* ``"ce"``: ``"aggregate"`` plus the cross-entropy of the components' scores (at temperature
  ``T``) against ``c``: a flip-aware term without a margin to choose;
* ``"score"``: squared error between each component's aggregation score ``s_k`` and the
  reference's ``r_k``, in units of ``scale``: every component is fitted on its own, at the
  level the aggregator compares, so a component's loss does not depend on the others. The
  objectives above that compare scores *across* components (``"aggregate"`` and the ones
  built on it) couple them: where every component's score sags, each one's best move is to
  sag too, and adding back one unit a component needs makes its own score stand out and
  raises the loss. On a network decomposable by construction (benchmarks/cotrain_probe.py
  ``--blocks``), after 400 steps, that coupling left LBMask at held-out Dis 0.28 where
  ``"score"`` reached 0.01 (docs/DECISIONS.md, LBMask).

Samples are weighted by ``weights`` (boundary samples up-weighted by the trainer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ..components import ClassComponents

__all__ = ["OBJECTIVES", "Objective", "ObjectiveTargets", "objective_loss"]

Objective = Literal[
    "bce", "bce-plain", "match", "kl", "tie", "aggregate", "aggregate-match", "hinge", "ce", "score"
]
OBJECTIVES: tuple[str, ...] = get_args(Objective)


@dataclass(frozen=True)
class ObjectiveTargets:
    """What the objectives compare against, for one batch of ``B`` samples.

    Args:
        reference: ``[B, C]`` reference logits.
        weights: ``[B]`` sample weights (boundary samples up-weighted).
        boundary: ``[B]`` bool, the low-margin samples.
        pos_weight: ``[K]`` positive re-weighting of ``"bce"``.
        scale: the reference logits' standard deviation over the calibration set.
    """

    reference: Tensor
    weights: Tensor
    boundary: Tensor
    pos_weight: Tensor
    scale: float


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """Mean over samples (dim 0) weighted by ``weights``, other dimensions averaged."""
    per_sample = values.reshape(values.shape[0], -1).mean(1)
    return (per_sample * weights).sum() / weights.sum()


def _kl(target_logits: Tensor, logits: Tensor, temperature: float) -> Tensor:
    """``KL(softmax(target / T) || softmax(logits / T))`` along the last dimension."""
    target = torch.log_softmax(target_logits / temperature, dim=-1)
    return (target.exp() * (target - torch.log_softmax(logits / temperature, dim=-1))).sum(-1)


#: ``"hinge"``: the share of the reference's own score gap the components must keep
HINGE_SHARE = 0.5


def _score_gap(scores: Tensor, decided: Tensor) -> Tensor:
    """``s_c - max_{j != c} s_j`` per sample for the decided class ``c``: negative on a flip."""
    own = scores.gather(-1, decided[:, None]).squeeze(-1)
    rest = scores.scatter(-1, decided[:, None], float("-inf")).amax(-1)
    return own - rest


def objective_loss(
    objective: Objective,
    logits: Tensor,
    targets: ObjectiveTargets,
    components: ClassComponents,
    *,
    temperature: float = 1.0,
) -> Tensor:
    """The scalar loss of ``objective`` for component logits ``[K, B, C]``."""
    reference = targets.reference
    m, _ = components.outputs(logits)  # [B, K, 2]
    reference_m, _ = components.outputs(reference)
    weights = targets.weights
    if objective in ("bce", "bce-plain", "tie"):
        binary = components.binary_targets(reference.argmax(1)).to(m.dtype)
        per = nn.functional.binary_cross_entropy_with_logits(
            m[..., 0] - m[..., 1],
            binary,
            pos_weight=targets.pos_weight if objective != "bce-plain" else None,
            reduction="none",
        )
        loss = _weighted_mean(per, weights)
        if objective == "tie" and bool(targets.boundary.any()):
            gap = (m[..., 0] - reference_m[..., 0])[targets.boundary] / targets.scale
            loss = loss + gap.pow(2).mean()
        return loss
    if objective == "kl":
        per_component = _kl(reference.unsqueeze(0), logits, temperature)  # [K, B]
        return _weighted_mean(per_component.T, weights)

    def match() -> Tensor:  # only "match" and "aggregate-match" read it
        return _weighted_mean(((m - reference_m) / targets.scale).pow(2), weights)

    if objective == "match":
        return match()
    scores, reference_scores = components.scores(m), components.scores(reference_m)
    if objective == "score":
        return _weighted_mean(((scores - reference_scores) / targets.scale).pow(2), weights)
    aggregate = _weighted_mean(_kl(reference_scores, scores, temperature), weights)
    if objective == "aggregate":
        return aggregate
    if objective == "aggregate-match":
        return aggregate + match()
    decided = reference_scores.argmax(-1)  # the class the reference's aggregator picks
    if objective == "hinge":
        gap = _score_gap(scores, decided)
        wanted = _score_gap(reference_scores, decided) * HINGE_SHARE
        return aggregate + _weighted_mean(torch.relu(wanted - gap) / targets.scale, weights)
    if objective == "ce":
        per = nn.functional.cross_entropy(scores / temperature, decided, reduction="none")
        return aggregate + _weighted_mean(per, weights)
    raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")
