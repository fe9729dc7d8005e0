"""saved/masking/weights.py: unstructured (per-weight) masks — the comparison variant of LBMask."""

from __future__ import annotations

import copy

import torch

from saved import ClassComponents, as_inputs, testing
from saved._runtime import forward_logits
from saved.masking.lbmask import LBMaskConfig, train_masks
from saved.masking.weights import WeightSpace


def test_weight_space_covers_hidden_layers_not_the_classifier(digits_mlp, digits_xy) -> None:
    x, _ = digits_xy
    space = WeightSpace.of(digits_mlp, x[:2])
    assert [g.name for g in space.groups] == ["0.weight", "2.weight"]
    assert space.num_units == 64 * 32 + 32 * 32


def test_masked_weights_equal_a_hand_masked_copy(digits_mlp, digits_xy) -> None:
    x, _ = digits_xy
    space = WeightSpace.of(digits_mlp, x[:2])
    masks = space.binarise(
        torch.rand(2, space.num_units, generator=torch.Generator().manual_seed(0)), 0.6
    )
    with torch.no_grad():
        together = space.run(digits_mlp, masks, x[:50]).view(2, 50, -1)
        for k in range(2):
            twin = copy.deepcopy(digits_mlp)
            for group, columns in space.group_slices():
                weight = dict(twin.named_parameters())[group.name]
                weight.mul_(masks[k, columns].view(group.shape))
            assert torch.allclose(together[k], forward_logits(twin, x[:50]), atol=1e-6)
        everything = torch.ones(1, space.num_units, dtype=torch.bool)
        assert torch.allclose(space.run(digits_mlp, everything, x[:50]), digits_mlp(x[:50]))


def test_unstructured_lbmask_keeps_exact_counts_and_the_model(digits_xy) -> None:
    x, y = digits_xy
    model = testing.train_classifier(testing.tiny_mlp(seed=2), x, y, steps=100)
    before = testing.state_snapshot(model)
    space = WeightSpace.of(model, x[:2])
    logits = train_masks(
        model, as_inputs(x[:300]), ClassComponents(10), space, LBMaskConfig(steps=10, alpha=1.0)
    ).logits
    masks = space.binarise(logits, 0.5)
    for group, columns in space.group_slices():
        assert masks[:, columns].sum(1).tolist() == [round(0.5 * group.size)] * 10
    assert all(p.grad is None for p in model.parameters())
    assert testing.state_snapshot(model) == before


def test_layers_read_functionally_are_not_masked(digits_images) -> None:
    """torchvision's nn.MultiheadAttention hands out_proj.weight to a functional call and
    never runs out_proj: no hook sees its inputs, so per-weight spaces leave it out, and
    Wanda (which reads every masked layer's inputs) runs on a torchvision ViT."""
    import torchvision

    import saved

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=8,
        patch_size=4,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=10,
    ).eval()
    x = digits_images[0][:40].repeat(1, 3, 1, 1)
    space = WeightSpace.of(vit, x[:2])
    names = [g.name for g in space.groups]
    assert names == [
        "conv_proj.weight",
        "encoder.layers.encoder_layer_0.mlp.0.weight",
        "encoder.layers.encoder_layer_0.mlp.3.weight",
    ]
    decomposition = saved.decompose(vit, x, method="wanda", progress=False)
    assert decomposition.masks.shape == (10, space.num_units)
