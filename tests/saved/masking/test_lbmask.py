"""saved/masking/lbmask.py: learned masks on a real trained model — frozen weights, exact sizes,
and a boundary disagreement below random and magnitude masks of the same size."""

from __future__ import annotations

import time

import pytest
import torch

import saved
from saved import ClassComponents, as_inputs, predict_logits, testing
from saved.baselines import magnitude, random
from saved.boundary import calibration_set, calibration_sources, mine_boundary
from saved.contract import boundary_subset, disagreement, logit_margins
from saved.decomposition import Decomposition
from saved.masking.lbmask import LBMaskConfig, MaskTrainer, initial_logits, train_masks
from saved.masking.objectives import OBJECTIVES, ObjectiveTargets, objective_loss
from saved.masking.trainer import boundary_rows, overlap_excess, straight_through
from saved.masking.units import UnitSpace


@pytest.fixture(scope="module")
def wide_mlp(digits_xy):
    """A 64-128-128-10 MLP trained on the real digits (about a second)."""
    x, y = digits_xy
    return testing.train_classifier(testing.tiny_mlp(hidden=(128, 128), seed=0), x, y, steps=300)


@pytest.fixture(scope="module")
def digits_mined(wide_mlp, digits_xy):
    data = as_inputs(digits_xy[0])
    return data, mine_boundary(wide_mlp, data)


@pytest.fixture(scope="module")
def digits_setup(wide_mlp, digits_xy, digits_mined):
    data, mined = digits_mined
    calibration = calibration_set(data, mined, wide_mlp)
    space = UnitSpace.of(wide_mlp, digits_xy[0][:2])
    return data, calibration, space


@pytest.fixture(scope="module")
def digits_sources(digits_mined):
    """The data sample of each row of ``digits_setup``'s calibration set, as decompose
    passes them: without them every mined point counts as a sample of its own."""
    data, mined = digits_mined
    return calibration_sources(len(data), mined)


def _boundary_disagreement(model, space, masks, data) -> float:
    reference = predict_logits(model, data)
    boundary = boundary_subset(logit_margins(reference), q=0.2)
    decomposed = Decomposition(model, space, ClassComponents(10), masks).predict(data)
    return disagreement(reference.argmax(1)[boundary], decomposed[boundary])


def test_lbmask_beats_random_and_magnitude_masks(wide_mlp, digits_setup, digits_sources) -> None:
    data, calibration, space = digits_setup
    before = testing.state_snapshot(wide_mlp)
    components = ClassComponents(10)
    run = train_masks(wide_mlp, calibration, components, space, sources=digits_sources)
    logits = run.logits
    learned = _boundary_disagreement(wide_mlp, space, space.binarise(logits, 0.5), data)
    rand = _boundary_disagreement(wide_mlp, space, random.masks(space, 10, 0.5, seed=0), data)
    magn = _boundary_disagreement(wide_mlp, space, magnitude.masks(space, 10, 0.5), data)
    assert learned < rand
    assert learned < magn
    # frozen weights: no gradient was ever computed for them and they are bit-identical
    assert all(p.grad is None for p in wide_mlp.parameters())
    assert testing.state_snapshot(wide_mlp) == before


def test_mask_training_never_touches_weights_of_a_cnn_in_train_mode(digits_images) -> None:
    x, _ = digits_images
    model = testing.tiny_resnet(seed=4).train()  # BatchNorm statistics must not move
    before = testing.state_snapshot(model)
    space = UnitSpace.of(model, x[:2])
    config = LBMaskConfig(steps=5, batch_size=16)
    train_masks(model, as_inputs(x[:100]), ClassComponents(10), space, config)
    assert all(p.grad is None for p in model.parameters())
    assert testing.state_snapshot(model) == before


def test_chunked_training_equals_joint_training(wide_mlp, digits_setup) -> None:
    _, calibration, space = digits_setup
    config = LBMaskConfig(steps=20)
    joint = train_masks(wide_mlp, calibration, ClassComponents(10), space, config, seed=5).logits
    chunked = train_masks(
        wide_mlp,
        calibration,
        ClassComponents(10),
        space,
        LBMaskConfig(steps=20, component_chunk=3),
        seed=5,
    ).logits
    assert torch.allclose(joint, chunked, atol=1e-5)


