"""saved/inputs.py and saved/_runtime.py: every accepted input form, model-output form and
device helper."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from saved import testing
from saved._runtime import forward_logits, frozen_eval, logits_of, predict_logits
from saved.embedding import embed_inputs, word_embeddings
from saved.inputs import Inputs, as_inputs


@pytest.fixture()
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(10, 3, generator=generator), torch.arange(10) % 3


def _forms(x: torch.Tensor, y: torch.Tensor) -> dict[str, object]:
    return {
        "tensor": x,
        "dataset": TensorDataset(x, y),
        "loader-pairs": DataLoader(TensorDataset(x, y), batch_size=4),
        "loader-tensors": DataLoader(x, batch_size=3),
        "dict": {"x": x, "labels": y},
        "loader-dicts": DataLoader([{"x": x[i], "labels": y[i]} for i in range(10)], batch_size=4),
    }


@pytest.mark.parametrize(
    "form", ["tensor", "dataset", "loader-pairs", "loader-tensors", "dict", "loader-dicts"]
)
def test_every_form_gives_the_same_samples_and_labels(form: str, xy) -> None:
    x, y = xy
    inputs = as_inputs(_forms(x, y)[form])
    assert len(inputs) == 10
    rebuilt = torch.cat([b["x"] if isinstance(b, dict) else b for b in inputs.batches(4)])
    assert torch.equal(rebuilt, x)
    has_labels = form not in ("tensor", "loader-tensors")
    assert (inputs.labels is not None) == has_labels
    if inputs.labels is not None:
        assert torch.equal(inputs.labels, y)
    # explicit labels win over found ones
    other = (y + 1) % 3
    assert torch.equal(as_inputs(_forms(x, y)[form], labels=other).labels, other)


def test_batches_cover_all_samples_in_order_with_a_short_tail(xy) -> None:
    x, _ = xy
    sizes = [b.shape[0] for b in as_inputs(x).batches(4)]
    assert sizes == [4, 4, 2]


def test_select_and_concat_keep_fields_and_labels(xy) -> None:
    x, y = xy
    inputs = as_inputs(x, labels=y)
    picked = inputs.select([7, 2, 2])
    assert torch.equal(picked.batch(slice(None)), x[[7, 2, 2]])
    assert picked.labels.tolist() == [y[7], y[2], y[2]]
    joined = inputs.concat(picked)
    assert len(joined) == 13
    assert torch.equal(joined.batch(slice(10, None)), x[[7, 2, 2]])
    with pytest.raises(ValueError, match="forms differ"):
        inputs.concat(as_inputs({"input_ids": torch.zeros(2, 3, dtype=torch.long)}))
    with pytest.raises(ValueError, match="one side has labels"):
        inputs.concat(as_inputs(x))
    with pytest.raises(IndexError, match="out of range for 10 samples"):
        inputs.select([10])


@pytest.mark.parametrize(
    ("data", "labels", "error", "match"),
    [
        (torch.zeros(0, 3), None, ValueError, r"empty data \(0 samples\)"),
        (DataLoader(torch.zeros(0, 3), batch_size=2), None, ValueError, "yielded no batches"),
        (torch.tensor([[0.0, math.nan]]), None, ValueError, "1 non-finite values"),
        (torch.tensor([[math.inf, 0.0]]), None, ValueError, "non-finite"),
        (torch.zeros(3, 2), torch.tensor([0, 1]), ValueError, "labels: 2 labels for 3 samples"),
        (torch.zeros(3, 2), torch.tensor([0.5, 1, 0]), TypeError, "non-integral"),
        ([1, 2, 3], None, TypeError, "expected a tensor, TensorDataset, DataLoader or dict"),
        ({"input_ids": [1, 2]}, None, TypeError, r"data\['input_ids'\]: expected a tensor"),
        ({"a": torch.zeros(2), "b": torch.zeros(3)}, None, ValueError, "disagree on the number"),
    ],
)
def test_bad_inputs_raise_clear_errors(data, labels, error, match) -> None:
    with pytest.raises(error, match=match):
        as_inputs(data, labels=labels)


def test_logits_of_every_output_form() -> None:
    logits = torch.randn(4, 3)
    assert logits_of(logits) is logits
    assert logits_of((logits, "hidden")) is logits
    assert logits_of(SimpleNamespace(logits=logits)) is logits
    assert logits_of({"logits": logits}) is logits
    with pytest.raises(ValueError, match=r"logits of shape \[batch, classes\], got \(4,\)"):
        logits_of(torch.zeros(4))
    with pytest.raises(TypeError, match="got str"):
        logits_of("nope")


class _BrokenModel(nn.Module):
    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output[: x.shape[0]]


def test_predict_logits_rejects_bad_model_outputs() -> None:
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="non-finite logits"):
        predict_logits(_BrokenModel(torch.full((4, 3), math.nan)), as_inputs(x))
    with pytest.raises(ValueError, match="2 rows of logits for a batch of 4"):
        predict_logits(_BrokenModel(torch.zeros(2, 3)), as_inputs(x))


def test_predict_logits_matches_a_plain_forward_in_eval_mode(digits_cnn, digits_images) -> None:
    x, _ = digits_images
    with torch.no_grad():
        expected = digits_cnn.eval()(x[:300])
    got = predict_logits(digits_cnn, as_inputs(x[:300]), batch_size=64)
    assert torch.allclose(got, expected, atol=1e-5)


def test_frozen_eval_restores_mixed_modes_and_flags_even_on_error() -> None:
    model = testing.tiny_resnet(seed=0)
    model.train()
    model.stem.eval()
    model.fc.weight.requires_grad_(False)
    before = testing.state_snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), frozen_eval(model):
        assert not model.training and not model.conv1.weight.requires_grad
        raise RuntimeError("boom")
    assert testing.state_snapshot(model) == before


def test_embedding_space_reproduces_token_logits() -> None:
    bert = testing.tiny_bert(num_labels=3, seed=0).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 512, (12, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[:4, 6:] = 0
    tokens = as_inputs({"input_ids": ids, "attention_mask": mask})
    embedded = embed_inputs(bert, tokens)
    assert embedded.keys == ("inputs_embeds", "attention_mask")
    assert embedded.fields["inputs_embeds"].shape == (12, 9, 32)
    assert torch.allclose(predict_logits(bert, embedded), predict_logits(bert, tokens), atol=1e-5)
    assert word_embeddings(bert) is bert.bert.embeddings.word_embeddings
    with pytest.raises(TypeError, match="has no word embedding table"):
        word_embeddings(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="needs a transformers batch with 'input_ids'"):
        embed_inputs(bert, as_inputs(torch.zeros(2, 3)))


def test_forward_logits_calls_dicts_by_keyword() -> None:
    vit = testing.tiny_vit(seed=0).eval()
    images = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(
            forward_logits(vit, {"pixel_values": images}), forward_logits(vit, images)
        )


def test_batch_size_is_validated(xy) -> None:
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        next(as_inputs(xy[0]).batches(0))


def test_inputs_is_immutable_by_construction(xy) -> None:
    inputs = as_inputs(xy[0])
    assert isinstance(inputs, Inputs)
    with pytest.raises(AttributeError):
        inputs.labels = None  # type: ignore[misc]


def test_trimming_trailing_padding_keeps_the_logits(debian_bert, debian_text) -> None:
    from saved._runtime import forward_logits, frozen_eval
    from saved.inputs import trim_padding

    batch, _, _ = debian_text
    rows = {k: v[:16].clone() for k, v in batch.items()}  # not the session fixture's views
    rows["attention_mask"][:, 10:] = 0  # every row padded beyond position 10
    trimmed = trim_padding(rows)
    assert trimmed["input_ids"].shape[1] == 10
    assert all(v.shape[1] == 10 for v in trimmed.values())
    with frozen_eval(debian_bert), torch.no_grad():
        full = forward_logits(debian_bert, rows)
        short = forward_logits(debian_bert, trimmed)
    assert torch.allclose(full, short, atol=1e-5)
    images = torch.zeros(2, 1, 8, 8)
    assert trim_padding(images) is images  # nothing to trim outside text batches


def test_length_order_sorts_texts_by_their_last_attended_position() -> None:
    mask = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 1, 0]]
    )
    texts = as_inputs({"input_ids": torch.ones_like(mask), "attention_mask": mask})
    # lengths 3, 1, 5, 1, 4: ties keep their data order
    assert texts.length_order().tolist() == [1, 3, 0, 4, 2]
    assert as_inputs(torch.zeros(3, 4)).length_order() is None
    assert as_inputs({"input_ids": torch.ones_like(mask)}).length_order() is None
