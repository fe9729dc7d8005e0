"""Hypothesis strategies that hunt decomposition counterexamples near the decision boundary.

* :func:`boundary_inputs` draws points on a model's decision boundary: a seed sample, a target
  class, then targeted PGD and bisection (``saved.boundary``) from that sample toward the class.
* :func:`find_counterexample` searches for an input where a decomposition and its model disagree,
  drawn as a seed sample plus a bounded perturbation, steered toward low margins with
  ``hypothesis.target`` and shrunk by Hypothesis toward the unperturbed, lowest-margin seed.

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
from saved import Decomposition, as_inputs, predict_logits
from saved.boundary import BoundaryConfig, concrete_config, mine_boundary
from saved.contract import logit_margins
from saved.inputs import match_dtype
from saved.report import Counterexample

__all__ = ["SearchedCounterexample", "boundary_inputs", "find_counterexample"]

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


def boundary_inputs(
    model: nn.Module, data: Any, config: BoundaryConfig | None = None
) -> st.SearchStrategy[Tensor]:
    """Points on ``model``'s decision boundary (continuous inputs: features or images).

    Each example: a seed sample index and a target class other than the sample's own, then
    targeted PGD and bisection; the side of the refined pair that keeps the seed's class is
    returned (a ``[1, ...]`` tensor whose two top classes are within ``tol`` in softmax).
    Pairs that do not reach the boundary are rejected (``hypothesis.assume``).
    """
    inputs = match_dtype(as_inputs(data).without_labels(), model)
    if inputs.is_mapping:
        raise TypeError("boundary_inputs: expects tensor inputs (features or images)")
    base = concrete_config(model, inputs, config or BoundaryConfig())
    classes = predict_logits(model, inputs).shape[1]

    @st.composite
    def draw(draw_fn: st.DrawFn) -> Tensor:
        index = draw_fn(st.integers(0, len(inputs) - 1))
        sample = inputs.select([index])
        own = int(predict_logits(model, sample).argmax(1))
        target = draw_fn(st.integers(0, classes - 2))
        target += target >= own  # any class but the sample's own
        seed = draw_fn(st.integers(0, 2**16))
        mined = mine_boundary(model, sample, base, seed=seed, targets=torch.tensor([target]))
        hypothesis.assume(bool(mined.refined[0]))
        return mined.inside.tensor

    return draw()


@dataclass(frozen=True, kw_only=True)
class SearchedCounterexample(Counterexample):
    """A :class:`saved.report.Counterexample` the search built: ``input = seed + delta``,
    where ``index`` is the seed sample in the data (the report's counterexamples are data
    samples themselves; these are new inputs near one)."""

    delta: Tensor
    input: Tensor


def find_counterexample(
    model: nn.Module,
    decomposition: Decomposition,
    data: Any,
    *,
    radius: float = 0.1,
    max_examples: int = 300,
    domain: tuple[float, float] | None = None,
) -> SearchedCounterexample | None:
    """Search for an input where ``decomposition`` and ``model`` predict different classes.

    Inputs are a seed sample (drawn among the data in order of increasing margin, so the
    search starts at the boundary and shrinks toward the lowest-margin seed) plus a
    perturbation with every coordinate in ``[-radius, radius]`` (shrinking toward 0), clamped
    to ``domain`` (by default the data's own range). Returns the shrunk counterexample, or
    ``None`` if ``max_examples`` found none.
    """
    inputs = match_dtype(as_inputs(data).without_labels(), model)
    if inputs.is_mapping:
        raise TypeError("find_counterexample: expects tensor inputs (features or images)")
    x = inputs.tensor.float()
    margins = logit_margins(predict_logits(model, inputs))
    order = margins.argsort(stable=True)
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

    def build(candidate: tuple[int, np.ndarray]) -> tuple[int, Tensor, Tensor]:
        rank, values = candidate
        index = int(order[rank])
        delta = torch.from_numpy(values.copy()).to(x.dtype).view(1, *shape)
        return index, delta, (x[index : index + 1] + delta).clamp(low, high)

    # one forward pass per candidate: the model and its K components together
    with decomposition.joint_predictor() as evaluate:

        def disagrees(candidate: tuple[int, np.ndarray]) -> bool:
            _, _, point = build(candidate)
            logits, decomposed = evaluate(point)
            hypothesis.target(-float(logit_margins(logits)[0]), label="negative margin")
            return bool(decomposed[0] != logits.argmax(1)[0])

        # Keyed by what the search depends on, so Hypothesis's example database replays the
        # shrunk counterexample on a re-run instead of searching and shrinking again.
        key = hashlib.sha256(
            f"{saved.fingerprint(model)}|{saved.fingerprint(decomposition.masks)}|"
            f"{saved.fingerprint(x)}|{radius}|{low}|{high}".encode()
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
    index, delta, point = build(found)
    logits = predict_logits(model, as_inputs(point))  # re-checked outside the search
    return SearchedCounterexample(
        index=index,
        delta=delta,
        input=point,
        reference=int(logits.argmax(1)[0]),
        decomposed=int(decomposition.predict(point)[0]),
        margin=float(logit_margins(logits)[0]),
    )
