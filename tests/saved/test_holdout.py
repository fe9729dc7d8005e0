"""saved/holdout.py: certificates on samples the decomposition never saw — the split is
disjoint, stratified and seeded, ``calibration=`` certifies on all of the data, and the same
samples on both sides are refused silently never."""

from __future__ import annotations

import pytest
import torch

import saved
import saved.pipeline
from saved import LBMaskConfig, SameSamplesWarning, as_inputs, predict_logits
from saved.holdout import stratified_split

QUICK = LBMaskConfig(steps=3, batch_size=16)


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(row.tolist()) for row in x}


def test_no_sample_that_learned_the_masks_is_evaluated(digits_mlp, digits_xy, monkeypatch):
    x, y = digits_xy
    unique = torch.tensor(sorted(set(range(len(x))) - _duplicates(x)))
    x, y = x[unique], y[unique]  # a few digits repeat exactly: identity by value needs them out
    seen: dict[str, list[torch.Tensor]] = {"decomposed": [], "evaluated": []}
    mine, stream = saved.pipeline.mine_boundary, saved.pipeline.iter_inputs

    def recording_mine(model, inputs, *args, **kwargs):
        seen["decomposed"].append(inputs.fields["x"])
        return mine(model, inputs, *args, **kwargs)

    def recording_stream(*args, **kwargs):
        for chunk in stream(*args, **kwargs):
            seen["evaluated"].append(chunk.fields["x"])
            yield chunk

    monkeypatch.setattr(saved.pipeline, "mine_boundary", recording_mine)
    monkeypatch.setattr(saved.pipeline, "iter_inputs", recording_stream)
    report = saved.check(digits_mlp, x, labels=y, lbmask=QUICK, progress=False)
    decomposed = _rows(torch.cat(seen["decomposed"]))
    evaluated = _rows(torch.cat(seen["evaluated"]))
    assert not decomposed & evaluated
    assert len(decomposed) + len(evaluated) == len(x)
    assert report.split is not None and report.split.mode == "held-out"
    assert report.split.disjoint is True
    assert (report.split.n_decomposition, report.split.n_evaluation) == (
        len(decomposed),
        len(evaluated),
    )
    assert report.n_samples == len(evaluated)


def _duplicates(x: torch.Tensor) -> set[int]:
    first: dict[tuple[float, ...], int] = {}
    repeated: set[int] = set()
    for index, row in enumerate(x):
        key = tuple(row.tolist())
        if key in first:
            repeated |= {index, first[key]}
        first.setdefault(key, index)
    return repeated


def test_split_is_stratified_by_the_reference_prediction_and_seeded(digits_mlp, digits_xy):
    x, _ = digits_xy
    predictions = predict_logits(digits_mlp, as_inputs(x)).argmax(1)
    plan = saved.holdout(digits_mlp, x, seed=3)
    assert plan.evaluate_keep is not None and plan.decompose_keep is not None
    assert torch.equal(plan.evaluate_keep, ~plan.decompose_keep)
    for label in torch.unique(predictions).tolist():
        members = predictions == label
        held = int((plan.evaluate_keep & members).sum())
        assert held == int(0.5 * int(members.sum()) + 0.5)  # floor(f * n_c + 1/2)
    again = saved.holdout(digits_mlp, x, seed=3)
    other = saved.holdout(digits_mlp, x, seed=4)
    assert torch.equal(plan.evaluate_keep, again.evaluate_keep)
    assert not torch.equal(plan.evaluate_keep, other.evaluate_keep)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
def test_evaluation_fraction_sets_the_share_held_out(fraction: float) -> None:
    predictions = torch.arange(1000) % 4
    held = stratified_split(predictions, fraction, seed=0)
    assert int(held.sum()) == round(fraction * 1000)
    assert stratified_split(torch.tensor([0, 1]), fraction, 0).sum() == 1  # both parts kept


def test_calibration_certifies_on_all_of_the_data(digits_mlp, digits_xy) -> None:
    x, y = digits_xy
    report = saved.check(
        digits_mlp, x[:900], labels=y[:900], calibration=x[900:], lbmask=QUICK, progress=False
    )
    assert report.n_samples == 900
    assert report.split is not None and report.split.mode == "calibration"
    assert report.split.n_decomposition == len(x) - 900


def test_the_same_samples_on_both_sides_warn_and_say_so(digits_mlp, digits_xy) -> None:
    x, _ = digits_xy
    with pytest.warns(SameSamplesWarning, match="optimistic.*not valid"):
        report = saved.check(digits_mlp, x, calibration=x.clone(), method="random")
    assert report.split is not None and report.split.mode == "same-samples"
    assert report.split.disjoint is False
    literal = saved.check(digits_mlp, x, same_samples=True, method="random")
    assert literal.split is not None and literal.split.mode == "same-samples"
    assert literal.n_samples == len(x)
    assert "Algorithm 1" in literal.split.describe()
    with pytest.raises(ValueError, match="not both"):
        saved.holdout(digits_mlp, x, calibration=x, same_samples=True)


@pytest.mark.parametrize(
    ("fraction", "error", "match"),
    [
        (0.0, ValueError, r"evaluation_fraction: expected a value in \(0, 1\)"),
        (1.0, ValueError, r"evaluation_fraction: expected a value in \(0, 1\)"),
        (-0.5, ValueError, r"evaluation_fraction: expected a value in \(0, 1\)"),
        (True, TypeError, "evaluation_fraction: expected a number, got bool"),
    ],
)
def test_bad_fractions_are_refused(digits_mlp, digits_xy, fraction, error, match) -> None:
    x, _ = digits_xy
    with pytest.raises(error, match=match):
        saved.holdout(digits_mlp, x, evaluation_fraction=fraction)
