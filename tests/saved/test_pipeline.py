"""saved/pipeline.py and persistence: the SAVED pipeline end to end on real trained models."""

from __future__ import annotations

import stat

import pytest
import torch

import saved
from saved import testing
from saved.masking.lbmask import LBMaskConfig


@pytest.fixture(scope="module")
def wide_mlp(digits_xy) -> torch.nn.Module:
    x, y = digits_xy
    return testing.train_classifier(testing.tiny_mlp(hidden=(128, 128), seed=0), x, y, steps=300)


@pytest.fixture(scope="module")
def reports(wide_mlp, digits_xy) -> dict[str, saved.ContractReport]:
    x, y = digits_xy
    out = {}
    for method in ("lbmask", "wanda", "random"):
        decomposition = saved.decompose(wide_mlp, x, method=method, labels=y, progress=False)
        out[method] = saved.evaluate(wide_mlp, decomposition, x, labels=y)
    return out


def test_rq2_pattern_on_the_digits_mlp(reports) -> None:
    """The paper's RQ2 pattern: Wanda keeps semantics but collapses structurally; LBMask with
    uniform init keeps components apart; random masks lose more semantics than LBMask."""
    wanda, lbmask, random = reports["wanda"], reports["lbmask"], reports["random"]
    assert wanda.max_overlap >= 0.9
    assert wanda.disagreement <= 0.05
    assert not wanda.structural_holds
    assert lbmask.max_overlap <= 0.5
    assert random.disagreement > lbmask.disagreement
    for report in reports.values():
        assert report.min_prune == pytest.approx(0.5, abs=0.01)


def test_save_load_round_trip(wide_mlp, digits_xy, tmp_path) -> None:
    x, y = digits_xy
    config = LBMaskConfig(steps=30)
    decomposition = saved.decompose(
        wide_mlp, x[:400], lbmask=config, labels=y[:400], progress=False
    )
    path = decomposition.save(tmp_path / "digits.safetensors")
    assert not list(tmp_path.glob("*.partial"))
    probe = tmp_path / "probe"
    probe.touch()  # a file the user writes: what the umask gives, not an owner-only 0600
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(probe.stat().st_mode)
    again = saved.load(path, wide_mlp)
    assert torch.equal(again.masks, decomposition.masks)
    assert torch.equal(again.predict(x), decomposition.predict(x))
    first = saved.evaluate(wide_mlp, decomposition, x, labels=y)
    second = saved.evaluate(wide_mlp, again, x, labels=y)
    assert first.to_dict() == second.to_dict()
    assert again.metadata["data_sha256"] == decomposition.metadata["data_sha256"]
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle


def test_load_against_another_model_fails_clearly(wide_mlp, digits_xy, tmp_path) -> None:
    x, y = digits_xy
    decomposition = saved.decompose(
        wide_mlp, x[:200], method="random", labels=y[:200], progress=False
    )
    path = decomposition.save(tmp_path / "d.safetensors")
    other = testing.tiny_mlp(hidden=(128, 128), seed=9)
    with pytest.raises(ValueError, match="made for another model"):
        saved.load(path, other)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable saved decomposition"):
        saved.load(path, wide_mlp)


def test_unstructured_components_have_no_surgery(wide_mlp, digits_xy) -> None:
    x, _ = digits_xy
    decomposition = saved.decompose(wide_mlp, x[:200], method="wanda", progress=False)
    assert decomposition.supports.shape[1] == 64 * 128 + 128 * 128  # weights, not units
    with pytest.raises(TypeError, match="only structured masks"):
        decomposition.component(0)


@pytest.mark.parametrize("method", sorted(saved.METHODS))
def test_no_method_changes_the_users_model(method: str, digits_xy) -> None:
    x, y = digits_xy
    model = testing.tiny_mlp(seed=7)
    model.train()
    model[2].eval()
    model[0].bias.requires_grad_(False)
    before = testing.state_snapshot(model)
    decomposition = saved.decompose(
        model,
        x[:150],
        method=method,
        labels=y[:150],
        progress=False,
        lbmask=LBMaskConfig(steps=3),
    )
    saved.evaluate(model, decomposition, x[:150], labels=y[:150])
    assert testing.state_snapshot(model) == before


