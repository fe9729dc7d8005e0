"""saved/lbmask.py: learned masks on a real trained model — frozen weights, exact sizes, and
a boundary disagreement below random and magnitude masks of the same size."""

from __future__ import annotations

import pytest
import torch

from saved import ClassComponents, as_inputs, predict_logits, testing
from saved.baselines import magnitude, random
from saved.boundary import calibration_set, mine_boundary
from saved.contract import boundary_subset, disagreement, logit_margins
from saved.decomposition import Decomposition
from saved.lbmask import LBMaskConfig, initial_logits, learn_masks
from saved.units import UnitSpace


@pytest.fixture(scope="module")
def wide_mlp(digits_xy):
    """A 64-128-128-10 MLP trained on the real digits (about a second)."""
    x, y = digits_xy
    return testing.train_classifier(testing.tiny_mlp(hidden=(128, 128), seed=0), x, y, steps=300)


@pytest.fixture(scope="module")
def digits_setup(wide_mlp, digits_xy):
    x, _ = digits_xy
    data = as_inputs(x)
    calibration = calibration_set(data, mine_boundary(wide_mlp, data), wide_mlp)
    space = UnitSpace.of(wide_mlp, x[:2])
    return data, calibration, space


def _boundary_disagreement(model, space, masks, data) -> float:
    reference = predict_logits(model, data)
    boundary = boundary_subset(logit_margins(reference), q=0.2)
    decomposed = Decomposition(model, space, ClassComponents(10), masks).predict(data)
    return disagreement(reference.argmax(1)[boundary], decomposed[boundary])


def test_lbmask_beats_random_and_magnitude_masks(wide_mlp, digits_setup) -> None:
    data, calibration, space = digits_setup
    before = testing.state_snapshot(wide_mlp)
    logits = learn_masks(wide_mlp, calibration, ClassComponents(10), space, LBMaskConfig())
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
    learn_masks(model, as_inputs(x[:100]), ClassComponents(10), space, config)
    assert all(p.grad is None for p in model.parameters())
    assert testing.state_snapshot(model) == before


def test_chunked_training_equals_joint_training(wide_mlp, digits_setup) -> None:
    _, calibration, space = digits_setup
    config = LBMaskConfig(steps=20)
    joint = learn_masks(wide_mlp, calibration, ClassComponents(10), space, config, seed=5)
    chunked = learn_masks(
        wide_mlp,
        calibration,
        ClassComponents(10),
        space,
        LBMaskConfig(steps=20, component_chunk=3),
        seed=5,
    )
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
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LBMaskConfig(**kwargs)
