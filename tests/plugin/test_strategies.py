"""pytest_decompose/strategies.py: Hypothesis finds boundary points and shrinks counterexamples."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from pytest_decompose.strategies import boundary_inputs, find_counterexample
from saved import ClassComponents, Counterexample, Decomposition, as_inputs, predict_logits, testing
from saved.baselines import random
from saved.embedding import word_embeddings
from saved.masking.units import UnitSpace

X, Y = testing.digits()
MODEL = testing.train_classifier(testing.tiny_mlp(hidden=(128, 128), seed=0), X, Y, steps=300)


@settings(settings.get_profile("decompose"), max_examples=15)
@given(boundary_inputs(MODEL, X[:300]))
def test_drawn_points_sit_on_the_decision_boundary(point: torch.Tensor) -> None:
    probs = predict_logits(MODEL, as_inputs(point)).softmax(1)[0]
    top2 = probs.topk(2).values
    assert float(top2[0] - top2[1]) < 1e-4  # the two leading classes are tied to tol
    assert float(point.min()) >= 0.0 and float(point.max()) <= 1.0  # in the data's domain


def _decomposition(sparsity: float | None) -> Decomposition:
    space = UnitSpace.of(MODEL, X[:2])
    if sparsity is None:  # unmasked: every component keeps every unit
        masks = torch.ones(10, space.num_units, dtype=torch.bool)
    else:
        masks = random.masks(space, 10, sparsity, seed=0)
    return Decomposition(MODEL, space, ClassComponents(10), masks, "random")


def test_finds_and_shrinks_a_counterexample_of_a_broken_decomposition() -> None:
    broken = _decomposition(0.9)
    found = find_counterexample(MODEL, broken, X[:300], radius=0.1, max_examples=200)
    assert found is not None
    # checked independently of the search: the two predictions really differ
    assert isinstance(found, Counterexample)  # the report's type, with the input it built
    assert int(MODEL(found.input).argmax(1)[0]) == found.reference
    assert int(broken.predict(found.input)[0]) == found.decomposed != found.reference
    # shrunk toward the seed sample: the perturbation collapses to zero
    assert float(found.delta.abs().max()) == 0.0
    assert torch.equal(found.input, X[found.index : found.index + 1])


def test_an_unfinished_shrink_ends_at_the_unperturbed_seed(monkeypatch) -> None:
    """Where Hypothesis's shrinker stops with tiny non-zero coordinates but the seed itself
    already disagrees, the search returns the seed as it is; where the seed agrees, the
    perturbation Hypothesis found is kept."""
    import hypothesis
    import numpy as np

    broken = _decomposition(0.9)
    flips = broken.predict(X[:300]) != MODEL(X[:300]).argmax(1)
    margins = MODEL(X[:300]).detach().topk(2, 1).values
    order = (margins[:, 0] - margins[:, 1]).argsort(stable=True)
    flipped_rank = int(flips[order].nonzero()[0])  # the lowest-margin seed that disagrees
    kept_rank = int((~flips[order]).nonzero()[0])  # one that agrees
    tiny = np.zeros(64, np.float32)
    tiny[5] = 1e-6

    for rank, zeroed in ((flipped_rank, True), (kept_rank, False)):
        monkeypatch.setattr(hypothesis, "find", lambda *a, _r=rank, **k: (_r, tiny.copy()))
        found = find_counterexample(MODEL, broken, X[:300], radius=0.1)
        assert found is not None and found.index == int(order[rank])
        assert float(found.delta.abs().max()) == (0.0 if zeroed else pytest.approx(1e-6))


def test_finds_nothing_for_the_unmasked_decomposition() -> None:
    exact = _decomposition(None)
    assert find_counterexample(MODEL, exact, X[:300], radius=0.1, max_examples=60) is None


# --------------------------------------------------------------------------- text


@pytest.fixture(scope="module")
def debian_sample(debian_text):
    _, _, test = debian_text
    return {key: value[:200] for key, value in test.items()}


def _text_decomposition(bert, data, sparsity: float | None) -> Decomposition:
    space = UnitSpace.of(bert, {key: value[:2] for key, value in data.items()})
    if sparsity is None:
        masks = torch.ones(4, space.num_units, dtype=torch.bool)
    else:
        masks = random.masks(space, 4, sparsity, seed=0)
    return Decomposition(bert, space, ClassComponents(4), masks, "random")


def test_finds_and_shrinks_a_text_counterexample_in_embedding_space(
    debian_bert, debian_sample
) -> None:
    broken = _text_decomposition(debian_bert, debian_sample, 0.9)
    found = find_counterexample(debian_bert, broken, debian_sample, max_examples=100)
    assert found is not None and found.field == "inputs_embeds"
    point = found.input
    assert isinstance(point, dict) and set(point) >= {"inputs_embeds", "attention_mask"}
    # re-checked independently of the search and of the masking hooks: the model called as
    # usual on the embeddings, and each component as a standalone smaller network (surgery)
    # with the paper's aggregator written out, argmax_k F^(k)_k
    with torch.no_grad():
        reference = int(debian_bert(**point).logits.argmax(1)[0])
        own = torch.stack([broken.component(k)(**point).logits[0, k] for k in range(4)])
    assert reference == found.reference
    assert int(own.argmax()) == found.decomposed != found.reference
    # shrunk to the unperturbed text: the seed's own tokens, embedded, and its attention mask
    assert float(found.delta.abs().max()) == 0.0
    index = found.index
    tokens = debian_sample["input_ids"][index : index + 1]
    assert torch.equal(point["inputs_embeds"], word_embeddings(debian_bert)(tokens).detach())
    assert torch.equal(point["attention_mask"], debian_sample["attention_mask"][index : index + 1])


def test_finds_no_text_counterexample_for_the_unmasked_decomposition(
    debian_bert, debian_sample
) -> None:
    exact = _text_decomposition(debian_bert, debian_sample, None)
    assert find_counterexample(debian_bert, exact, debian_sample, max_examples=40) is None


def test_text_perturbations_move_real_tokens_and_leave_padding_alone(
    debian_bert, debian_sample
) -> None:
    """Every input the search tries, seen as the model receives it: where the attention mask
    is 0 the [PAD] embedding is untouched, and real tokens do get moved off the table."""
    exact = _text_decomposition(debian_bert, debian_sample, None)  # nothing to find: it explores
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(module, args, kwargs) -> None:
        if "inputs_embeds" in kwargs:
            seen.append((kwargs["inputs_embeds"].detach(), kwargs["attention_mask"]))

    table = word_embeddings(debian_bert).weight.detach()
    pad = table[debian_bert.config.pad_token_id]
    handle = debian_bert.register_forward_pre_hook(record, with_kwargs=True)
    try:
        assert find_counterexample(debian_bert, exact, debian_sample, max_examples=30) is None
    finally:
        handle.remove()
    moved = padded = 0
    for embeds, mask in seen:
        for sequence, keep in zip(embeds, mask, strict=True):
            assert bool((sequence[keep == 0] == pad).all())
            padded += int((keep == 0).sum())
            off_table = torch.cdist(sequence[keep == 1], table).min(-1).values > 0
            moved += int(off_table.sum())
    assert padded > 0 and moved > 0


def test_drawn_text_points_sit_on_the_decision_boundary(debian_bert, debian_sample) -> None:
    points = []

    @settings(settings.get_profile("decompose"), max_examples=4, database=None)
    @given(boundary_inputs(debian_bert, debian_sample))
    def collect(point) -> None:
        points.append(point)

    collect()
    assert points
    for point in points:
        assert set(point) >= {"inputs_embeds", "attention_mask"}
        with torch.no_grad():
            probs = debian_bert(**point).logits.softmax(1)[0]
        top2 = probs.topk(2).values
        assert float(top2[0] - top2[1]) < 1e-4