def test_decompose_rejects_bad_arguments(digits_mlp, digits_xy) -> None:
    x, _ = digits_xy
    with pytest.raises(ValueError, match="method: expected one of"):
        saved.decompose(digits_mlp, x, method="prune-everything")
    with pytest.raises(ValueError, match=r"sparsity: expected a value in \(0, 1\)"):
        saved.decompose(digits_mlp, x, sparsity=1.2)
    with pytest.raises(ValueError, match=r"alpha: expected a value in \[0, 1\]"):
        saved.decompose(digits_mlp, x, alpha=2.0)
    # a setting given twice, differently, is refused rather than one of them ignored
    with pytest.raises(ValueError, match=r"sparsity: decompose\(sparsity=0.4\) and lbmask"):
        saved.decompose(digits_mlp, x, sparsity=0.4, lbmask=LBMaskConfig(sparsity=0.3))
    with pytest.raises(ValueError, match=r"alpha: decompose\(alpha=0.0\) and lbmask.alpha=1.0"):
        saved.decompose(digits_mlp, x, alpha=0.0, lbmask=LBMaskConfig())


def test_a_setting_given_once_is_used_wherever_it_is_given(digits_mlp, digits_xy) -> None:
    x, _ = digits_xy
    quick = LBMaskConfig(steps=2, sparsity=0.3)
    from_config = saved.decompose(digits_mlp, x[:200], lbmask=quick, progress=False)
    assert from_config.sparsity == 0.3
    assert from_config.metadata["config"]["lbmask"]["sparsity"] == 0.3
    again = saved.decompose(digits_mlp, x[:200], sparsity=0.3, lbmask=quick, progress=False)
    assert torch.equal(again.masks, from_config.masks)  # the same value twice is fine
    baseline = saved.decompose(digits_mlp, x[:200], method="random", sparsity=0.7)
    assert baseline.sparsity == 0.7
    pruned = 1 - baseline.masks.double().mean(1)
    assert torch.allclose(pruned, torch.full_like(pruned, 0.7), atol=0.02)


