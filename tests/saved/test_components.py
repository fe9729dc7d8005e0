"""saved/components.py: Phase 1 components, aggregation, and the one label mapping."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from saved import testing
from saved._runtime import predict_logits
from saved.components import ClassComponents
from saved.inputs import as_inputs

# --------------------------------------------------------------------------- exactness, unmasked


def _decomposed_equals_reference(model: torch.nn.Module, data: object, num_classes: int) -> None:
    logits = predict_logits(model, as_inputs(data))
    components = ClassComponents(num_classes)
    shared = components.predict(logits)  # one forward pass for all K components
    per_component = components.predict(logits.expand(num_classes, -1, -1))  # [K, n, C] form
    reference = logits.argmax(dim=1)
    assert torch.equal(shared, reference)
    assert torch.equal(per_component, reference)
    # the model must not be constant, or exactness would be trivial
    assert reference.unique().numel() >= 2


def test_unmasked_mlp_reproduces_predictions_tensor_and_loader(digits_mlp, digits_xy) -> None:
    x, y = digits_xy
    _decomposed_equals_reference(digits_mlp, x, 10)
    loader = DataLoader(TensorDataset(x, y), batch_size=100)
    _decomposed_equals_reference(digits_mlp, loader, 10)


def test_unmasked_cnn_reproduces_predictions_tensor_and_loader(digits_cnn, digits_images) -> None:
    x, y = digits_images
    _decomposed_equals_reference(digits_cnn, x, 10)
    _decomposed_equals_reference(digits_cnn, DataLoader(TensorDataset(x, y), batch_size=128), 10)


def test_unmasked_vit_reproduces_predictions_tensor_dict_and_loader(digits_images) -> None:
    x, y = digits_images
    x, y = x[:400], y[:400]
    vit = testing.train_classifier(testing.tiny_vit(seed=1), x, y, steps=30, lr=3e-3)
    _decomposed_equals_reference(vit, x, 10)
    _decomposed_equals_reference(vit, {"pixel_values": x}, 10)
    batches = [{"pixel_values": x[i : i + 64], "labels": y[i : i + 64]} for i in range(0, 400, 64)]
    _decomposed_equals_reference(vit, DataLoader(batches, batch_size=None), 10)


def test_unmasked_bert_reproduces_predictions_dict_and_loader() -> None:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 512, (300, 16), generator=generator)
    mask = torch.ones_like(ids)
    mask[::3, 10:] = 0  # padded rows
    bert = testing.tiny_bert(num_labels=4, seed=2).eval()
    batch = {"input_ids": ids, "attention_mask": mask}
    _decomposed_equals_reference(bert, batch, 4)
    _decomposed_equals_reference(bert, ids, 4)
    rows = [{"input_ids": ids[i], "attention_mask": mask[i]} for i in range(300)]
    _decomposed_equals_reference(bert, DataLoader(rows, batch_size=32), 4)  # default collate


@given(
    st.integers(1, 30).flatmap(
        lambda n: st.lists(
            st.lists(
                st.sampled_from([-1.0, 0.0, 0.5, 2.0]) | st.floats(-3, 3), min_size=5, max_size=5
            ),
            min_size=n,
            max_size=n,
        )
    ),
    st.sampled_from(["paper", "margin"]),
)
def test_both_aggregators_reproduce_argmax_with_ties(rows: list, aggregator: str) -> None:
    logits = torch.tensor(rows)
    components = ClassComponents(5, aggregator=aggregator)  # type: ignore[arg-type]
    assert torch.equal(components.predict(logits), logits.argmax(dim=1))


# --------------------------------------------------------------------------- component outputs


def test_component_outputs_by_hand() -> None:
    logits = torch.tensor([[1.0, 4.0, 2.0, -1.0]])
    components = ClassComponents(4, positive_sets=((0, 2), (1,), (3,)))
    m, best = components.outputs(logits)
    expected = torch.tensor([[[2.0, 4.0], [4.0, 2.0], [-1.0, 4.0]]])
    assert torch.equal(m, expected)
    assert best.tolist() == [[2, 1, 3]]
    assert components.predict(logits).tolist() == [1]
    margin = ClassComponents(4, positive_sets=((0, 2), (1,), (3,)), aggregator="margin")
    assert margin.scores(m).tolist() == [[-2.0, 2.0, -5.0]]


def test_masked_components_are_aggregated_per_component() -> None:
    # component 0 thinks class 0 at 5.0; component 1 thinks class 1 at 3.0: component 0 wins
    per_component = torch.tensor([[[5.0, 0.0, 1.0]], [[0.0, 3.0, 9.0]], [[0.0, 0.0, 4.0]]])
    assert ClassComponents(3).predict(per_component).tolist() == [0]
    # margin aggregator: component 0 scores 5 - 1 = 4, component 2 scores 4 - 0 = 4; the first wins
    assert ClassComponents(3, aggregator="margin").predict(per_component).tolist() == [0]


def test_binary_targets_pin_the_label_mapping() -> None:
    components = ClassComponents(4, positive_sets=((0, 2), (1,), (3,)))
    targets = components.binary_targets(torch.tensor([2, 1, 3, 0]))
    assert targets.tolist() == [
        [True, False, False],
        [False, True, False],
        [False, False, True],
        [True, False, False],
    ]
    # one component per class: the target of component k is "the reference predicts k"
    single = ClassComponents(3).binary_targets(torch.tensor([0, 2, 2, 1]))
    assert single.tolist() == [
        [True, False, False],
        [False, False, True],
        [False, False, True],
        [False, True, False],
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes: expected an integer >= 2"),
        ({"num_classes": 3, "aggregator": "mean"}, "aggregator: expected one of"),
        ({"num_classes": 3, "positive_sets": ((0, 1, 2),)}, "at least two components"),
        ({"num_classes": 3, "positive_sets": ((0,), ())}, r"positive_sets\[1\]: empty"),
        ({"num_classes": 3, "positive_sets": ((0, 1), (1, 2))}, "in two sets"),
        (
            {"num_classes": 3, "positive_sets": ((0,), (1,))},
            r"classes \[2\] belong to no component",
        ),
        ({"num_classes": 3, "positive_sets": ((0,), (1, 5))}, r"outside \[0, 3\)"),
    ],
)
def test_components_reject_bad_configuration(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassComponents(**kwargs)


def test_components_reject_logits_of_the_wrong_shape() -> None:
    components = ClassComponents(3)
    with pytest.raises(ValueError, match="expected C = 3 classes, got 4"):
        components.predict(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[K=3, n, C\]"):
        components.predict(torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="outside"):
        components.binary_targets(torch.tensor([0, 3]))
