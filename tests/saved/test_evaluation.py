"""saved/evaluation.py and saved/report.py: a report checked by hand, round trips, rendering,
and the guarantee that no call changes the user's model."""

from __future__ import annotations

import json
import re

import pytest
import torch
from rich.console import Console

from saved import (
    ClassComponents,
    Contract,
    ContractReport,
    as_inputs,
    assess,
    predict_logits,
    testing,
)
from saved.contract import clopper_pearson_upper, hoeffding_radius
from saved.embedding import embed_inputs
from saved.report import render_report


def _hand_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # margins: 0.1, 2.0, 0.3, 5.0, 0.2 -> with kappa = 0.6, |B| = floor(3.5) = 3: samples 0, 4, 2
    logits = torch.tensor(
        [[1.0, 0.9, 0.0], [3.0, 1.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 5.0], [0.0, 0.0, 0.2]]
    )
    decomposed = torch.tensor([1, 0, 1, 2, 0])  # sample 0 disagrees (in B), sample 4 too
    supports = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    labels = torch.tensor([0, 0, 1, 2, 1])
    return logits, decomposed, supports, labels


def test_assess_by_hand() -> None:
    logits, decomposed, supports, labels = _hand_example()
    contract = Contract(eps=0.9, kappa=0.6, gamma=0.4, eta=0.5)
    report = assess(contract, logits, decomposed, supports, labels=labels, method="hand")
    assert report.n_boundary == 3
    assert report.boundary_margin == pytest.approx(0.3)
    assert report.disagreement == pytest.approx(2 / 3)
    assert report.hoeffding == pytest.approx(hoeffding_radius(3, 0.05))
    # 2 of 3 disagree: the binomial limit (the default bound) is the verdict's
    assert report.binomial == pytest.approx(clopper_pearson_upper(2, 3, 0.05))
    assert report.semantic_bound == report.binomial
    assert report.bounds["hoeffding"] == pytest.approx(2 / 3 + hoeffding_radius(3, 0.05))
    # one boundary sample per class, delta shared by the 3 classes: 0 of 1 gives 1 - delta/6
    uppers = [row.upper_bound for row in report.per_class]
    assert uppers == pytest.approx([1.0, 1 - 0.05 / 6, 1.0])
    assert report.global_disagreement == pytest.approx(2 / 5)
    assert report.max_overlap == pytest.approx(1 / 3)
    assert report.sizes == pytest.approx([0.5, 0.5, 0.25])
    assert report.min_prune == pytest.approx(0.5)
    # B = {0, 4, 2}: (label, y, y_dec) = (0, 0, 1), (1, 2, 0), (1, 1, 1)
    # C:     (0,0) (1,2) (1,1)  C_dec: (0,1) (1,0) (1,1) -> L1 = 4 * 1/3
    assert report.confusion_deviation == pytest.approx(4 / 3)
    assert [(c.index, c.reference, c.decomposed, c.label) for c in report.counterexamples] == [
        (0, 0, 1, 0),
        (4, 2, 0, 1),
    ]
    assert [c.margin for c in report.counterexamples] == pytest.approx([0.1, 0.2])
    per_class = {row.class_index: (row.n_boundary, row.disagreement) for row in report.per_class}
    assert per_class == {0: (1, 1.0), 1: (1, 0.0), 2: (1, 1.0)}
    summary = report.class_summary
    assert (summary["best"].class_index, summary["worst"].class_index) == (1, 2)
    # semantic fails (2/3 + h > 0.9), structural holds (1/3 <= 0.4), reduction holds (0.5 >= 0.5)
    assert report.failed_axes == ["semantic"]
    assert not report.holds


def test_contract_holds_only_when_every_axis_holds() -> None:
    logits, _, supports, _ = _hand_example()
    agree = logits.argmax(1)
    lenient = Contract(eps=1.0, kappa=1.0, gamma=0.4, eta=0.5)
    assert assess(lenient, logits, agree, supports).holds
    assert assess(
        Contract(eps=1.0, kappa=1.0, gamma=0.3, eta=0.5), logits, agree, supports
    ).failed_axes == ["structural"]
    assert assess(
        Contract(eps=1.0, kappa=1.0, gamma=0.4, eta=0.6), logits, agree, supports
    ).failed_axes == ["reduction"]


