"""saved/masking/ (discovery, units, hooks, surgery) and saved/decomposition.py: unit
discovery, masking hooks, exact sizes, and surgery that agrees with masking on real
torchvision and transformers architectures."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from saved import ClassComponents, testing
from saved._runtime import forward_logits
from saved.baselines import magnitude, random
from saved.decomposition import Decomposition
from saved.inputs import repeat_batch
from saved.masking.units import UnitSpace


def _models() -> dict[str, tuple[nn.Module, object]]:
    x, _ = testing.digits()
    images = x.reshape(-1, 1, 8, 8)
    ids = torch.randint(5, 2000, (6, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:2, 8:] = 0
    photos = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mobilenet = torchvision.models.mobilenet_v2(num_classes=10)
    small = photos[:, :, :32, :32]
    return {
        "mlp": (testing.tiny_mlp(), x[:40]),
        "tiny_resnet": (testing.tiny_resnet(), images[:40]),
        "resnet18": (torchvision.models.resnet18(num_classes=10), photos),
        "resnet34": (torchvision.models.resnet34(num_classes=10), photos),
        "bert": (testing.tiny_bert(num_labels=4), {"input_ids": ids, "attention_mask": mask}),
        "vit": (testing.tiny_vit(), images[:20]),
        # depthwise convolutions and inverted residuals
        "mobilenet_v2": (_with_batch_statistics(mobilenet, photos), photos),
        "convnext_blocks": (_convnext_blocks(), photos[:, :, :32, :32]),
        # a concatenation's consumers see several channel groups side by side
        "densenet": (_with_batch_statistics(_densenet(), small), small),
        # one layer shared by every depth, its own attention projection
        "albert": (testing.tiny_albert(), {"input_ids": ids, "attention_mask": mask}),
    }


def _densenet() -> nn.Module:
    return torchvision.models.DenseNet(
        growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=10
    )


def _with_batch_statistics(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    """BatchNorm running statistics from one pass over ``batch``: a fresh deep net's logits
    are otherwise ~1e-10 and every difference is trivially small."""
    model.train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 1.0
        model(batch)
    return model.eval()


def _convnext_blocks() -> nn.Sequential:
    """torchvision's ConvNeXt block twice on a patchify stem: depthwise conv, LayerNorm over
    channels, an MLP of 4 x 16 neurons, layer scale and the residual stream."""
    from torchvision.models.convnext import CNBlock

    return nn.Sequential(
        nn.Conv2d(3, 16, 4, stride=4),
        CNBlock(16, layer_scale=1.0, stochastic_depth_prob=0.0),
        CNBlock(16, layer_scale=1.0, stochastic_depth_prob=0.0),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


MODELS = [
    "mlp",
    "tiny_resnet",
    "resnet18",
    "resnet34",
    "bert",
    "vit",
    "mobilenet_v2",
    "convnext_blocks",
    "densenet",
    "albert",
]


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[nn.Module, object]]:
    torch.manual_seed(0)
    built = _models()
    for model, _ in built.values():
        model.eval()
    return built


def _first(batch: object, n: int) -> object:
    return {k: v[:n] for k, v in batch.items()} if isinstance(batch, dict) else batch[:n]  # type: ignore[index]


@pytest.mark.parametrize("name", MODELS)
def test_surgery_matches_masking(name: str, models) -> None:
    model, batch = models[name]
    space = UnitSpace.of(model, _first(batch, 2))
    masks = random.masks(space, 3, 0.5, seed=1)
    with torch.no_grad(), space.masked(model, masks):
        masked = forward_logits(model, repeat_batch(batch, 3))  # type: ignore[arg-type]
    masked = masked.view(3, -1, masked.shape[-1])
    full_params = sum(p.numel() for p in model.parameters())
    for k in range(3):
        reduced = space.reduce(model, masks[k]).eval()
        with torch.no_grad():
            out = forward_logits(reduced, batch)  # type: ignore[arg-type]
        assert float((out - masked[k]).abs().max()) <= 1e-5
        assert sum(p.numel() for p in reduced.parameters()) < full_params
    # masking really changes the function (otherwise equivalence would be trivial)
    with torch.no_grad():
        plain = forward_logits(model, batch)  # type: ignore[arg-type]
    assert float((plain - masked[0]).abs().max()) > 1e-4


def test_channels_normalised_by_a_layernorm_are_not_units(models) -> None:
    """A LayerNorm over channels divides by statistics a zeroed channel still moves, so the
    residual stream of ConvNeXt blocks is left out (and said so); the MLP neurons stay."""
    model, batch = models["convnext_blocks"]
    space = UnitSpace.of(model, _first(batch, 2))
    assert [(g.kind, g.size) for g in space.groups] == [("neurons", 64), ("neurons", 64)]
    (left_out,) = space.excluded
    assert left_out.name == "0" and left_out.size == 16
    reason = "normalised across channels by LayerNorm 1.block.2"
    assert left_out.describe() == f"0 (16 channels): {reason}"
    assert UnitSpace.of(*models["resnet18"][:1], _first(models["resnet18"][1], 2)).excluded == ()


def test_albert_units_are_its_shared_layers_heads_and_ffn_neurons(models) -> None:
    model, batch = models["albert"]
    space = UnitSpace.of(model, _first(batch, 2))
    assert [(g.kind, g.size) for g in space.groups] == [("heads", 2), ("neurons", 64)]


def test_concatenated_channels_are_masked_where_they_sit(models) -> None:
    """In a DenseNet block each layer's new channels reach every later layer's BatchNorm at
    an offset of the concatenation: those sites mask exactly those features."""
    model, batch = models["densenet"]
    space = UnitSpace.of(model, _first(batch, 2))
    sites = [s for g in space.groups for s in g.sites if s.index is not None]
    assert sites, "the concatenation's consumers are indexed sites"
    modules = dict(model.named_modules())
    for site in sites:
        assert site.features == modules[site.module].num_features
        assert len(set(site.index)) == len(site.index) and max(site.index) < site.features
    unit_mask = torch.zeros(2, len(sites[0].index))
    spread = sites[0].spread(unit_mask)
    assert spread.shape == (2, sites[0].features)
    assert spread.sum() == 2 * (sites[0].features - len(sites[0].index))


def test_surgery_refuses_uneven_grouped_convolutions() -> None:
    """A grouped (not depthwise) convolution cannot lose channels unevenly across its groups:
    masking is exact and runs, surgery says why it cannot make a smaller network."""
    from torchvision.models.regnet import BlockParams, RegNet

    torch.manual_seed(0)
    params = BlockParams.from_init_params(depth=3, w_0=8, w_a=8.0, w_m=2.0, group_width=4)
    model = RegNet(params, num_classes=10).eval()
    batch = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    space = UnitSpace.of(model, batch[:2])
    masks = random.masks(space, 2, 0.5, seed=0)
    assert space.run(model, masks, batch).shape == (8, 10)
    with pytest.raises(ValueError, match=r"grouped convolution trunk_output\.block\d"):
        space.reduce(model, masks[0])


def test_a_model_torch_pruning_cannot_trace_is_refused_by_name() -> None:
    """ShuffleNet's channel shuffle is a known gap of Torch-Pruning: structured units are
    refused with its error and what still works; per-weight masks do not need the graph."""
    from saved.masking.weights import WeightSpace

    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    batch = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"Torch-Pruning cannot trace .*ZeroDivisionError.*wanda"):
        UnitSpace.of(model, batch)
    assert WeightSpace.of(model, batch).num_units > 0


def test_residual_channels_form_one_group(models) -> None:
    model, batch = models["resnet18"]
    space = UnitSpace.of(model, _first(batch, 2))
    stem = next(g for g in space.groups if any(site.module == "bn1" for site in g.sites))
    sites = {site.module for site in stem.sites}
    # the stem's channels are added to every layer1 block's output: one unit group
    assert {"conv1", "bn1", "layer1.0.bn2", "layer1.1.bn2"} <= sites
    assert stem.size == 64
    assert all(site.module != "fc" for g in space.groups for site in g.sites)  # classifier


def test_transformer_units_are_heads_and_ffn_neurons(models) -> None:
    model, batch = models["bert"]
    space = UnitSpace.of(model, _first(batch, 2))
    kinds = [(g.kind, g.size) for g in space.groups]
    assert kinds == [("heads", 4), ("heads", 4), ("neurons", 64), ("neurons", 64)]
    assert space.num_units == 136
    # a head owns q, k, v rows with biases (3 * 8 * 33) and 8 output columns of width 32
    assert space.groups[0].params_per_unit == 3 * 8 * 33 + 8 * 32


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("name", ["mlp", "resnet18", "bert"])
def test_binarisation_keeps_exactly_the_target_per_group(
    name: str, sparsity: float, models
) -> None:
    model, batch = models[name]
    space = UnitSpace.of(model, _first(batch, 2))
    scores = torch.randn(4, space.num_units, generator=torch.Generator().manual_seed(2))
    masks = space.binarise(scores, sparsity)
    for group, columns in space.group_slices():
        expected = round((1 - sparsity) * group.size)
        assert masks[:, columns].sum(1).tolist() == [expected] * 4
        # and they are the top-scoring units
        kept_min = scores[:, columns].masked_fill(~masks[:, columns], float("inf")).amin(1)
        dropped_max = scores[:, columns].masked_fill(masks[:, columns], float("-inf")).amax(1)
        assert bool((kept_min >= dropped_max).all())


def test_component_cost_reports_real_savings(models) -> None:
    model, batch = models["resnet18"]
    space = UnitSpace.of(model, _first(batch, 2))
    decomposition = Decomposition(model, space, ClassComponents(10), random.masks(space, 10, 0.5))
    cost = decomposition.cost(3)
    # half the channels on both sides of most convolutions: about a quarter of the work
    assert cost.params < 0.35 * cost.full_params
    assert cost.macs < 0.35 * cost.full_macs


def test_batched_components_equal_one_at_a_time(models) -> None:
    model, batch = models["tiny_resnet"]
    space = UnitSpace.of(model, _first(batch, 2))
    masks = random.masks(space, 10, 0.5, seed=3)
    decomposition = Decomposition(model, space, ClassComponents(10), masks)
    together = decomposition.component_logits(batch, batch_size=64)
    for k in (0, 7):
        with torch.no_grad():
            alone = decomposition.component(k)(batch)
        assert torch.allclose(together[k], alone, atol=1e-5)


def test_magnitude_masks_are_shared_and_random_ones_differ(models) -> None:
    model, batch = models["mlp"]
    space = UnitSpace.of(model, _first(batch, 2))
    shared = magnitude.masks(space, 5, 0.5)
    assert all(torch.equal(shared[0], row) for row in shared)
    assert not torch.equal(*random.masks(space, 2, 0.5, seed=0))


def test_model_without_maskable_units_is_rejected() -> None:
    with pytest.raises(ValueError, match="no maskable units"):
        UnitSpace.of(nn.Linear(64, 10), torch.zeros(2, 64))


def test_bad_masks_are_rejected(models) -> None:
    model, batch = models["mlp"]
    space = UnitSpace.of(model, _first(batch, 2))
    with (
        pytest.raises(ValueError, match=r"masks: expected \[K, 64\]"),
        space.masked(model, torch.ones(2, 5)),
    ):
        pass
    with pytest.raises(ValueError, match="keep: expected a bool tensor"):
        space.reduce(model, torch.ones(64))
    with pytest.raises(ValueError, match=r"masks: expected a bool tensor \[K=10, N=64\]"):
        Decomposition(model, space, ClassComponents(10), torch.ones(3, 64, dtype=torch.bool))


def test_one_quota_per_kind_keeps_the_total_and_a_unit_of_every_group(models) -> None:
    model, batch = models["bert"]
    space = UnitSpace.of(model, _first(batch, 2))
    scores = torch.randn(3, space.num_units, generator=torch.Generator().manual_seed(0))
    scores[:, space.offsets[0] : space.offsets[1]] -= 100  # the first group ranks last
    masks = space.binarise(scores, 0.5, "kind")
    blocks = space.quota_blocks("kind")
    for block, keep in zip(blocks, space.quota_keeps(0.5, "kind"), strict=True):
        columns = torch.cat([torch.arange(c.start, c.stop) for _, c in block])
        assert torch.equal(masks[:, columns].sum(1), torch.full((3,), keep))
        for _, c in block:
            assert bool(masks[:, c].any(1).all())  # no layer is removed outright
    assert len(blocks) == len({g.kind for g in space.groups}) == 2  # heads, FFN neurons
    assert int(masks[:, space.offsets[0] : space.offsets[1]].sum(1).max()) == 1


def test_one_quota_by_parameters_is_one_threshold_that_fills_the_budget(models) -> None:
    """``"params"`` allocation on the BERT space (a head carries 64 times an FFN neuron's
    parameters): per row, every group keeps its best unit; the other kept units are exactly
    those scoring above one threshold; their parameters stay within ``(1 - s)`` of the total,
    and the next unit in score order would not have fitted."""
    model, batch = models["bert"]
    space = UnitSpace.of(model, _first(batch, 2))
    params = space.unit_params.double()
    assert len(set(params.tolist())) == 2  # heads and FFN neurons differ
    scores = torch.randn(4, space.num_units, generator=torch.Generator().manual_seed(2))
    masks = space.binarise(scores, 0.5, "params")
    budget = 0.5 * float(params.sum())
    for row, mask in zip(scores, masks, strict=True):
        forced = torch.zeros_like(mask)
        for _, c in space.group_slices():
            forced[c.start + int(row[c].argmax())] = True
            assert bool(mask[c].any())  # no layer is removed outright
        free = mask & ~forced
        dropped = ~mask
        assert float(row[free].min()) > float(row[dropped].max())  # one threshold
        assert float(params[mask].sum()) <= budget + float(params[forced].sum())
        first_dropped = int(torch.nonzero(dropped).flatten()[row[dropped].argmax()])
        assert float(params[mask].sum() + params[first_dropped]) > budget  # nothing else fits
    with pytest.raises(ValueError, match="'params' allocation keeps parameters, not a count"):
        space.quota_keeps(0.5, "params")


def test_per_component_sparsities(models) -> None:
    model, batch = models["mlp"]
    space = UnitSpace.of(model, _first(batch, 2))
    scores = torch.randn(3, space.num_units, generator=torch.Generator().manual_seed(1))
    rates = (0.3, 0.5, 0.7)
    masks = space.binarise(scores, list(rates))
    for k, rate in enumerate(rates):
        assert torch.equal(masks[k], space.binarise(scores[k : k + 1], rate)[0])
    assert masks[0].sum() > masks[1].sum() > masks[2].sum()
    with pytest.raises(ValueError, match="one value or one per component"):
        space.binarise(scores, [0.5, 0.5])


def test_a_graph_whose_shape_inference_gave_up_is_refused() -> None:
    """Torch-Pruning's shape inference gives up on a Swin Transformer's window reshapes, and
    enumerating its groups then exhausted 20 GB on swin_t: refused up front, with the reason."""
    swin = torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4]
    ).eval()
    batch = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"shape inference gave up .*lbmask-unstructured"):
        UnitSpace.of(swin, batch)
