"""The public face of ``saved``: the names it exports, the import paths the README teaches, the
content fingerprint, and the joint predictor the plugin's search runs on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

import saved
from saved import ClassComponents, Decomposition, as_inputs, predict_logits, testing
from saved.baselines import random
from saved.masking.units import UnitSpace
from saved.masking.weights import WeightSpace

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [
    "METHODS",
    "BoundaryConfig",
    "ClassComponents",
    "Contract",
    "ContractReport",
    "Decomposition",
    "Holdout",
    "Inputs",
    "LBMaskConfig",
    "LittleDataWarning",
    "ModularityPenalty",
    "SameSamplesWarning",
    "SamplePlan",
    "SampleSplit",
    "as_inputs",
    "assess",
    "check",
    "decompose",
    "evaluate",
    "fingerprint",
    "holdout",
    "load",
    "modularity_penalty",
    "plan_samples",
    "predict_logits",
    "resolve_device",
]


def test_the_public_names_are_pinned() -> None:
    assert sorted(saved.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(saved, name) is not None


def test_the_import_paths_the_readme_teaches_keep_working() -> None:
    readme = (ROOT / "README.md").read_text()
    taught = re.findall(r"^from (saved[\w.]*) import ([\w, ]+)$", readme, re.M)
    assert len(taught) >= 3
    namespace: dict[str, object] = {}
    for module, names in taught:
        exec(f"from {module} import {names}", namespace)  # the README's own import lines
        for name in names.split(","):
            assert name.strip() in namespace


def test_the_old_adapters_module_re_exports_the_moved_names() -> None:
    from saved import _runtime, adapters, embedding, inputs

    for name in adapters.__all__:
        homes = [m for m in (inputs, _runtime, embedding) if hasattr(m, name)]
        assert homes and getattr(adapters, name) is getattr(homes[0], name)


def test_the_old_phase_3_modules_re_export_the_moved_names() -> None:
    import importlib

    for name in ("units", "weights", "lbmask", "objectives", "adaptive"):
        old = importlib.import_module(f"saved.{name}")
        new = importlib.import_module(f"saved.masking.{name}")
        assert old.__all__
        for item in old.__all__:
            assert getattr(old, item) is getattr(new, item)
    assert set(importlib.import_module("saved.masking.units").__all__) <= set(
        importlib.import_module("saved.units").__all__
    )


def test_the_plugin_imports_only_public_names() -> None:
    private = re.compile(r"saved\._|from saved\.(adapters|_hashing)")
    found = [
        f"{path.name}:{number}"
        for path in sorted((ROOT / "pytest_decompose").glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert found == []


# --------------------------------------------------------------------------- fingerprint


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_a_streamed_loader_has_the_fingerprint_of_the_same_samples_in_memory(
    n: int, batch_size: int, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=generator)
    y = torch.randint(0, 4, (n,), generator=generator)
    in_memory = saved.fingerprint(TensorDataset(x, y))
    streamed = saved.fingerprint(DataLoader(TensorDataset(x, y), batch_size=batch_size))
    assert streamed == in_memory
    other = y.clone()
    other[int(torch.randint(0, n, (1,), generator=generator))] += 1
    assert saved.fingerprint(TensorDataset(x, other)) != in_memory  # labels count
    assert saved.fingerprint(TensorDataset(x)) != in_memory
    moved = x.clone()
    moved[0, 0] = torch.nextafter(moved[0, 0], torch.tensor(float("inf")))
    assert saved.fingerprint(TensorDataset(moved, y)) != in_memory  # one ulp of one value


def test_a_model_fingerprint_follows_its_weights_not_its_object() -> None:
    model = testing.tiny_mlp(hidden=(8,), seed=0)
    twin = testing.tiny_mlp(hidden=(8,), seed=0)
    assert saved.fingerprint(model) == saved.fingerprint(twin)
    with torch.no_grad():
        next(twin.parameters())[0, 0] += 1e-3
    assert saved.fingerprint(model) != saved.fingerprint(twin)
    with pytest.raises(TypeError, match="labels go with data"):
        saved.fingerprint(model, torch.zeros(3))


def test_a_tensor_fingerprint_sees_dtype_and_shape() -> None:
    x = torch.arange(6, dtype=torch.float32)
    assert saved.fingerprint(x) == saved.fingerprint(x.clone())
    assert saved.fingerprint(x) != saved.fingerprint(x.view(2, 3))
    assert saved.fingerprint(x) != saved.fingerprint(x.double())


# --------------------------------------------------------------------------- joint predictor

X, Y = testing.digits()
MODEL = testing.train_classifier(testing.tiny_mlp(hidden=(32,), seed=0), X, Y, steps=100)


@pytest.mark.parametrize("space_kind", ["units", "weights"])
def test_the_joint_predictor_agrees_with_the_two_separate_predictions(space_kind: str) -> None:
    space = UnitSpace.of(MODEL, X[:2]) if space_kind == "units" else WeightSpace.of(MODEL, X[:2])
    masks = random.masks(space, 10, 0.5, seed=0)
    decomposition = Decomposition(MODEL, space, ClassComponents(10), masks, "random")
    MODEL.train()
    before = saved.fingerprint(MODEL)
    points = X[:37] + 0.05 * torch.randn(37, X.shape[1], generator=torch.Generator().manual_seed(1))
    with decomposition.joint_predictor() as joint:
        assert not MODEL.training and not torch.is_grad_enabled()
        logits, decomposed = joint(points)
    assert MODEL.training  # restored after the block
    assert saved.fingerprint(MODEL) == before
    reference = predict_logits(MODEL, as_inputs(points))
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(decomposed, decomposition.predict(points))
    MODEL.eval()