def test_absolute_margin_rule_and_empty_boundary() -> None:
    logits, decomposed, supports, _ = _hand_example()
    report = assess(Contract(kappa_margin=0.25), logits, decomposed, supports)
    assert report.n_boundary == 2  # margins 0.1 and 0.2
    with pytest.raises(ValueError, match="empty boundary subset"):
        assess(Contract(kappa_margin=0.05), logits, decomposed, supports)


def test_report_json_round_trip_and_rendering() -> None:
    logits, decomposed, supports, labels = _hand_example()
    report = assess(Contract(kappa=0.6), logits, decomposed, supports, labels=labels)
    text = report.to_json()
    data = json.loads(text)
    assert data["verdicts"]["holds"] is False
    assert data["verdicts"]["semantic_bound"] == pytest.approx(report.semantic_bound)
    again = ContractReport.from_json(text)
    assert again == report
    assert again.to_dict() == report.to_dict()
    data["version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        ContractReport.from_dict(data)
    console = Console(record=True, width=120)
    console.print(render_report(report))
    rendered = console.export_text()
    assert f"{report.semantic_bound:.4f}" in rendered
    assert "Contract fails: semantic" in rendered and "structural" not in report.failed_axes
    assert "Counterexamples (2, lowest margin first)" in rendered
    assert re.search(r"│\s+0 │\s+0 │\s+1 │\s+0.1 │\s+0 │", rendered)


@pytest.mark.parametrize(
    ("training", "limited"),
    [
        ({"steps_run": 400, "best_step": 400, "stopped": "max_steps", "seconds": 9.0}, True),
        ({"steps_run": 120, "best_step": 120, "stopped": "time_budget", "seconds": 5.0}, True),
        ({"steps_run": 400, "best_step": 300, "stopped": "max_steps", "seconds": 9.0}, False),
        ({"steps_run": 300, "best_step": 225, "stopped": "converged", "seconds": 7.0}, False),
        ({"steps_run": 50, "best_step": 50, "stopped": "steps", "seconds": 1.0}, False),
    ],
)
def test_a_failure_says_when_mask_learning_was_cut_while_still_improving(
    training: dict, limited: bool
) -> None:
    logits, decomposed, supports, _labels = _hand_example()
    report = assess(Contract(kappa=0.6), logits, decomposed, supports, training=training)
    assert report.budget_limited is limited
    assert not report.semantic_holds
    message = report.explain()
    assert f"{training['steps_run']} steps, best at {training['best_step']}" in message
    assert ("still improving" in message) is limited
    again = ContractReport.from_json(report.to_json())
    assert again.training == report.training and again.budget_limited is limited
    assert again.to_dict()["training"] == training
    console = Console(record=True, width=300)
    console.print(render_report(report))
    assert f"stopped ({training['stopped']})" in console.export_text()


def test_the_margin_profile_by_hand_in_every_form() -> None:
    """Margins 0.1, 2.0, 0.3, 5.0, 0.2 in 5 deciles of one sample each: samples 0, 4, 2, 1, 3;
    samples 0 and 4 disagree."""
    logits, decomposed, supports, _ = _hand_example()
    report = assess(Contract(kappa=0.6), logits, decomposed, supports)
    profile = report.margin_profile
    assert [(b.index, b.n_samples, b.n_disagreements) for b in profile] == [
        (0, 1, 1),
        (1, 1, 1),
        (2, 1, 0),
        (3, 1, 0),
        (4, 1, 0),
    ]
    assert [b.margin_low for b in profile] == pytest.approx([0.1, 0.2, 0.3, 2.0, 5.0])
    data = report.to_dict()
    assert data["version"] == 5
    assert [b["disagreement"] for b in data["margin_profile"]] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert ContractReport.from_json(report.to_json()).margin_profile == profile
    line = "Dis by margin decile, lowest margins first: 1.00 1.00 0.00 0.00 0.00 (n = 1 each"
    assert line in report.explain()
    console = Console(record=True, width=120)
    console.print(render_report(report))
    rendered = console.export_text()
    assert "Disagreement by margin decile" in rendered
    assert re.search(r"│\s+2 │\s+0.2 - 0.2 │\s+1 │\s+1 │\s+1.0000 │", rendered)
    data["version"] = 3
    del data["margin_profile"]
    older = ContractReport.from_dict(data)
    assert older.margin_profile == [] and older.margin_line() is None


def test_reports_of_version_2_are_still_read() -> None:
    logits, decomposed, supports, _ = _hand_example()
    report = assess(Contract(kappa=0.6), logits, decomposed, supports)
    data = report.to_dict()
    data["version"] = 2
    del data["training"]
    again = ContractReport.from_dict(data)
    assert again.training is None and again.training_note() is None
    assert again.disagreement == report.disagreement


def test_assess_rejects_bad_inputs() -> None:
    logits, decomposed, supports, _ = _hand_example()
    with pytest.raises(TypeError, match=r"contract: expected a saved\.Contract"):
        assess({"eps": 0.1}, logits, decomposed, supports)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decomposed_predictions: expected 5 predictions"):
        assess(Contract(), logits, decomposed[:3], supports)
    with pytest.raises(ValueError, match="labels: expected 5 integer labels"):
        assess(Contract(), logits, decomposed, supports, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels: class indices outside \[0, 3\)"):
        assess(Contract(), logits, decomposed, supports, labels=torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="non-finite"):
        assess(Contract(), torch.full((5, 3), float("nan")), decomposed, supports)


# --------------------------------------------------------------------------- nothing lost


def _digits_mlp_in_mixed_state() -> tuple[torch.nn.Module, torch.Tensor]:
    x, _ = testing.digits()
    model = testing.tiny_mlp(seed=5)
    model.train()
    model[0].eval()  # a mixed train/eval setup must survive
    model[2].weight.requires_grad_(False)
    return model, x[:200]


def _run_everything(model: torch.nn.Module, x: torch.Tensor) -> None:
    logits = predict_logits(model, as_inputs(x))
    decomposed = ClassComponents(10).predict(logits)
    supports = torch.ones(10, 5, dtype=torch.bool)
    assess(Contract(), logits, decomposed, supports)


@pytest.mark.parametrize("model_kind", ["mlp", "resnet", "bert"])
def test_no_call_changes_the_users_model(model_kind: str) -> None:
    if model_kind == "mlp":
        model, x = _digits_mlp_in_mixed_state()
        calls = [lambda: _run_everything(model, x)]
    elif model_kind == "resnet":
        model = testing.tiny_resnet(seed=1).train()  # BatchNorm running stats must not move
        images = testing.digits(images=True)[0][:100]
        calls = [lambda: _run_everything(model, images)]
    else:
        model = testing.tiny_bert(num_labels=10, seed=1).train()  # dropout active
        ids = torch.randint(5, 512, (20, 8), generator=torch.Generator().manual_seed(0))
        tokens = as_inputs({"input_ids": ids})
        calls = [
            lambda: predict_logits(model, tokens),
            lambda: predict_logits(model, embed_inputs(model, tokens)),
        ]
    before = testing.state_snapshot(model)
    for call in calls:
        call()
    assert testing.state_snapshot(model) == before


def test_no_state_change_on_the_error_path() -> None:
    model, _ = _digits_mlp_in_mixed_state()
    before = testing.state_snapshot(model)
    with pytest.raises(ValueError, match=r"calling it on the data \(x: float32 \[4, 7\]\) failed"):
        predict_logits(model, as_inputs(torch.zeros(4, 7)))  # wrong feature count
    assert testing.state_snapshot(model) == before


def test_the_html_report_says_how_mask_learning_ended() -> None:
    """The plugin's HTML page carries the same training line as the failure message, escaped."""
    from pytest_decompose.report import render_html

    logits, decomposed, supports, _labels = _hand_example()
    training = {"steps_run": 400, "best_step": 400, "stopped": "max_steps", "seconds": 9.0}
    report = assess(Contract(kappa=0.6), logits, decomposed, supports, training=training)
    entry = {"nodeid": "test_x.py::test_<model>", "report": report.to_dict()}
    page = render_html({"results": [entry], "python": "3.11"})
    note = report.training_note()
    assert note is not None and "still improving" in note
    assert f"<p class='training'>{note}</p>" in page  # the note has nothing to escape
    assert "test_x.py::test_&lt;model&gt;" in page
    untrained = assess(Contract(kappa=0.6), logits, decomposed, supports)
    plain = render_html({"results": [{"nodeid": "t", "report": untrained.to_dict()}], "python": ""})
    assert "class='training'" not in plain
