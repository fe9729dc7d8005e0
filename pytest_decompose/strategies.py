"""Hypothesis strategies that hunt decomposition counterexamples near the decision boundary.

* :func:`boundary_inputs` draws points on a model's decision boundary: a seed sample, a target
  class, then targeted PGD and bisection (``saved.boundary``) from that sample toward the class.
* :func:`find_counterexample` searches for an input where a decomposition and its model disagree,
  drawn as a seed sample plus a bounded perturbation, steered toward low margins with
  ``hypothesis.target`` and shrunk by Hypothesis toward the unperturbed, lowest-margin seed.

Both work on continuous inputs (features, images) and on text: a transformers batch (a dict
with ``input_ids``) is searched in word-embedding space (:func:`saved.embedding.continuous_form`,
the form boundary mining perturbs), starting from the real token sequences; padding positions
are never perturbed, and a text example is a batch ``{"inputs_embeds": ..., "attention_mask":
...}`` the model takes as it is.

Importing this module registers torch's global RNG with Hypothesis (so draws are reproducible)
and a ``"decompose"`` settings profile (no deadline: first torch calls warm caches; ``too_slow``
suppressed). Load it with ``settings.load_profile("decompose")``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import hypothesis
import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample
from hypothesis.extra.numpy import arrays
from torch import Tensor, nn

import saved
from saved import (
    BoundaryConfig,
    ContinuousForm,
    Counterexample,
    Decomposition,
    Inputs,
    as_inputs,
    continuous_form,
    logit_margins,
    mine_boundary,
    predict_logits,
)

__all__ = ["TEXT_RADIUS", "SearchedCounterexample", "boundary_inputs", "find_counterexample"]

#: One batch as the model takes it: a tensor, or a mapping of named tensors (``model(**batch)``).
Batch = Tensor | dict[str, Tensor]

#: For text, ``find_counterexample``'s default radius: this share of the standard deviation of
#: the data's word-embedding coordinates (there is no box domain to scale a radius by).
TEXT_RADIUS = 0.5

settings.register_profile(
    "decompose",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _TorchRandom:
    """torch's global RNG in the shape Hypothesis seeds between examples."""

    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def getstate(self) -> Tensor:
        return torch.get_rng_state()

    def setstate(self, state: Tensor) -> None:
        torch.set_rng_state(state)


_TORCH_RANDOM = _TorchRandom()  # Hypothesis keeps a weak reference: keep it alive
hypothesis.register_random(_TORCH_RANDOM)


def _searchable(model: nn.Module, data: Any) -> ContinuousForm:
    """``data`` in the form the search perturbs (word embeddings for text)."""
    return continuous_form(model, as_inputs(data).without_labels())


def boundary_inputs(
    model: nn.Module, data: Any, config: BoundaryConfig | None = None
) -> st.SearchStrategy[Batch]:
    """Points on ``model``'s decision boundary.

    Each example: a seed sample index and a target class other than the sample's own, then
    targeted PGD and bisection; the side of the refined pair that keeps the seed's class is
    returned, a one-sample batch whose two top classes are within ``tol`` in softmax: a
    ``[1, ...]`` tensor for features or images, ``{"inputs_embeds": [1, L, d], ...}`` for a
    text batch (mined in word-embedding space from the seed's tokens). Pairs that do not reach
    the boundary are rejected (``hypothesis.assume``).
    """
    inputs = as_inputs(data).without_labels()
    _searchable(model, inputs)  # a clear error up front when nothing is continuous
    base = (config or BoundaryConfig()).resolved_on(model, inputs)
    classes = predict_logits(model, inputs).shape[1]

    @st.composite
    def draw(draw_fn: st.DrawFn) -> Batch:
        index = draw_fn(st.integers(0, len(inputs) - 1))
        sample = inputs.select([index])
        own = int(predict_logits(model, sample).argmax(1))
        target = draw_fn(st.integers(0, classes - 2))
        target += target >= own  # any class but the sample's own
        seed = draw_fn(st.integers(0, 2**16))
        mined = mine_boundary(model, sample, base, seed=seed, targets=torch.tensor([target]))
        hypothesis.assume(bool(mined.refined[0]))
        return mined.inside.batch(slice(0, 1))

    return draw()


@dataclass(frozen=True, kw_only=True)
class SearchedCounterexample(Counterexample):
    """A :class:`saved.report.Counterexample` the search built: ``input = seed + delta``,
    where ``index`` is the seed sample in the data (the report's counterexamples are data
    samples themselves; these are new inputs near one). For text, ``delta`` moves the seed's
    word embeddings and ``input`` is the batch the model is called with
    (``model(**input)``); ``field`` names the perturbed field."""

    delta: Tensor
    input: Batch
    field: str = "input"


