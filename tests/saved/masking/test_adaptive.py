"""saved/masking/adaptive.py: per-component sparsity from one learned ranking — every component
ends at the largest grid sparsity the semantic budget allows, never below eta."""

from __future__ import annotations

import itertools

import pytest
import torch

import saved
from saved import ClassComponents, Contract, LBMaskConfig, as_inputs, testing
from saved.boundary import calibration_set, mine_boundary
from saved.contract import boundary_subset, jaccard_overlap, logit_margins
from saved.decomposition import Decomposition
from saved.masking.adaptive import MAX_SPARSITY, STEP, adaptive_sparsity
from saved.masking.lbmask import train_masks
from saved.masking.units import UnitSpace


@pytest.fixture(scope="module")
def wide_mlp(digits_xy):
    x, y = digits_xy
    return testing.train_classifier(testing.tiny_mlp(hidden=(128, 128), seed=0), x, y, steps=300)


def _dis(model, space, logits, rates, samples, kappa) -> float:
    decomposition = Decomposition(model, space, ClassComponents(10), space.binarise(logits, rates))
    reference = saved.predict_logits(model, samples)
    boundary = boundary_subset(logit_margins(reference), q=kappa)
    decomposed = decomposition.predict(samples.select(boundary))
    return float((decomposed != reference.argmax(1)[boundary]).double().mean())


@pytest.fixture(scope="module")
def ranking(wide_mlp, digits_xy):
    x, _ = digits_xy
    data, held = as_inputs(x[:900]), as_inputs(x[900:1400])
    calibration = calibration_set(data, mine_boundary(wide_mlp, data), wide_mlp)
    space = UnitSpace.of(wide_mlp, x[:2])
    logits = train_masks(
        wide_mlp, calibration, ClassComponents(10), space, LBMaskConfig(steps=200)
    ).logits
    return space, logits, held


def test_each_component_takes_the_largest_sparsity_within_the_budget(wide_mlp, ranking):
    space, logits, held = ranking
    contract = Contract(eps=0.3, eta=0.3, gamma=1.0)  # gamma = 1: the budget pass alone
    rates = adaptive_sparsity(wide_mlp, space, ClassComponents(10), logits, held, contract)
    assert len(rates) == 10
    assert all(contract.eta - 1e-9 <= r <= MAX_SPARSITY + 1e-9 for r in rates)
    assert len(set(rates)) > 1  # components differ
    within = _dis(wide_mlp, space, logits, rates, held, contract.kappa)
    assert within <= contract.eps / 2
    for k in range(10):  # maximal: one more step for any component breaks the budget
        if rates[k] + STEP > MAX_SPARSITY + 1e-9:
            continue
        more = list(rates)
        more[k] = round(rates[k] + STEP, 10)
        assert _dis(wide_mlp, space, logits, more, held, contract.kappa) > contract.eps / 2


def test_the_overlap_pass_separates_components_and_eta_is_the_floor(wide_mlp, ranking):
    space, logits, held = ranking
    tight = Contract(eps=0.1, eta=0.3, gamma=1.0)
    # the magnitude ranking reversed drops the units of largest weight norm first: already at
    # eta it breaks the budget (checked), so nothing fits and nobody moves, nobody goes below
    worst = -space.norms[None].expand(10, -1).clone()
    assert _dis(wide_mlp, space, worst, [0.3] * 10, held, 0.2) > tight.eps / 2
    floor = adaptive_sparsity(wide_mlp, space, ClassComponents(10), worst, held, tight)
    assert floor == [0.3] * 10
    at_eta = [0.3] * 10
    contract = Contract(eps=0.1, eta=0.3, gamma=0.6)
    rates = adaptive_sparsity(wide_mlp, space, ClassComponents(10), logits, held, contract)
    assert all(r >= a - 1e-9 for r, a in zip(rates, at_eta, strict=True))
    overlap = jaccard_overlap(space.binarise(logits, rates))
    assert float(overlap.fill_diagonal_(0).max()) <= contract.gamma
    before = jaccard_overlap(space.binarise(logits, at_eta))
    assert float(before.fill_diagonal_(0).max()) > contract.gamma  # the pass had work to do


def test_decompose_auto_reports_each_components_sparsity(wide_mlp, digits_xy) -> None:
    x, _ = digits_xy
    contract = Contract(eta=0.3)
    decomposition = saved.decompose(
        wide_mlp, x[:900], sparsity="auto", contract=contract, progress=False
    )
    rates = decomposition.sparsity
    assert isinstance(rates, list) and len(rates) == 10
    kept = decomposition.masks.sum(1)
    order = sorted(range(10), key=lambda k: rates[k])
    assert all(kept[a] >= kept[b] for a, b in itertools.pairwise(order))
    report = saved.evaluate(wide_mlp, decomposition, x[900:], contract)
    assert report.min_prune >= contract.eta - 0.02  # parameter-weighted, rounding per layer
    assert max(report.prunes) - min(report.prunes) > 0.01
    assert "per component" in _rendered(report)
    with pytest.raises(ValueError, match="'auto' needs learned masks"):
        saved.decompose(wide_mlp, x[:100], sparsity="auto", method="random")


