"""saved/estimate.py and the time controls of saved.decompose: an estimate before the long
work, and a time budget that stops mask learning."""

from __future__ import annotations

import math
import time

import pytest
import torch

import saved
from saved import BoundaryConfig, ClassComponents, LBMaskConfig, as_inputs
from saved.estimate import MINING_PASSES, STEP_PASSES, Estimate, estimate_seconds, probe_step
from saved.masking.lbmask import VALIDATION_ROWS
from saved.masking.units import UnitSpace


def test_estimate_by_hand() -> None:
    config = LBMaskConfig(steps=100, batch_size=32)
    estimate = estimate_seconds(0.001, 500, 4, config, None, mining=True, learning=True)
    assert estimate.mining == pytest.approx(0.001 * 500 * MINING_PASSES)
    # 100 steps, and the Taylor prior's pass over min(512, 3 x 500) rows: 16 batches of 32
    assert estimate.masks == pytest.approx(0.001 * 4 * 32 * STEP_PASSES * (100 + 16))
    uniform = estimate_seconds(
        0.001, 500, 4, LBMaskConfig(steps=100, alpha=0.0), None, mining=True, learning=True
    )
    assert uniform.masks == pytest.approx(0.001 * 4 * 32 * STEP_PASSES * 100)
    assert estimate.total == pytest.approx(estimate.mining + estimate.masks)
    assert not estimate.automatic
    twice = estimate_seconds(0.001, 1000, 4, config, None, mining=True, learning=True)
    assert twice.mining == pytest.approx(2 * estimate.mining)
    shorter = BoundaryConfig(steps=10, max_steps=15)
    assert estimate_seconds(
        0.001, 500, 4, config, shorter, mining=True, learning=True
    ).mining == pytest.approx(estimate.mining / 2)
    capped = estimate_seconds(
        0.001, 500, 4, LBMaskConfig(time_budget=2.0), None, mining=False, learning=True
    )
    assert capped.masks == 2.0 and capped.mining == 0.0 and capped.automatic
    assert "about" in capped.describe() and "up to" in capped.describe()


def test_decompose_tells_the_estimate_before_mining(digits_mlp, digits_xy, capsys) -> None:
    x, _ = digits_xy
    told: list[Estimate] = []
    mined_after: list[bool] = []
    decomposition = saved.decompose(
        digits_mlp,
        x[:300],
        lbmask=LBMaskConfig(steps=5),
        on_estimate=lambda e: (told.append(e), mined_after.append(True)),
        progress=False,
    )
    assert len(told) == 1 and told[0].total > 0 and told[0].mining > 0
    assert decomposition.metadata["estimate_seconds"] == round(told[0].total, 1)
    assert decomposition.metadata["seconds"] > 0


def test_a_time_budget_bounds_the_whole_call(digits_mlp, digits_xy) -> None:
    x, _ = digits_xy
    started = time.perf_counter()
    decomposition = saved.decompose(
        digits_mlp,
        x[:300],
        lbmask=LBMaskConfig(steps=1_000_000),
        time_budget=3.0,
        progress=False,
    )
    assert decomposition.metadata["training"]["stopped"] == "time_budget"
    assert time.perf_counter() - started < 60  # generous on a shared machine


def test_a_timed_step_replaces_the_step_factor(digits_mlp, digits_xy) -> None:
    x, _ = digits_xy
    space = UnitSpace.of(digits_mlp, x[:2])
    was_training = digits_mlp.training
    digits_mlp.train()
    digits_mlp[0].weight.requires_grad_(False)
    before = {name: p.detach().clone() for name, p in digits_mlp.named_parameters()}
    flags = {name: p.requires_grad for name, p in digits_mlp.named_parameters()}
    config = LBMaskConfig(batch_size=16)
    try:
        step = probe_step(digits_mlp, as_inputs(x[:100]), ClassComponents(10), space, config)
        # nothing of the user's model changes: weights, mode, requires_grad flags
        assert digits_mlp.training
        assert {n: p.requires_grad for n, p in digits_mlp.named_parameters()} == flags
        for name, p in digits_mlp.named_parameters():
            assert torch.equal(p, before[name])
    finally:
        digits_mlp.train(was_training)
        digits_mlp[0].weight.requires_grad_(True)
    assert 0 < step < 30
    timed = estimate_seconds(
        0.001, 500, 10, config, None, mining=False, learning=True, step_seconds=step
    )
    held = min(VALIDATION_ROWS, round(3 * 500 * config.validation_fraction))  # 300 rows
    validations = config.max_steps // config.eval_every
    measure = validations * math.ceil(held / config.batch_size) * step / 3
    prior = math.ceil(min(512, 3 * 500) / config.batch_size) * step  # the Taylor prior's pass
    assert timed.masks == pytest.approx(step * config.max_steps + measure + prior)
    assert timed.automatic and timed.steps == config.max_steps