def find_counterexample(
    model: nn.Module,
    decomposition: Decomposition,
    data: Any,
    *,
    radius: float | None = None,
    max_examples: int = 300,
    domain: tuple[float, float] | None = None,
) -> SearchedCounterexample | None:
    """Search for an input where ``decomposition`` and ``model`` predict different classes.

    Inputs are a seed sample (drawn among the data in order of increasing margin, so the
    search starts at the boundary and shrinks toward the lowest-margin seed) plus a
    perturbation with every coordinate in ``[-radius, radius]`` (shrinking toward 0), clamped
    to ``domain`` (by default the data's own range). ``radius`` defaults to 0.1 for features
    and images; for text it defaults to :data:`TEXT_RADIUS` times the standard deviation of
    the data's word-embedding coordinates, only real tokens move and nothing is clamped
    (embeddings have no box domain). Returns the shrunk counterexample, or ``None`` if
    ``max_examples`` found none.
    """
    form = _searchable(model, data)
    inputs: Inputs = form.inputs
    x = form.values.float()
    margins = logit_margins(predict_logits(model, inputs))
    order = margins.argsort(stable=True)
    if form.embedded:
        shown = form.movable_values().float()
        radius = radius if radius is not None else TEXT_RADIUS * float(shown.std())
        low, high = domain if domain is not None else (-float("inf"), float("inf"))
    else:
        radius = radius if radius is not None else 0.1
        low, high = domain if domain is not None else (float(x.min()), float(x.max()))
    shape = tuple(x.shape[1:])
    size = int(torch.tensor(shape).prod()) if shape else 1

    bound = float(torch.tensor(radius, dtype=torch.float32))  # representable in float32
    # Sparse perturbations (zeros but for the coordinates Hypothesis chooses to draw): shrinking
    # then only has a few coordinates to walk back to 0, not every pixel.
    candidates = st.tuples(
        st.integers(0, len(order) - 1),
        arrays(np.float32, size, elements=st.floats(-bound, bound, width=32), fill=st.just(0.0)),
    )

    def build(candidate: tuple[int, np.ndarray]) -> tuple[int, Tensor, Batch]:
        rank, values = candidate
        index = int(order[rank])
        delta = torch.from_numpy(values.copy()).to(x.dtype).view(1, *shape)
        delta = form.pinned(delta, slice(index, index + 1))  # padding stays as it is
        moved = (x[index : index + 1] + delta).clamp(low, high)
        fields = inputs.fields_at(slice(index, index + 1))
        fields[form.field] = moved.to(inputs.fields[form.field].dtype)
        return index, delta, inputs.as_batch(fields)

    # one forward pass per candidate: the model and its K components together
    with decomposition.joint_predictor() as evaluate:

        def judge(candidate: tuple[int, np.ndarray]) -> tuple[Tensor, bool]:
            _, _, point = build(candidate)
            logits, decomposed = evaluate(point)
            return logits, bool(decomposed[0] != logits.argmax(1)[0])

        def disagrees(candidate: tuple[int, np.ndarray]) -> bool:
            logits, disagreement = judge(candidate)
            hypothesis.target(-float(logit_margins(logits)[0]), label="negative margin")
            return disagreement

        # Keyed by what the search depends on, so Hypothesis's example database replays the
        # shrunk counterexample on a re-run instead of searching and shrinking again.
        key = hashlib.sha256(
            f"{saved.fingerprint(model)}|{saved.fingerprint(decomposition.masks)}|"
            f"{saved.fingerprint(inputs.fields)}|{radius}|{low}|{high}".encode()
        ).digest()
        try:
            found = hypothesis.find(
                candidates,
                disagrees,
                settings=settings(settings.get_profile("decompose"), max_examples=max_examples),
                database_key=key,
            )
        except NoSuchExample:
            return None
        # Hypothesis's shrinker can stop with a few coordinates at tiny non-zero values (its
        # shrink budget runs out on large arrays); when the seed itself already disagrees, the
        # simplest counterexample is the unperturbed sample, so finish that last step here.
        unperturbed = (found[0], np.zeros_like(found[1]))
        if found[1].any() and judge(unperturbed)[1]:
            found = unperturbed
    index, delta, point = build(found)
    logits = predict_logits(model, as_inputs(point))  # re-checked outside the search
    return SearchedCounterexample(
        index=index,
        delta=delta,
        input=point,
        field=form.field,
        reference=int(logits.argmax(1)[0]),
        decomposed=int(decomposition.predict(point)[0]),
        margin=float(logit_margins(logits)[0]),
    )
