"""saved/boundary/: PGD + bisection reach the decision boundary of real trained models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from saved import testing
from saved._runtime import predict_logits
from saved.boundary import BoundaryConfig, calibration_set, mine_boundary
from saved.contract import logit_margins
from saved.inputs import as_inputs


def _fresh_pair_gaps(model: nn.Module, boundary) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes and softmax gaps of both ends, recomputed independently of the miner."""
    probs_lo = predict_logits(model, boundary.inside).softmax(1)
    probs_hi = predict_logits(model, boundary.outside).softmax(1)
    a, b = boundary.classes[:, 0:1], boundary.classes[:, 1:2]
    gap = torch.maximum(
        (probs_lo.gather(1, a) - probs_lo.gather(1, b)).squeeze(1),
        (probs_hi.gather(1, b) - probs_hi.gather(1, a)).squeeze(1),
    )
    sides_ok = (probs_lo.argmax(1) == a.squeeze(1)) & (probs_hi.argmax(1) == b.squeeze(1))
    return gap, sides_ok


@pytest.mark.parametrize("model_name", ["digits_mlp", "digits_cnn"])
@pytest.mark.parametrize(
    "config", [BoundaryConfig(), BoundaryConfig(norm="2"), BoundaryConfig(targeted=True)]
)
def test_vision_models_reach_the_boundary(model_name: str, config: BoundaryConfig, request) -> None:
    model = request.getfixturevalue(model_name)
    x, _ = testing.digits(images=model_name == "digits_cnn")
    boundary = mine_boundary(model, x, config)
    assert len(boundary) == len(x)
    assert boundary.flip_rate >= 0.90
    flipped = boundary.flipped
    gap, sides_ok = _fresh_pair_gaps(model, boundary)
    good = (gap[flipped] < 1e-4) & sides_ok[flipped]
    assert float(good.double().mean()) >= 0.95
    assert torch.equal(boundary.refined, flipped & (boundary.gaps < 1e-4) & sides_ok)
    # boundary points' margins are at least 100x smaller than the data's
    data_margin = logit_margins(predict_logits(model, as_inputs(x))).median()
    points = boundary.points()
    boundary_margin = logit_margins(predict_logits(model, points)).median()
    assert float(boundary_margin) * 100 <= float(data_margin)


def test_points_stay_in_the_ball_and_the_domain(digits_mlp) -> None:
    x, _ = testing.digits()
    for norm in ("inf", "2"):
        config = BoundaryConfig(norm=norm, radius=0.3 if norm == "inf" else 2.0)
        boundary = mine_boundary(digits_mlp, x, config)
        for side in (boundary.inside, boundary.outside):
            delta = side.fields["x"] - x[boundary.source]
            size = delta.abs().amax(1) if norm == "inf" else delta.norm(dim=1)
            assert float(size.max()) <= config.radius * (1 + 1e-5)
            assert float(side.fields["x"].min()) >= 0.0 and float(side.fields["x"].max()) <= 1.0


def test_text_model_mines_in_embedding_space_and_leaves_padding(debian_bert, debian_text) -> None:
    _, _, test_batch = debian_text
    batch = {k: v[:400] for k, v in test_batch.items()}
    boundary = mine_boundary(debian_bert, batch, BoundaryConfig(norm="2", tol=1e-3))
    assert boundary.field == "inputs_embeds"
    assert boundary.flip_rate >= 0.80
    assert boundary.refined_rate >= 0.90
    gap, sides_ok = _fresh_pair_gaps(debian_bert, boundary)
    flipped = boundary.flipped
    assert float(((gap[flipped] < 1e-3) & sides_ok[flipped]).double().mean()) >= 0.90
    # padding never moves, the attention mask is unchanged
    original = debian_bert.get_input_embeddings()(batch["input_ids"]).detach()
    pad = batch["attention_mask"] == 0
    assert bool(pad.any())
    for side in (boundary.inside, boundary.outside):
        assert torch.equal(side.fields["attention_mask"], batch["attention_mask"])
        assert torch.equal(side.fields["inputs_embeds"][pad], original[pad])


def test_text_chunks_mined_in_length_order_give_the_set_of_one_chunk(
    debian_bert, debian_text
) -> None:
    # chunks of two texts of similar length, each trimmed to its own longest text, against
    # one chunk of every text at the data set's padded length: the same pairs, in data order
    _, _, test_batch = debian_text
    batch = {k: v[:24] for k, v in test_batch.items()}
    lengths = batch["attention_mask"].sum(1)
    assert int(lengths.min()) < int(lengths.max()) < batch["input_ids"].shape[1]
    config = BoundaryConfig(norm="2", random_start=False, tol=1e-3)
    whole = mine_boundary(debian_bert, batch, config, batch_size=24)
    chunked = mine_boundary(debian_bert, batch, config, batch_size=2)
    assert torch.equal(chunked.source, torch.arange(24))
    assert torch.equal(chunked.flipped, whole.flipped)
    assert torch.equal(chunked.classes, whole.classes)
    for side in ("inside", "outside"):
        ours, theirs = getattr(chunked, side), getattr(whole, side)
        assert torch.allclose(
            ours.fields["inputs_embeds"], theirs.fields["inputs_embeds"], atol=1e-4
        )
    assert torch.allclose(chunked.margins, whole.margins, atol=1e-4)


