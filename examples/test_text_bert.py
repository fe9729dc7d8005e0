"""A tiny BERT trained on real Debian package descriptions (4 topic sections): components are
learned in the word-embedding space and checked on held-out texts."""

from __future__ import annotations

import pytest
import torch
from conftest import trained

from pytest_decompose import assert_decomposable
from pytest_decompose.strategies import find_counterexample
from saved import LBMaskConfig, testing
from saved.contract import boundary_size
from saved.datasets import load_debian

TEST = load_debian("debian4", "test")
TEST_BATCH = testing.text_batch(TEST.texts[:600])
SETTINGS = LBMaskConfig(steps=200, batch_size=64, allocation="group")


def _train(model: torch.nn.Module) -> None:
    train = load_debian("debian4", "train")  # tokenised only when the model is not cached
    batch = testing.text_batch(train.texts)
    labels = torch.tensor(train.labels)
    testing.train_classifier(model, batch, labels, steps=150, lr=3e-3, batch_size=64)


MODEL = trained("debian4-tiny-bert", lambda: testing.tiny_bert(num_labels=4, seed=0), _train)


# A 2-layer, 32-wide BERT trained for 150 steps is far from MiniLM: its components keep the
# topic on about 60 % of boundary texts, so this example checks a lenient semantic bound.
# Per-layer quotas (allocation="group"): with only 2 layers, the default one-quota-per-kind
# ("auto" for models with heads) let two components share 0.66 of their units (> gamma);
# per-layer quotas keep the overlap at 0.49.
@pytest.mark.decomposable(eps=0.6, gamma=0.6, eta=0.3)
def test_tiny_bert_topic_components() -> None:
    report = assert_decomposable(
        MODEL,
        TEST_BATCH,
        labels=torch.tensor(TEST.labels[:600]),
        lbmask=SETTINGS,
    )
    # half of the 600 texts (stratified by the model's prediction) certify, the rest decompose
    assert report.split.mode == "held-out" and report.split.disjoint
    assert report.n_samples == report.split.n_evaluation == 600 - report.split.n_decomposition
    assert report.n_boundary == boundary_size(report.n_samples, 0.2)


def test_hypothesis_finds_a_held_out_text_the_components_get_wrong(decompose_engine) -> None:
    """Decompose on 300 texts, then let Hypothesis search the 300 others: word-embedding
    perturbations of real texts (padding untouched) where the components and the model
    disagree, shrunk back to an unperturbed text of the data."""
    first = {key: value[:300] for key, value in TEST_BATCH.items()}
    others = {key: value[300:] for key, value in TEST_BATCH.items()}
    decomposition = decompose_engine.decompose(MODEL, first, lbmask=SETTINGS)
    found = find_counterexample(MODEL, decomposition, others, max_examples=50)
    assert found is not None and found.field == "inputs_embeds"
    assert found.decomposed != found.reference
    assert float(found.delta.abs().max()) == 0.0  # the text as it is, no perturbation needed