def test_check_uses_its_batch_size_in_every_step(digits_mlp, digits_xy) -> None:
    """``check(batch_size=...)`` reaches the split, decomposition and evaluation: no plain
    pass of the model (no masking hooks) sees more rows than that, but for boundary mining's
    passes over both ends of up to ``batch_size`` pairs (the default is 256 rows)."""
    x, y = digits_xy
    largest = [0]
    inner = [m for m in digits_mlp.modules() if m is not digits_mlp]

    def watch(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if not any(m._forward_hooks or m._forward_pre_hooks for m in inner):
            largest[0] = max(largest[0], args[0].shape[0])

    handle = digits_mlp.register_forward_pre_hook(watch)
    try:
        saved.check(
            digits_mlp, x[:400], labels=y[:400], batch_size=16, lbmask=LBMaskConfig(steps=2)
        )
    finally:
        handle.remove()
    assert 0 < largest[0] <= 2 * 16


def test_shared_boundary_set_gives_the_same_decomposition(digits_mlp, digits_xy) -> None:
    """One mining run shared between methods (as the paper-table benchmark does) yields the
    masks decompose would have learned mining by itself with the same seed."""
    from saved.boundary import mine_boundary

    x = digits_xy[0][:300]
    config = LBMaskConfig(steps=20)
    mined = mine_boundary(digits_mlp, x, progress=False, seed=3)
    shared = saved.decompose(digits_mlp, x, lbmask=config, mined=mined, seed=3, progress=False)
    alone = saved.decompose(digits_mlp, x, lbmask=config, seed=3, progress=False)
    assert torch.equal(shared.masks, alone.masks)
    with pytest.raises(ValueError, match="mined: its samples index 300 data rows"):
        saved.decompose(digits_mlp, x[:100], mined=mined, progress=False)


def test_the_reference_logits_of_the_data_are_computed_once_per_decompose(
    wide_mlp, digits_xy
) -> None:
    """Every data sample goes through the plain model (no masking hooks, no gradient: a
    reference pass, not an attack step) once in a whole ``decompose``: the pipeline's pass;
    boundary mining and mask learning reuse its logits (they used to compute them twice more)."""
    x, _ = digits_xy
    data = x[:96]
    seen = torch.zeros(len(data), dtype=torch.long)
    inner = [m for m in wide_mlp.modules() if m is not wide_mlp]

    def count(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if torch.is_grad_enabled() or any(m._forward_hooks or m._forward_pre_hooks for m in inner):
            return  # an attack step or a masked pass
        batch = args[0].detach().cpu()
        seen.add_((batch[:, None, :] == data[None]).all(-1).sum(0))

    handle = wide_mlp.register_forward_pre_hook(count)
    try:
        decomposition = saved.decompose(
            wide_mlp, data, lbmask=LBMaskConfig(steps=5), progress=False
        )
    finally:
        handle.remove()
    assert decomposition.metadata["training"]["steps_run"] == 5
    # the first two samples also form the example that unit discovery runs the model on, to
    # find the classifier (structure, not logits); every sample is a reference row once
    assert seen.tolist() == [2, 2] + [1] * (len(data) - 2)


def test_too_little_decomposition_data_is_named_with_its_figure(digits_mlp, digits_xy) -> None:
    """Learned masks on fewer than MIN_SAMPLES_PER_CLASS samples per class draw a
    LittleDataWarning with the count; enough data, or a method without learning, draws none."""
    import warnings

    from saved.pipeline import MIN_SAMPLES_PER_CLASS

    x, _ = digits_xy
    few = MIN_SAMPLES_PER_CLASS * 10 - 1  # 10 digit classes
    config = LBMaskConfig(steps=1)
    with pytest.warns(saved.LittleDataWarning) as caught:
        saved.decompose(digits_mlp, x[:few], lbmask=config, progress=False)
    assert f"{few} samples for 10 classes ({few / 10:.1f} per class)" in str(caught[0].message)
    assert f"pass at least {MIN_SAMPLES_PER_CLASS * 10} samples" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", saved.LittleDataWarning)
        saved.decompose(digits_mlp, x[: few + 1], lbmask=config, progress=False)
        saved.decompose(digits_mlp, x[:few], method="wanda", progress=False)


def test_a_failing_dis_points_to_modular_training_and_a_failing_bound_does_not(
    digits_mlp, digits_xy
) -> None:
    """The "next:" line appears only where the components themselves disagree too often
    (Dis > eps): not when only the confidence bound is above eps, and not when it holds."""
    import dataclasses

    x, y = digits_xy
    report = saved.check(digits_mlp, x, labels=y, method="random", progress=False)
    assert report.disagreement > 0.05
    strict = dataclasses.replace(report, contract=saved.Contract(eps=report.disagreement / 2))
    assert "saved.ModularityPenalty" in strict.next_step()
    assert strict.next_step() in strict.explain()
    bound_only = dataclasses.replace(
        report, contract=saved.Contract(eps=report.disagreement, gamma=1.0, eta=0.0)
    )
    assert not bound_only.semantic_holds and bound_only.next_step() is None
    lenient = dataclasses.replace(report, contract=saved.Contract(eps=1.0, gamma=1.0, eta=0.0))
    assert lenient.semantic_holds and lenient.next_step() is None


def test_check_runs_each_sample_through_the_model_once(wide_mlp, digits_xy) -> None:
    """The split's pass is the only one: decomposition and certification take its logits.
    The three calls by hand (split, decompose, evaluate) run every sample twice and give the
    same report."""
    x, _ = digits_xy
    x = x[:500]
    config = LBMaskConfig(steps=5)
    counter = testing.ReferenceCounter(wide_mlp, x)
    try:
        report = saved.check(wide_mlp, x, lbmask=config, progress=False)
        once = counter.counts.clone()
        counter.counts.zero_()
        plan = saved.holdout(wide_mlp, x)
        decomposition = saved.decompose(
            wide_mlp, x, keep=plan.decompose_keep, lbmask=config, progress=False
        )
        again = saved.evaluate(
            wide_mlp, decomposition, x, keep=plan.evaluate_keep, split=plan.split
        )
    finally:
        counter.handle.remove()
    assert once.tolist() == [1] * len(x)
    assert counter.counts.tolist() == [2] * len(x)
    mine, theirs = report.to_dict(), again.to_dict()
    for record in (mine, theirs):
        record["training"].pop("seconds")
    assert mine == theirs


def test_reference_logits_of_the_wrong_length_are_refused(wide_mlp, digits_xy) -> None:
    x, _ = digits_xy
    decomposition = saved.decompose(wide_mlp, x[:200], method="random", progress=False)
    with pytest.raises(ValueError, match="reference: 199 rows of logits for 200 evaluated"):
        saved.evaluate(wide_mlp, decomposition, x[:200], reference=torch.zeros(199, 10))
