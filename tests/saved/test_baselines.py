"""saved/baselines/: the scores that read weights per input channel (Wanda, Wanda-structured)
on grouped and depthwise convolutions, checked against plain loops; and the mobilenet_v2
failure of issue 16 reproduced on real Fashion-MNIST images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import saved
from saved.activity import input_norms, wanda_scores
from saved.baselines import MaskContext, similarity, wanda_structured
from saved.components import ClassComponents
from saved.masking.units import UnitSpace
from saved.masking.weights import WeightSpace

needs_fashion_mnist = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir() and not os.environ.get("CI"),
    reason="Debian's dataset-fashion-mnist is not installed (make test installs it in CI)",
)


def _loop_scores(conv: nn.Conv2d, feature: torch.Tensor) -> torch.Tensor:
    """Wanda's |W_oj| * ||X_j|| weight by weight, the input channel j of row o found by hand."""
    weight = conv.weight.detach().abs()
    out, per_group, kh, kw = weight.shape
    out_per_group = out // conv.groups
    k = feature.shape[0]
    scores = torch.zeros(k, out, per_group * kh * kw)
    for c in range(k):
        for o in range(out):
            first = (o // out_per_group) * per_group  # the first input channel o reads
            for j in range(per_group):
                for a in range(kh):
                    for b in range(kw):
                        index = (j * kh + a) * kw + b
                        scores[c, o, index] = weight[o, j, a, b] * feature[c, first + j]
    return scores


@settings(max_examples=40)
@given(
    groups=st.integers(1, 4),
    in_per_group=st.integers(1, 3),
    out_per_group=st.integers(1, 3),
    kernel=st.integers(1, 3),
    k=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_wanda_scores_read_each_rows_own_group_of_inputs(
    groups: int, in_per_group: int, out_per_group: int, kernel: int, k: int, seed: int
) -> None:
    torch.manual_seed(seed)
    conv = nn.Conv2d(groups * in_per_group, groups * out_per_group, kernel, groups=groups)
    feature = torch.rand(k, groups * in_per_group)
    assert torch.allclose(wanda_scores(conv, feature), _loop_scores(conv, feature))


def test_wanda_scores_refuse_norms_of_another_width() -> None:
    depthwise = nn.Conv2d(6, 6, 3, groups=6)
    with pytest.raises(ValueError, match="Conv2d: 5 input features for a weight of 1 inputs x 6"):
        wanda_scores(depthwise, torch.ones(2, 5))


def _separable_cnn() -> nn.Sequential:
    """A depthwise-separable block (MobileNet's pattern) on 1x8x8 digits."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, groups=6),  # depthwise
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=1, groups=2),  # grouped
        nn.ReLU(),
        nn.Conv2d(4, 8, 1),  # pointwise
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()


def test_wanda_structured_scores_grouped_units_as_the_loop_does(digits_images) -> None:
    """Each unit's score is the sum, over the layers producing it, of its rows' Wanda scores,
    with grouped layers' rows reading only their group's input norms (the loop above)."""
    x, _ = digits_images
    model = _separable_cnn()
    space = UnitSpace.of(model, x[:2])
    components = ClassComponents(10)
    context = MaskContext(model, saved.as_inputs(x[:200]), components, torch.device("cpu"))
    masks = wanda_structured.masks(space, 10, 0.5, context=context)
    modules = dict(model.named_modules())
    producers = sorted({s.module for g in space.groups for s in g.sites})
    norms = input_norms(context, producers)
    expected = torch.zeros(10, space.num_units)
    for group, columns in space.group_slices():
        for site in group.sites:
            layer = modules[site.module]
            assert isinstance(layer, nn.Conv2d)
            expected[:, columns] += _loop_scores(layer, norms[site.module]).sum(2)
    assert any(modules[s.module].groups > 1 for g in space.groups for s in g.sites)
    assert torch.equal(masks, space.binarise(expected, 0.5))


def _fashion_images(n: int, size: int) -> torch.Tensor:
    from saved.datasets import load_fashion_mnist

    images, _ = load_fashion_mnist("test")
    x = torch.from_numpy(images[:n].copy()).float().div(255).unsqueeze(1)
    return nn.functional.interpolate(x, size=size).repeat(1, 3, 1, 1)


@needs_fashion_mnist
def test_wanda_on_torchvision_mobilenet_v2(tmp_path) -> None:
    """Issue 16: Wanda on mobilenet_v2 failed with `masks: expected a bool tensor [K=10,
    N=...], got (10, ...)` (a depthwise weight scored against every input channel). Now each
    weight row keeps exactly round((1 - s) * row) weights, s = 0.5, and the rest holds too."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    x = _fashion_images(24, 32)
    decomposition = saved.decompose(model, x, method="wanda", progress=False)
    space = decomposition.space
    assert isinstance(space, WeightSpace)
    params = dict(model.named_parameters())
    assert decomposition.masks.shape == (10, space.num_units)
    assert space.num_units == sum(params[g.name].numel() for g in space.groups)
    depthwise = 0
    for group, columns in space.group_slices():
        weight = params[group.name]
        rows = decomposition.masks[:, columns].view(10, weight.shape[0], -1)
        keep = max(1, round(0.5 * rows.shape[2]))
        assert (rows.sum(2) == keep).all(), group.name
        depthwise += weight.dim() == 4 and weight.shape[1] == 1
    assert depthwise == 17  # mobilenet_v2's depthwise convolutions
    report = saved.evaluate(model, decomposition, _fashion_images(48, 32)[24:])
    assert report.min_prune == pytest.approx(0.5, abs=0.01)


def test_activation_statistics_fold_rows_per_sample_batch_major() -> None:
    """MobileViT runs its transformer on [n * patch_area, patches, dim]: the rows of one
    sample are consecutive, so statistics per sample fold them; an uneven count is refused."""
    from saved.activity import per_sample

    x = torch.arange(24.0).reshape(6, 4)  # 3 samples x 2 rows each
    folded = per_sample(x, 3, "layer")
    assert folded.shape == (3, 2, 4)
    assert torch.equal(folded[1], x[2:4])
    with pytest.raises(ValueError, match="layer: ran on 6 rows for a batch of 4 samples"):
        per_sample(x, 4, "layer")


def test_data_driven_baselines_on_a_transformers_mobilevit(digits_images) -> None:
    """Wanda, Wanda-structured and MI read activations of layers that see several rows per
    sample (MobileViT's unfolded patches): they run and keep exact sizes."""
    from saved import testing

    model = testing.tiny_mobilevit().eval()
    x = nn.functional.interpolate(digits_images[0][:24], size=32)
    for method in ("wanda", "wanda-structured", "mi"):
        decomposition = saved.decompose(model, x, method=method, progress=False)
        kept = decomposition.masks.double().mean(1)
        assert torch.allclose(kept, torch.full_like(kept, 0.5), atol=0.02), method


def test_mi_on_a_layer_that_runs_at_every_depth(debian_text) -> None:
    """ALBERT runs one shared layer at every depth: MI's activity of a unit is the mean over
    those calls, one row per sample (it was two rows per sample and failed)."""
    from saved import testing

    model = testing.tiny_albert(num_layers=3).eval()
    batch = {key: value[:48] for key, value in debian_text[0].items()}
    decomposition = saved.decompose(model, batch, method="mi", progress=False)
    space = decomposition.space
    assert isinstance(space, UnitSpace)
    assert [(g.kind, g.size) for g in space.groups] == [("heads", 2), ("neurons", 64)]
    assert decomposition.masks.sum(1).tolist() == [1 + 32] * 4


# --------------------------------------------------------------------------- similarity pruning


def _drop_order_by_hand(patterns: torch.Tensor) -> list[int]:
    """The SP rule for one component, unit by unit in plain Python: among kept units, the
    largest cosine to another kept unit; of the units at it, the weakest goes."""
    columns = [patterns[:, j] for j in range(patterns.shape[1])]
    kept = list(range(len(columns)))
    order = [len(columns) - 1] * len(columns)
    for position in range(len(columns) - 1):
        closest = {}
        for i in kept:
            closest[i] = max(
                float(nn.functional.cosine_similarity(columns[i], columns[j], dim=0, eps=1e-12))
                for j in kept
                if j != i
            )
        top = max(closest.values())
        tied = [i for i in kept if closest[i] >= top - 1e-6]
        victim = min(tied, key=lambda i: (float(columns[i].norm()), i))
        order[victim] = position
        kept.remove(victim)
    return order


def test_similarity_drops_the_weaker_of_two_scaled_copies_first() -> None:
    """Units: a = (1, 0, 0), b = 2a (cosine 1 with a), c = (0, 1, 1), d = (0, 1, 0.9).
    a and b are the most alike pair: a (the weaker) goes first. Then b's closest is 0, c and d
    have cosine 1.9 / sqrt(2 * 1.81) = 0.9986: of them d (norm 1.345 < 1.414) goes. Then b and c
    (cosine 0): the weaker, c (1.414 < 2), goes; b stays."""
    a = torch.tensor([1.0, 0, 0])
    patterns = torch.stack([a, 2 * a, torch.tensor([0, 1.0, 1]), torch.tensor([0, 1.0, 0.9])], 1)
    assert similarity.drop_order(patterns[None]).tolist() == [[0, 3, 2, 1]]
    assert _drop_order_by_hand(patterns) == [0, 3, 2, 1]


@settings(max_examples=40)
@given(k=st.integers(1, 3), n=st.integers(2, 6), m=st.integers(2, 7), seed=st.integers(0, 2**16))
def test_similarity_drop_order_matches_a_plain_loop(k: int, n: int, m: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.rand(k, n, m, generator=generator, dtype=torch.float64)
    batched = similarity.drop_order(patterns)
    for row in range(k):
        assert batched[row].tolist() == _drop_order_by_hand(patterns[row])
    assert sorted(batched[0].tolist()) == list(range(m))  # a ranking: every position once


def test_similarity_masks_have_exact_sizes_and_leave_the_model_untouched(
    digits_mlp, digits_xy
) -> None:
    from saved import testing

    x, _ = digits_xy
    digits_mlp.train()  # a mode the call must give back
    before = testing.state_snapshot(digits_mlp)
    decomposition = saved.decompose(digits_mlp, x[:400], method="similarity", progress=False)
    assert testing.state_snapshot(digits_mlp) == before
    digits_mlp.eval()
    space = decomposition.space
    assert isinstance(space, UnitSpace)
    for (group, part), keep in zip(space.group_slices(), space.keep_counts(0.5), strict=True):
        assert decomposition.masks[:, part].sum(1).tolist() == [keep] * 10, group.name
    # components differ: each ranks its own class's activity
    assert len({tuple(row.tolist()) for row in decomposition.masks}) > 1


def test_the_similarity_ranking_starts_lbmask(digits_mlp, digits_xy) -> None:
    """LBMaskConfig(prior="similarity"): alpha times SP's ranking, standardised per group, is
    where mask learning starts; with no steps taken the masks are SP's own."""
    from saved.masking.trainer import initial_logits

    x, _ = digits_xy
    data = saved.as_inputs(x[:300])
    space = UnitSpace.of(digits_mlp, x[:2])
    context = MaskContext(digits_mlp, data, ClassComponents(10), torch.device("cpu"))
    scores = similarity.scores(space, context)
    start = initial_logits(space, 10, 1.0, torch.Generator().manual_seed(0), scores)
    assert torch.equal(space.binarise(start, 0.5), space.binarise(scores, 0.5))
    # the magnitude prior is what it always was, to the bit: each group's norms, standardised
    norms = initial_logits(space, 10, 1.0, torch.Generator().manual_seed(0))
    before = torch.cat([(g.norms - g.norms.mean()) / g.norms.std() for g in space.groups])
    noise = torch.randn(10, space.num_units, generator=torch.Generator().manual_seed(0)) * 1e-3
    assert torch.equal(norms, 1.0 * before.float().expand(10, -1) + noise)
    with pytest.raises(ValueError, match="prior: expected 'magnitude', 'similarity' or 'taylor'"):
        saved.LBMaskConfig(prior="cosine")  # type: ignore[arg-type]


def test_lbmask_from_the_similarity_prior_without_learning_is_similarity_pruning(
    digits_mlp, digits_xy
) -> None:
    x, _ = digits_xy
    sp = saved.decompose(digits_mlp, x[:300], method="similarity", progress=False)
    barely = saved.LBMaskConfig(prior="similarity", alpha=1.0, steps=1, lr=1e-7)
    started = saved.decompose(digits_mlp, x[:300], lbmask=barely, progress=False)
    assert torch.equal(started.masks, sp.masks)
    uniform = saved.decompose(
        digits_mlp, x[:300], lbmask=saved.LBMaskConfig(steps=1, lr=1e-7), progress=False
    )
    assert not torch.equal(uniform.masks, sp.masks)  # the prior made the difference