def _rendered(report) -> str:
    from io import StringIO

    from rich.console import Console

    from saved.report import render_report

    out = StringIO()
    Console(file=out, width=200).print(render_report(report))
    return out.getvalue()


def test_auto_never_goes_below_eta(wide_mlp, digits_xy) -> None:
    x, _ = digits_xy
    contract = Contract(eps=0.01, eta=0.4)  # a budget nothing meets: everything stays at eta
    decomposition = saved.decompose(
        wide_mlp,
        x[:600],
        sparsity="auto",
        contract=contract,
        lbmask=LBMaskConfig(steps=20),
        progress=False,
    )
    assert min(decomposition.sparsity) >= 0.4 - 1e-9  # type: ignore[type-var]
    assert torch.equal(
        decomposition.masks,
        decomposition.space.binarise(
            decomposition.masks.float(),
            decomposition.sparsity,  # type: ignore[arg-type]
        ),
    )


def test_one_learned_ranking_serves_every_sparsity(wide_mlp, digits_xy, tmp_path) -> None:
    """``at_sparsity`` re-binarises the learned logits: the fixed-sparsity decomposition of the
    same data, config and seed has exactly its masks, and a saved file keeps the ranking."""
    x, _ = digits_xy
    config = LBMaskConfig(steps=40)
    adaptive = saved.decompose(
        wide_mlp, x[:600], sparsity="auto", lbmask=config, contract=Contract(), progress=False
    )
    fixed = saved.decompose(wide_mlp, x[:600], lbmask=config, progress=False)
    assert adaptive.ranking is not None and fixed.ranking is not None
    assert torch.equal(adaptive.ranking, fixed.ranking)
    again = adaptive.at_sparsity(0.5)
    assert torch.equal(again.masks, fixed.masks) and again.sparsity == 0.5
    assert torch.equal(adaptive.at_sparsity(adaptive.sparsity).masks, adaptive.masks)  # type: ignore[arg-type]
    loaded = saved.load(fixed.save(tmp_path / "ranked.safetensors"), wide_mlp)
    assert loaded.ranking is not None and torch.equal(loaded.ranking, fixed.ranking)
    assert torch.equal(loaded.at_sparsity(0.7).masks, fixed.at_sparsity(0.7).masks)
    with pytest.raises(ValueError, match="sparsity: expected a value in"):
        fixed.at_sparsity(1.0)
    with pytest.raises(ValueError, match="one value or one per component"):
        fixed.at_sparsity([0.5, 0.5])
    scored = saved.decompose(wide_mlp, x[:200], method="random", progress=False)
    with pytest.raises(ValueError, match="keeps no learned ranking"):
        scored.at_sparsity(0.5)


def test_auto_reads_only_the_thresholds_that_enter_the_cache_key(wide_mlp, ranking) -> None:
    """The plugin keys cached decompositions by ``Contract.shaping_masks``: the thresholds
    outside it (delta, bound, kappa_margin) must not change the chosen sparsities, and each
    one inside it must be able to."""
    space, logits, held = ranking
    base = Contract(eps=0.1, eta=0.3, gamma=0.6)  # the overlap pass binds (test above)
    assert set(base.shaping_masks("auto")) == set(saved.contract.ADAPTIVE_FIELDS)
    assert base.shaping_masks(0.5) == {}
    # LBMask's default overlap hinge aims below gamma: gamma shapes the masks at any sparsity
    assert base.shaping_masks(0.5, overlap=True) == {"gamma": 0.6}
    assert base.shaping_masks("auto", overlap=True) == base.shaping_masks("auto")

    def rates(contract: Contract) -> list[float]:
        return adaptive_sparsity(wide_mlp, space, ClassComponents(10), logits, held, contract)

    chosen = rates(base)
    others = Contract(eps=0.1, eta=0.3, gamma=0.6, delta=0.2, bound="hoeffding", kappa_margin=0.5)
    assert rates(others) == chosen
    changed = {
        "eps": Contract(eps=0.3, eta=0.3, gamma=0.6),
        "eta": Contract(eps=0.1, eta=0.8, gamma=0.6),  # above some chosen sparsities
        # the ranking's masks were learned under LBMask's overlap hinge (0.45 at sparsity
        # 0.5), and their overlap falls as the sparsity rises: gamma binds the overlap pass
        # from about 0.15-0.2 (by the thread count), so 0.1 for certain
        "gamma": Contract(eps=0.1, eta=0.3, gamma=0.1),
        "kappa": Contract(eps=0.1, eta=0.3, gamma=0.6, kappa=1.0),
    }
    for name, contract in changed.items():
        assert rates(contract) != chosen, name