def test_initialisation_alpha(digits_setup) -> None:
    _, _, space = digits_setup
    uniform = initial_logits(space, 3, 0.0, torch.Generator().manual_seed(0))
    prior = initial_logits(space, 3, 1.0, torch.Generator().manual_seed(0))
    assert float(uniform.abs().max()) < 0.01  # only tie-breaking noise
    # alpha = 1 ranks units by weight norm: its binarisation is the magnitude mask
    assert torch.equal(space.binarise(prior, 0.5), magnitude.masks(space, 3, 0.5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sparsity": 0.0}, r"sparsity: expected a value in \(0, 1\), got 0.0"),
        ({"sparsity": 1.0}, r"sparsity: expected a value in \(0, 1\)"),
        ({"alpha": -0.1}, r"alpha: expected a value in \[0, 1\], got -0.1"),
        ({"alpha": 1.5}, r"alpha: expected a value in \[0, 1\]"),
        ({"steps": 0}, "steps: expected an integer >= 1"),
        ({"lr": 0.0}, "lr: expected a number > 0"),
        ({"component_chunk": 0}, "component_chunk"),
        ({"objective": "mse"}, "objective: expected one of"),
        ({"allocation": "layer"}, r"allocation: expected one of \('auto', 'group', 'kind'"),
        ({"boundary_set": "mined"}, "boundary_set: expected 'rows' or 'natural'"),
        ({"steps": "forever"}, "steps: expected an integer >= 1"),
        ({"time_budget": 0}, "time_budget: expected None or seconds > 0"),
        ({"validation_fraction": 1.0}, r"validation_fraction: expected a value in \(0, 1\)"),
        ({"ramp": -1}, "ramp: expected a whole number of steps >= 0"),
        ({"ramp": 400}, "ramp: 400 steps leave none at the target sparsity within 400 steps"),
        ({"overlap_limit": 1.0}, r"overlap_limit: expected a value in \(0, 1\)"),
        ({"overlap_limit": "gamma"}, "overlap_limit: expected a number in \\(0, 1\\), 'contract'"),
        ({"stop_on": "dis"}, "stop_on: expected 'flips' or 'loss', got 'dis'"),
        ({"overlap_weight": 0.0}, "overlap_weight: expected a number > 0"),
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LBMaskConfig(**kwargs)


# --------------------------------------------------------------------------- objectives


def test_the_default_objective_sees_what_the_aggregator_compares() -> None:
    """Shifting one component's logits by a constant leaves BCE on its own margin unchanged,
    but changes which component the paper's aggregator picks: the default objective
    (``"score"``) moves, and so does ``"aggregate"``, the default before it."""
    torch.manual_seed(0)
    components = ClassComponents(4)
    reference = torch.randn(64, 4) * 2
    logits = reference.expand(4, -1, -1).clone()
    shifted = logits.clone()
    shifted[2] += 0.7  # component 2 claims every sample a little more
    targets = ObjectiveTargets(
        reference=reference,
        weights=torch.ones(64),
        boundary=torch.zeros(64, dtype=torch.bool),
        pos_weight=torch.full((4,), 3.0),
        scale=float(reference.std()),
    )

    def loss(name: str, table: torch.Tensor) -> float:
        return float(objective_loss(name, table, targets, components))  # type: ignore[arg-type]

    assert loss("bce", shifted) == pytest.approx(loss("bce", logits))
    assert loss("aggregate", logits) == pytest.approx(0.0, abs=1e-6)  # the reference itself
    assert loss("aggregate", shifted) > 1e-3
    assert not torch.equal(components.predict(shifted), components.predict(logits))
    assert LBMaskConfig().objective == "score"
    assert loss("score", logits) == pytest.approx(0.0, abs=1e-6)
    # component 2's own score is 0.7 too high on every sample: (0.7 / scale)^2 / 4 components
    assert loss("score", shifted) == pytest.approx((0.7 / targets.scale) ** 2 / 4)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_is_zero_or_minimal_at_the_reference(objective: str) -> None:
    """Unmasked components reproduce the reference: the matching objectives vanish there and
    no small perturbation of the logits lowers them."""
    torch.manual_seed(1)
    components = ClassComponents(3)
    reference = torch.randn(32, 3)
    targets = ObjectiveTargets(
        reference, torch.ones(32), torch.ones(32, dtype=torch.bool), torch.ones(3), 1.0
    )
    exact = reference.expand(3, -1, -1).clone()
    at_reference = float(objective_loss(objective, exact, targets, components))  # type: ignore[arg-type]
    if objective in ("match", "kl", "aggregate", "aggregate-match", "hinge", "score"):
        assert at_reference == pytest.approx(0.0, abs=1e-6)
    noisy = exact + 0.3 * torch.randn_like(exact)
    if objective not in ("bce", "bce-plain", "tie", "ce"):  # these reward confidence
        assert float(objective_loss(objective, noisy, targets, components)) > at_reference  # type: ignore[arg-type]


def test_the_hinge_objective_charges_a_flip_in_proportion_to_its_depth() -> None:
    """Three classes, one sample; the reference scores [2, 1, 0] decide class 0 with a gap of 1.
    Components that keep the order add nothing to ``aggregate``'s KL past half the gap; a flip
    to class 1 by d costs ``(0.5 + d) / scale`` on top of the KL, linear in d."""
    components = ClassComponents(3)
    reference = torch.tensor([[2.0, 1.0, 0.0]])
    targets = ObjectiveTargets(
        reference, torch.ones(1), torch.zeros(1, dtype=torch.bool), torch.ones(3), 2.0
    )

    def scored(scores: list[float]) -> torch.Tensor:
        # component k's own logit is scores[k]; the others equal the reference's
        table = reference.expand(3, -1, -1).clone()
        for k, value in enumerate(scores):
            table[k, 0, k] = value
        return table

    def extra(scores: list[float]) -> float:
        table = scored(scores)
        hinge = float(objective_loss("hinge", table, targets, components))
        return hinge - float(objective_loss("aggregate", table, targets, components))

    assert extra([2.0, 1.0, 0.0]) == pytest.approx(0.0, abs=1e-7)  # the reference
    assert extra([2.0, 1.4, 0.0]) == pytest.approx(0.0, abs=1e-7)  # gap 0.6 >= 0.5
    assert extra([2.0, 1.8, 0.0]) == pytest.approx((0.5 - 0.2) / 2.0)
    for depth in (0.1, 0.3, 0.9):  # flipped: class 1 above class 0 by depth
        assert extra([2.0, 2.0 + depth, 0.0]) == pytest.approx((0.5 + depth) / 2.0)


def test_the_cross_entropy_objective_is_aggregate_plus_the_decided_class_loss() -> None:
    components = ClassComponents(3)
    reference = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]])
    targets = ObjectiveTargets(
        reference, torch.tensor([1.0, 3.0]), torch.zeros(2, dtype=torch.bool), torch.ones(3), 1.0
    )
    table = reference.expand(3, -1, -1).clone() + torch.tensor([0.3, -0.2, 0.1])[:, None, None]
    scores = torch.stack([table[k, :, k] for k in range(3)], 1)  # the paper's aggregator
    per = torch.nn.functional.cross_entropy(scores, torch.tensor([0, 2]), reduction="none")
    expected = float(objective_loss("aggregate", table, targets, components))
    expected += float((per * targets.weights).sum() / targets.weights.sum())
    assert float(objective_loss("ce", table, targets, components)) == pytest.approx(expected)