def test_constant_model_ends_within_max_steps_all_unrefined() -> None:
    constant = nn.Linear(64, 10)
    nn.init.zeros_(constant.weight)
    with torch.no_grad():
        constant.bias.copy_(torch.arange(10.0))
    x, _ = testing.digits()
    config = BoundaryConfig(steps=5, max_steps=7)
    boundary = mine_boundary(constant, x[:300], config)
    assert not bool(boundary.flipped.any())
    assert not bool(boundary.refined.any())
    assert boundary.pgd_steps_run <= config.steps * math.ceil(300 / 256)
    assert boundary.bisection_steps_run == 0
    assert int(boundary.steps.max()) <= config.max_steps
    with pytest.raises(ValueError, match="no pair reached the boundary"):
        boundary.points()


def test_unreachable_tolerance_stops_at_max_steps(digits_mlp) -> None:
    x, _ = testing.digits()
    boundary = mine_boundary(digits_mlp, x[:200], BoundaryConfig(tol=1e-12, max_steps=3))
    assert int(boundary.steps.max()) == 3
    assert boundary.bisection_steps_run == 3
    assert not bool(boundary.refined.any())
    assert boundary.flip_rate >= 0.9


class _Wells(nn.Module):
    """Three classes along a line: class k wins near x = k (logits -(x - k)^2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x - torch.tensor([0.0, 1.0, 2.0])) ** 2)


def test_third_class_midpoint_retargets_the_pair() -> None:
    # one PGD step of 2.5 from x = 0.2 lands at 2.7 (class 2); the first midpoint, 1.45, is in
    # class 1, so the pair becomes (0, 1) and bisection converges to their boundary at 0.5.
    config = BoundaryConfig(radius=2.5, step_size=2.5, steps=1, random_start=False, domain=None)
    boundary = mine_boundary(_Wells(), torch.tensor([[0.2]]), config)
    assert bool(boundary.third_class[0]) and bool(boundary.refined[0])
    assert boundary.classes[0].tolist() == [0, 1]
    for side in (boundary.inside, boundary.outside):
        assert float(side.fields["x"][0, 0]) == pytest.approx(0.5, abs=1e-4)


def test_same_seed_same_boundary_set(digits_cnn) -> None:
    x, _ = testing.digits(images=True)
    first = mine_boundary(digits_cnn, x[:300], seed=7)
    again = mine_boundary(digits_cnn, x[:300], seed=7)
    other = mine_boundary(digits_cnn, x[:300], seed=8)
    for name in ("source", "classes", "flipped", "refined", "third_class", "steps", "gaps"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert torch.equal(first.inside.fields["x"], again.inside.fields["x"])
    assert torch.equal(first.outside.fields["x"], again.outside.fields["x"])
    assert not torch.equal(first.outside.fields["x"], other.outside.fields["x"])


def test_calibration_set_is_data_plus_both_sides(digits_mlp) -> None:
    x, y = testing.digits()
    data = as_inputs(x[:200], labels=y[:200])
    boundary = mine_boundary(digits_mlp, data)
    calibration = calibration_set(data, boundary, digits_mlp)
    refined = int(boundary.refined.sum())
    assert len(calibration) == 200 + 2 * refined
    assert calibration.labels is None
    assert torch.equal(calibration.fields["x"][:200], x[:200])


def test_mining_leaves_the_model_unchanged(debian_text) -> None:
    x, _ = testing.digits()
    mlp = testing.tiny_mlp(seed=3).train()
    mlp[2].weight.requires_grad_(False)
    bert = testing.tiny_bert(num_labels=4, seed=3).train()  # dropout on
    batch = {k: v[:64] for k, v in debian_text[2].items()}
    for model, data in ((mlp, x[:100]), (bert, batch)):
        before = testing.state_snapshot(model)
        mine_boundary(model, data, BoundaryConfig(steps=3))
        assert testing.state_snapshot(model) == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius": 0.0}, r"radius: expected a number > 0, got 0.0"),
        ({"radius": -1.0}, "radius: expected a number > 0"),
        ({"steps": 0}, r"steps: expected an integer >= 1, got 0"),
        ({"max_steps": 0}, "max_steps: expected an integer >= 1"),
        ({"tol": 0.0}, r"tol: expected a number > 0, got 0.0"),
        ({"norm": "1"}, r"norm: expected 'inf' or '2', got '1'"),
        ({"norm": True}, "norm: expected 'inf' or '2'"),
        ({"domain": (1.0, 0.0)}, "domain: expected finite"),
        ({"step_size": math.nan}, "step_size"),
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BoundaryConfig(**kwargs)


def test_norm_aliases_are_accepted() -> None:
    assert BoundaryConfig(norm=math.inf).norm == "inf"  # type: ignore[arg-type]
    assert BoundaryConfig(norm=2).norm == "2"  # type: ignore[arg-type]


def test_bad_data_is_rejected(digits_mlp) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        mine_boundary(digits_mlp, torch.full((4, 64), math.nan))
    with pytest.raises(TypeError, match="no continuous input to perturb"):
        mine_boundary(testing.tiny_bert(), torch.randint(0, 100, (4, 8)))
