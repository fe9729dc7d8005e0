"""Block wiring (saved/wiring.py): which weights cross between class blocks, the L1 penalty and
its proximal step, and the exactness that makes a wired network decomposable by construction."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import saved
from saved import BlockWiring, testing
from saved.components import ClassComponents
from saved.wiring import blocks_of


def test_blocks_share_a_part_and_split_the_rest_between_the_classes() -> None:
    # 10 units, 3 classes, shared 0.1: round(9 / 3) = 3 private each, the 1 left over shared
    assert blocks_of(10, 3, 0.1).tolist() == [-1, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    # 7 units, shared 0: round(7 / 3) = 2 each, the remainder shared
    assert blocks_of(7, 3, 0.0).tolist() == [-1, 0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="cannot give 3 classes"):
        blocks_of(2, 3, 0.0)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def test_the_classifier_reads_only_its_own_block_and_the_penalty_is_their_l1_norm() -> None:
    model = _mlp()
    wiring = BlockWiring(model, torch.randn(2, 4), shared=0.0)
    # hidden owners [0, 0, 1, 1, 2, 2]; the first layer reads the input, which no class owns
    [(weight, cross)] = wiring.crossing
    assert weight is model[2].weight
    owner = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.equal(cross, owner[None, :] != torch.arange(3)[:, None])
    expected = float(model[2].weight.detach()[cross].abs().sum())
    assert float(wiring.penalty()) == pytest.approx(expected)
    assert wiring.masks.tolist() == [
        [True, True, False, False, False, False],
        [False, False, True, True, False, False],
        [False, False, False, False, True, True],
    ]


def test_shrink_is_soft_thresholding_of_the_crossing_weights_only() -> None:
    model = _mlp()
    wiring = BlockWiring(model, torch.randn(2, 4), shared=0.0)
    [(weight, cross)] = wiring.crossing
    before = weight.detach().clone()
    first = model[0].weight.detach().clone()
    wiring.shrink(0.1)
    after = weight.detach()
    expected = before.sign() * (before.abs() - 0.1).clamp_min(0)
    assert torch.equal(after[cross], expected[cross])
    assert torch.equal(after[~cross], before[~cross])  # a class's own weights never move
    assert torch.equal(model[0].weight.detach(), first)
    with pytest.raises(ValueError, match="step"):
        wiring.shrink(-1.0)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 12, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(12, 12, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12 * 16, 10),
    )


CASES = {
    "mlp": (lambda: testing.tiny_mlp(hidden=(32, 32), seed=0), (8, 64)),
    "cnn-flatten": (_small_cnn, (8, 1, 8, 8)),
    "resnet-residual": (lambda: testing.tiny_resnet(width=16, seed=0), (8, 1, 8, 8)),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (4, 3, 32, 32)),
}


@pytest.mark.parametrize("case", CASES)
def test_with_no_crossing_weight_each_class_mask_gives_its_logit_exactly(case: str) -> None:
    """The property the contract rests on: once the crossing weights are zero, component k
    (the units of the shared block and k's) computes logit k exactly as the whole model does,
    through flattening, residual additions and BatchNorm; before, it does not."""
    build, shape = CASES[case]
    model = build().eval()
    x = torch.randn(*shape)
    wiring = BlockWiring(model, x[:2], shared=0.05)

    def own_logits() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            full = model(x)
            copies = wiring.space.run(model, wiring.masks.float(), x)
        copies = copies.reshape(wiring.classes, len(x), -1)
        return full, copies[torch.arange(wiring.classes), :, torch.arange(wiring.classes)].T

    full, own = own_logits()
    assert wiring.leak() > 0.5 and not torch.allclose(own, full, atol=1e-4)
    wiring.shrink(float("inf"))
    full, own = own_logits()
    assert wiring.leak() == 0.0 and float(wiring.penalty()) == 0.0
    torch.testing.assert_close(own, full, rtol=0, atol=1e-5)


def test_training_with_the_proximal_step_gives_a_network_its_class_masks_reproduce() -> None:
    """Trained with ``wiring=`` the crossing weights end exactly at zero and the class masks keep
    every decision on digits the model never saw; trained plainly (same seed and steps) they
    do not. The accuracy cost stays small on digits."""
    x, y = testing.digits()
    fit, unseen = slice(0, 1200), slice(1200, None)

    def train(wiring: float) -> tuple[nn.Module, BlockWiring, float]:
        model = testing.tiny_mlp(hidden=(64, 64), seed=0)
        wired = BlockWiring(model, x[:2])
        testing.train_classifier(model, x[fit], y[fit], steps=300, wiring=wiring)
        with torch.no_grad():
            accuracy = float((model(x[unseen]).argmax(1) == y[unseen]).float().mean())
        return model, wired, accuracy

    def reproduced(model: nn.Module, wired: BlockWiring) -> float:
        with torch.no_grad():
            copies = wired.space.run(model, wired.masks.float(), x[unseen])
            decided = ClassComponents(10).predict(copies.reshape(10, -1, 10))
            return float((decided == model(x[unseen]).argmax(1)).float().mean())

    plain, plain_wiring, plain_accuracy = train(0.0)
    wired, wiring, wired_accuracy = train(1e-2)  # the shrink: train_classifier's lr
    assert wiring.leak() == 0.0
    assert reproduced(wired, wiring) == 1.0
    assert reproduced(plain, plain_wiring) < 0.9
    assert wired_accuracy > plain_accuracy - 0.05


def test_building_it_leaves_the_model_as_it_was() -> None:
    model = testing.tiny_resnet(width=16, seed=0).train()
    model.fc.weight.requires_grad_(False)
    before = testing.state_snapshot(model)
    BlockWiring(model, torch.randn(2, 1, 8, 8))
    assert testing.state_snapshot(model) == before


def test_models_it_cannot_wire_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="attention heads or FFN neurons"):
        BlockWiring(testing.tiny_bert(), testing.text_batch(["a b", "c d"]))
    with pytest.raises(ValueError, match=r"conv2 has 8 channels, fewer than its 10 classes"):
        BlockWiring(testing.tiny_resnet(width=8, seed=0), torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="shared"):
        BlockWiring(_mlp(), torch.randn(2, 4), shared=1.0)
    grouped = nn.Sequential(
        nn.Conv2d(1, 20, 3),
        nn.ReLU(),
        nn.Conv2d(20, 20, 3, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(20 * 4 * 4, 10),
    )
    with pytest.raises(ValueError, match="grouped convolution 2"):
        BlockWiring(grouped, torch.randn(2, 1, 8, 8))


def test_the_taylor_prior_is_each_units_activation_times_its_gradient_and_zero_off_its_class():
    """``taylor_scores`` against autograd on the hidden activations of the same MLP (rows of a
    batch do not interact, so one backward per class gives every sample's gradient): the
    mean over samples of ``|z_u dF_k/dz_u|``. Once the crossing weights are zero, a unit of
    another class's block scores exactly 0 for component k: the prior ranks each class's own
    units first, which LBMask's random start did not find on the wired residual CNN."""
    from saved.activity import MaskContext, taylor_scores

    model = testing.tiny_mlp(hidden=(32, 32), seed=0).eval()
    x = torch.randn(40, 64, generator=torch.Generator().manual_seed(0))
    wiring = BlockWiring(model, x[:2], shared=0.1)
    context = MaskContext(model, saved.as_inputs(x), ClassComponents(10), torch.device("cpu"))
    scores = taylor_scores(wiring.space, context)

    hidden: list[torch.Tensor] = []
    handles = [model[i].register_forward_hook(lambda m, i, out: hidden.append(out)) for i in (0, 2)]
    expected = []
    for k in range(10):
        hidden.clear()
        logits = model(x)
        grads = torch.autograd.grad(logits[:, k].sum(), hidden)
        pairs = zip(("0", "2"), hidden, grads, strict=True)
        expected.append({name: (z * g).abs().mean(0) for name, z, g in pairs})
    for handle in handles:
        handle.remove()
    order = [group.name for group, _ in wiring.space.group_slices()]
    expected = [torch.cat([row[name] for name in order]) for row in expected]
    torch.testing.assert_close(scores, torch.stack(expected).detach(), rtol=1e-4, atol=1e-6)

    wiring.shrink(float("inf"))
    scores = taylor_scores(wiring.space, context)
    assert float(scores[~wiring.masks].abs().max()) == 0.0
    assert bool((scores[wiring.masks] > 0).float().mean() > 0.5)