def test_the_score_objective_fits_each_component_on_its_own() -> None:
    """Three classes, two samples of weights 1 and 3, scale 2. Component 0's own score (its
    logit 0, the paper's aggregator) is off by +1 on the first sample and -2 on the second:
    per sample the mean over the three components of ((s - r) / 2)^2 is 0.25 / 3 and 1 / 3,
    weighted (0.25 / 3 + 3 / 3) / 4. A component's loss reads only its own score, so moving
    component 1's logits leaves component 0's gradient as it was; under ``"aggregate"``, which
    compares the scores across components, it does not."""
    components = ClassComponents(3)
    reference = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]])
    targets = ObjectiveTargets(
        reference, torch.tensor([1.0, 3.0]), torch.zeros(2, dtype=torch.bool), torch.ones(3), 2.0
    )
    table = reference.expand(3, -1, -1).clone()
    table[0, :, 0] += torch.tensor([1.0, -2.0])
    expected = (0.25 / 3 + 3 * 1.0 / 3) / 4
    assert float(objective_loss("score", table, targets, components)) == pytest.approx(expected)

    def first_gradient(objective: str, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone().requires_grad_(True)
        objective_loss(objective, logits, targets, components).backward()  # type: ignore[arg-type]
        assert logits.grad is not None
        return logits.grad[0]

    moved = table.clone()
    moved[1, :, 1] += 1.5  # component 1's own score rises on both samples
    assert torch.equal(first_gradient("score", table), first_gradient("score", moved))
    assert not torch.allclose(
        first_gradient("aggregate", table), first_gradient("aggregate", moved)
    )


def test_natural_boundary_rows_are_the_mined_points_and_the_low_margin_samples() -> None:
    """Six data samples with margins 0.5 ... 3 and two mined points (margin 0.01 and 0.02):
    ``"rows"`` takes the lowest fifth of all eight rows (both mined points, no sample);
    ``"natural"`` takes both mined points and the contract's boundary subset of the six
    samples (round(0.2 x 6) = 1: the sample of margin 0.5)."""
    margins = torch.tensor([3.0, 0.5, 2.0, 1.0, 2.5, 1.5, 0.01, 0.02])
    reference = torch.stack([margins, torch.zeros(8)], 1)
    sources = torch.tensor([0, 1, 2, 3, 4, 5, 1, 1])
    rows = boundary_rows(reference, sources, LBMaskConfig(boundary_set="rows"))
    natural = boundary_rows(reference, sources, LBMaskConfig())  # the default
    assert rows.tolist() == [False] * 6 + [True, True]
    assert natural.tolist() == [False, True, False, False, False, False, True, True]


# --------------------------------------------------------------------------- stopping


@pytest.mark.parametrize("stop_on", ["flips", "loss"])
def test_automatic_steps_stop_when_the_held_out_measure_stops_improving(
    wide_mlp, digits_setup, digits_sources, stop_on
):
    """The run keeps the checkpoint of the fewest held-out flips, the objective breaking ties
    (``"flips"``), or of the lowest objective (``"loss"``), and stops after ``patience``
    measurements in which neither the kept checkpoint nor the objective improved."""
    _, calibration, space = digits_setup
    config = LBMaskConfig(max_steps=2000, eval_every=10, patience=2, stop_on=stop_on)
    components = ClassComponents(10)
    run = train_masks(wide_mlp, calibration, components, space, config, sources=digits_sources)
    assert run.stopped == "converged"
    assert run.steps_run < 2000
    assert run.steps_run == run.history[-1]["step"]
    best = next(h for h in run.history if h["step"] == run.best_step)
    if stop_on == "loss":
        assert run.best_step == min(
            h["step"]
            for h in run.history
            if h["validation"] == min(e["validation"] for e in run.history)
        )
    else:
        assert best["flips"] == min(h["flips"] for h in run.history)
        tied = [h for h in run.history if h["flips"] == best["flips"] and h is not best]
        assert all(h["validation"] > best["validation"] * (1 - 1e-3) for h in tied)
    # the last `patience` measurements improved neither the kept checkpoint nor the objective
    lowest_before = min(h["validation"] for h in run.history[: -config.patience])
    assert all(
        h["validation"] >= lowest_before * (1 - 1e-3) for h in run.history[-config.patience :]
    )
    assert run.best_step < run.history[-config.patience]["step"]
    assert run.validation_rows is not None


def test_the_held_out_rows_keep_a_sample_with_its_boundary_points(wide_mlp, digits_xy) -> None:
    x, _ = digits_xy
    data = as_inputs(x[:300])
    mined = mine_boundary(wide_mlp, data)
    calibration = calibration_set(data, mined, wide_mlp)
    sources = calibration_sources(len(data), mined)
    config = LBMaskConfig(max_steps=10, eval_every=5)
    trainer = MaskTrainer(
        wide_mlp,
        calibration,
        ClassComponents(10),
        UnitSpace.of(wide_mlp, x[:2]),
        config,
        sources=sources,
    )
    assert trainer.validation_rows is not None
    held = set(sources[trainer.validation_rows].tolist())
    trained_on = set(sources[trainer.train_rows].tolist())
    assert not held & trained_on
    assert abs(len(held) - 0.2 * 300) <= 1


def test_text_validation_runs_in_length_order_and_measures_what_data_order_does(
    debian_bert, debian_text
) -> None:
    _, _, test_batch = debian_text
    data = as_inputs({k: v[:60] for k, v in test_batch.items()})
    mined = mine_boundary(debian_bert, data, saved.BoundaryConfig(norm="2"))
    calibration = calibration_set(data, mined, debian_bert)
    config = LBMaskConfig(max_steps=10, eval_every=5, alpha=0.0)
    space = UnitSpace.of(debian_bert, data.batch(slice(0, 2)))
    trainer = MaskTrainer(
        debian_bert,
        calibration,
        ClassComponents(4),
        space,
        config,
        sources=calibration_sources(len(data), mined),
    )
    rows = trainer.validation_rows
    assert rows is not None
    mask = calibration.select(rows).fields["attention_mask"]
    lengths = (mask * torch.arange(1, mask.shape[1] + 1)).amax(1)
    assert torch.equal(lengths, lengths.sort().values)
    assert int(lengths[0]) < int(lengths[-1])
    with trainer:
        trainer.step()
        ordered = trainer.validation()
        trainer.validation_rows = rows.sort().values  # the same rows in data order
        in_data_order = trainer.validation()
    assert ordered[0] == pytest.approx(in_data_order[0], abs=1e-9)
    assert ordered[1] == pytest.approx(in_data_order[1], rel=1e-5)


def test_the_ramp_raises_the_sparsity_along_the_cubic_schedule(wide_mlp, digits_setup):
    """Step t of a ramp of R steps keeps ``1 - s (1 - (1 - (t + 1) / R) ** 3)`` of every
    layer's 128 neurons (hand-computed at s = 0.5, R = 4: 0.2890625 at the first step, so 91
    kept; 0.4375 at the second), the target from the ramp's last step on; no validation
    runs before the masks are at the target."""
    _, calibration, space = digits_setup
    config = LBMaskConfig(sparsity=0.5, ramp=4, max_steps=8, eval_every=1)
    expected = [0.5 * (1 - (1 - t / 4) ** 3) for t in (1, 2, 3, 4)] + [0.5] * 4
    assert expected[:2] == [0.2890625, 0.4375]
    seen = []
    with MaskTrainer(wide_mlp, calibration, ClassComponents(10), space, config) as trainer:
        for _ in range(8):
            seen.append((trainer.sparsity, trainer.ramped))
            trainer.step()
    assert [s for s, _ in seen] == pytest.approx(expected)
    assert [r for _, r in seen] == [False] * 4 + [True] * 4
    hard = space.binarise(torch.zeros(10, space.num_units), seen[0][0])
    assert hard[:, :128].sum(1).tolist() == [round((1 - 0.2890625) * 128)] * 10  # 91
    run = train_masks(wide_mlp, calibration, ClassComponents(10), space, config)
    assert min(h["step"] for h in run.history) == 4  # the ramp's last step is at the target


def test_decompose_takes_a_ramp(digits_xy) -> None:
    """The run-time estimate's two-step probe drops the ramp: a ramp of 4 steps used to be
    refused by ``decompose`` itself ("4 steps leave none ... within 2 steps")."""
    x, _ = digits_xy
    model = testing.tiny_mlp(seed=0)
    config = LBMaskConfig(steps=6, ramp=4)
    decomposition = saved.decompose(model, x[:64], lbmask=config, progress=False)
    assert decomposition.metadata["training"]["steps_run"] == 6
    assert decomposition.masks.sum(1).tolist() == [32] * 10  # half of 2 x 32 neurons


def test_a_dropped_unit_behind_a_relu_gets_the_gradient_of_switching_it_back_on(digits_xy):
    """The straight-through masks of a ReLU MLP against the same network written out by hand
    with each mask *after* its ReLU (``relu(m z) = m relu(z)`` for m >= 0, so both compute the
    same logits): the gradient of the mask logits is the hand gradient times sigmoid'(0) = 1/4
    at every unit, kept or dropped. Masking before the ReLU at exactly 0 gave a dropped unit
    relu'(0) = 0, no gradient at all: LBMask could never bring one back."""
    x, _ = digits_xy
    x = x[:48]
    model = testing.tiny_mlp(seed=0)  # Linear-ReLU-Linear-ReLU-Linear, hidden 32 and 32
    space = UnitSpace.of(model, x[:2])
    hard = torch.rand(1, space.num_units, generator=torch.Generator().manual_seed(0)) < 0.5
    logits = torch.zeros(1, space.num_units, requires_grad=True)
    masks = straight_through(hard, torch.sigmoid(logits), torch.float32)
    weight = torch.randn(48, 10, generator=torch.Generator().manual_seed(1))
    out = space.run(model, masks, x)
    (out * weight).sum().backward()

    columns = {group.sites[0].module: part for group, part in space.group_slices()}
    assert sorted(columns) == ["0", "2"]
    unit = hard.float()[0].requires_grad_(True)
    first = torch.relu(model[0](x)) * unit[columns["0"]]
    second = torch.relu(model[2](first)) * unit[columns["2"]]
    by_hand = model[4](second)
    (by_hand * weight).sum().backward()
    assert torch.allclose(out, by_hand.detach(), atol=1e-5)
    assert unit.grad is not None and logits.grad is not None
    dropped = ~hard[0]
    assert bool((unit.grad[dropped].abs() > 1e-3).any())  # switching a unit on moves the sum
    assert torch.allclose(logits.grad[0], unit.grad / 4, atol=1e-6)


def test_a_dropped_ffn_neuron_gets_the_gradient_of_switching_it_back_on() -> None:
    """A tiny BERT's straight-through gradient against the same masks written into the
    weights (torch.func): a head's mask scales its value rows, an FFN neuron's mask its
    down-projection column, i.e. its output after the GELU. The two agree at every unit, kept or
    dropped; masking the neuron before its GELU gave a dropped one gelu'(0) z = z / 2 instead
    of gelu(z), a signal dominated by the tokens on which the neuron is off."""
    model = testing.tiny_bert(num_labels=4, seed=0).eval()
    ids = torch.randint(5, 2000, (6, 12), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    space = UnitSpace.of(model, {k: v[:2] for k, v in batch.items()})
    hard = torch.rand(1, space.num_units, generator=torch.Generator().manual_seed(0)) < 0.5
    logits = torch.zeros(1, space.num_units, requires_grad=True)
    weight = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    out = space.run(model, straight_through(hard, torch.sigmoid(logits), torch.float32), batch)
    (out * weight).sum().backward()

    unit = hard.float()[0].requires_grad_(True)
    params = dict(model.named_parameters())
    for group, part in space.group_slices():
        if group.kind == "heads":
            v = group.surgery["v"]
            rows = unit[part].repeat_interleave(group.sites[0].width)
            params[f"{v}.weight"] = params[f"{v}.weight"] * rows[:, None]
            params[f"{v}.bias"] = params[f"{v}.bias"] * rows
        else:
            down = group.surgery["down"]
            params[f"{down}.weight"] = params[f"{down}.weight"] * unit[part][None, :]
    assert {g.kind for g in space.groups} == {"heads", "neurons"}
    by_hand = torch.func.functional_call(model, params, kwargs=batch).logits
    (by_hand * weight).sum().backward()
    assert torch.allclose(out, by_hand.detach(), atol=1e-5)
    assert unit.grad is not None and logits.grad is not None
    neurons = torch.cat(
        [
            torch.arange(part.start, part.stop)
            for g, part in space.group_slices()
            if g.kind == "neurons"
        ]
    )
    dropped = neurons[~hard[0, neurons]]
    assert bool((unit.grad[dropped].abs() > 1e-4).any())
    assert torch.allclose(logits.grad[0], unit.grad / 4, atol=1e-6)


def test_a_dropped_channel_before_a_batchnorm_gets_the_gradient_of_switching_it_back_on():
    """The residual CNN (conv-BN pairs, one residual addition) against the same network written
    out by hand with every mask after the ReLU that follows its BatchNorm: the same logits and,
    at every channel kept or dropped, the same gradient (times sigmoid'(0) = 1/4).
    With the mask at the convolution *and* at its BatchNorm, a dropped channel's gradient was
    that of ``m BN(m z)`` at m ~ 0, i.e. BN(0), the BatchNorm's constant shift, the same for
    every image: LBMask could not tell a needed channel from a useless one."""
    x = testing.digits(images=True)[0][:24]
    model = testing.tiny_resnet(width=8, seed=0).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for bn in (model.stem[1], model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.uniform_(-0.5, 0.5)
    space = UnitSpace.of(model, x[:2])
    masked_at = sorted(site.module for group in space.groups for site in group.mask_sites)
    assert masked_at == ["bn1", "bn2", "stem.1"]  # never a convolution a BatchNorm follows
    hard = torch.rand(1, space.num_units, generator=torch.Generator().manual_seed(0)) < 0.5
    logits = torch.zeros(1, space.num_units, requires_grad=True)
    weight = torch.randn(24, 10, generator=torch.Generator().manual_seed(1))
    out = space.run(model, straight_through(hard, torch.sigmoid(logits), torch.float32), x)
    (out * weight).sum().backward()

    columns = {group.name: part for group, part in space.group_slices()}
    unit = hard.float()[0].requires_grad_(True)
    stream, inner = unit[columns["conv2"]], unit[columns["conv1"]]
    shape = (1, -1, 1, 1)
    # each mask after the ReLU that follows its BatchNorm: relu(m z) = m relu(z) for m >= 0,
    # and relu(m a + m b) = m relu(a + b) at the residual addition
    stem = torch.relu(model.stem[1](model.stem[0](x)))
    h = torch.relu(model.bn1(model.conv1(stem * stream.view(shape)))) * inner.view(shape)
    joined = torch.relu(stem + model.bn2(model.conv2(h))) * stream.view(shape)
    by_hand = model.fc(torch.flatten(model.pool(joined), 1))
    (by_hand * weight).sum().backward()
    assert torch.allclose(out, by_hand.detach(), atol=1e-5)
    assert unit.grad is not None and logits.grad is not None
    assert bool((unit.grad[~hard[0]].abs() > 1e-3).any())
    assert torch.allclose(logits.grad[0], unit.grad / 4, atol=1e-5)


def test_allocation_by_parameters_learns_masks_that_keep_half_the_parameters(digits_xy):
    """An MLP whose two hidden layers differ in width (64-96-32-10: a first-layer neuron
    carries 65 parameters, a second-layer one 97): trained under ``"params"``, every mask keeps
    at most half of the units' parameters, within one unit of it, and the sparsity term drives
    the kept probabilities' parameter share to the same half."""
    x, y = digits_xy
    model = testing.train_classifier(testing.tiny_mlp(hidden=(96, 32), seed=0), x, y, steps=100)
    data = as_inputs(x[:256])
    space = UnitSpace.of(model, x[:2])
    params = space.unit_params.double()
    assert sorted(set(params.tolist())) == [65.0, 97.0]
    # from a uniform start: the pull of the sparsity term alone, not the prior's spread
    config = LBMaskConfig(steps=60, allocation="params", alpha=0.0)
    logits = train_masks(model, data, ClassComponents(10), space, config).logits
    masks = space.binarise(logits, 0.5, "params")
    kept = (masks.double() * params).sum(1) / params.sum()
    assert bool((kept <= 0.5).all()) and bool((kept > 0.5 - 97 / params.sum()).all())
    share = (torch.sigmoid(logits).double() * params).sum(1) / params.sum()
    assert float((share - 0.5).abs().max()) < 0.1


def test_the_overlap_term_is_the_contracts_jaccard_above_the_limit() -> None:
    """Hand-computed: supports {0,1,2}, {1,2,3}, {4,5,6}: J = 2/4 for the first pair, 0 for
    the others; above a limit of 0.3 only that pair counts, 0.2, in 2 of the 6 ordered pairs.
    Its gradient lowers the shared units of the overlapping pair and nothing of the third."""
    supports = torch.zeros(3, 8)
    supports[0, [0, 1, 2]] = supports[1, [1, 2, 3]] = supports[2, [4, 5, 6]] = 1
    assert saved.contract.jaccard_overlap(supports.bool())[0, 1] == pytest.approx(0.5)
    probs = torch.full((3, 8), 0.5, requires_grad=True)
    masks = supports + probs - probs.detach()
    excess = overlap_excess(masks, 0.3)
    assert float(excess.detach()) == pytest.approx(2 * 0.2 / 6)
    excess.backward()
    grad = probs.grad
    assert grad is not None
    assert (grad[:2, [1, 2]] > 0).all()  # descending lowers the shared units
    assert (grad[2] == 0).all()
    assert float(overlap_excess(masks.detach(), 0.5)) == 0.0


def test_the_overlap_limit_keeps_learned_supports_apart(wide_mlp, digits_setup) -> None:
    """Same run with and without the term: with it, the largest overlap is at most the
    limit (plus one unit's worth of slack per pair), and below the run without it."""
    _, calibration, space = digits_setup
    components = ClassComponents(10)
    plain = LBMaskConfig(steps=150)
    limited = LBMaskConfig(steps=150, overlap_limit=0.3, overlap_weight=10.0)
    overlaps = []
    for config in (plain, limited):
        logits = train_masks(wide_mlp, calibration, components, space, config).logits
        masks = space.binarise(logits, config.sparsity, config.allocation)
        overlaps.append(saved.contract.max_pairwise_overlap(saved.contract.jaccard_overlap(masks)))
    assert overlaps[1] < overlaps[0]
    assert overlaps[1] <= 0.3 + 0.02


def test_a_time_budget_stops_mask_learning(wide_mlp, digits_setup) -> None:
    _, calibration, space = digits_setup
    config = LBMaskConfig(steps=100_000, time_budget=0.5)
    started = time.perf_counter()
    run = train_masks(wide_mlp, calibration, ClassComponents(10), space, config)
    assert run.stopped == "time_budget"
    assert run.steps_run < 100_000
    assert time.perf_counter() - started < 30  # generous: the budget is checked every step


def test_decomposing_the_demo_mlp_on_1200_digits_holds_on_the_597_held_out(
    wide_mlp, digits_xy
) -> None:
    """Issue 13's target: default settings, masks learned on 1,200 digits, boundary Dis on
    the other 597 at most 0.04 (the study's split: seed 0 permutation)."""
    x, _ = digits_xy
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    used, held = x[order[:1200]], x[order[1200:]]
    decomposition = saved.decompose(wide_mlp, used, progress=False)
    report = saved.evaluate(wide_mlp, decomposition, held)
    assert report.n_samples == 597
    assert report.disagreement <= 0.04
    assert report.max_overlap <= 0.5


def test_a_model_certified_on_digits_it_never_saw_holds_where_wanda_collapses(
    digits_xy,
) -> None:
    """Issue 37's target: the demo MLP trained on 1,200 digits (the study's seed-0 split),
    decomposed with the defaults on those same digits (a user's ``calibration=``) and
    certified on the 597 the model never saw: boundary Dis at most 0.05 and at most
    unstructured Wanda's, with the overlap within gamma, where Wanda's components share over
    90 % of their weights (0.0336 against Wanda's 0.0756 at overlap 0.92 when written). The
    defaults before issue 37's rerun reached 0.0756 here; over five mask seeds the new ones
    land at 0.0084-0.0336 (docs/STUDY.md, Q7, ``mlp-unseen``)."""
    x, y = digits_xy
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    seen, unseen = order[:1200], order[1200:]
    model = testing.train_classifier(
        testing.tiny_mlp(hidden=(128, 128), seed=0), x[seen], y[seen], steps=300
    )
    reports = {
        method: saved.check(model, x[unseen], calibration=x[seen], method=method, progress=False)
        for method in ("lbmask", "wanda")
    }
    lbmask, wanda = reports["lbmask"], reports["wanda"]
    contract = saved.Contract()
    assert lbmask.n_samples == 597 and lbmask.split.mode == "calibration"
    assert lbmask.n_boundary == 119
    assert lbmask.disagreement <= 0.05
    assert lbmask.disagreement <= wanda.disagreement
    assert lbmask.max_overlap <= contract.gamma < wanda.max_overlap
    assert wanda.max_overlap > 0.9


def test_a_run_that_cannot_fit_is_refused_before_it_allocates(digits_xy, monkeypatch) -> None:
    """Per-weight masks of a large model need K x N x MASK_ENTRY_BYTES: more than the device
    has available is a clear MemoryError up front, not the kernel killing the process."""
    from saved.masking import trainer
    from saved.masking.weights import WeightSpace

    x, _ = digits_xy
    model = testing.tiny_mlp(seed=0)  # 64-32-32-10: 64 * 32 + 32 * 32 masked weights
    space = WeightSpace.of(model, x[:2])
    assert space.num_units == 64 * 32 + 32 * 32
    need = 10 * space.num_units * trainer.MASK_ENTRY_BYTES
    data = as_inputs(x[:64])
    config = LBMaskConfig(steps=1)
    monkeypatch.setattr(trainer, "available_memory", lambda device: need - 1)
    with pytest.raises(MemoryError, match=r"10 masks over 3,072 units needs about 0\.0 GB"):
        train_masks(model, data, ClassComponents(10), space, config)
    monkeypatch.setattr(trainer, "available_memory", lambda device: need)
    assert train_masks(model, data, ClassComponents(10), space, config).steps_run == 1


def test_available_memory_is_a_share_of_the_machine() -> None:
    import os

    from saved._runtime import available_memory

    free = available_memory(torch.device("cpu"))
    if free is None:
        pytest.skip("no /proc/meminfo here")
    assert 0 < free <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
