"""The public face of ``saved``: the names it exports, the import paths the README teaches, the
content fingerprint, and the joint predictor the plugin's search runs on."""

from __future__ import annotations

import ast
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
    "ContinuousForm",
    "Contract",
    "ContractReport",
    "Counterexample",
    "Decomposition",
    "Holdout",
    "Inputs",
    "LBMaskConfig",
    "LittleDataWarning",
    "ModularityPenalty",
    "BlockWiring",
    "SameSamplesWarning",
    "SamplePlan",
    "SampleSplit",
    "as_inputs",
    "assess",
    "check",
    "continuous_form",
    "decompose",
    "evaluate",
    "fingerprint",
    "holdout",
    "html_page",
    "load",
    "logit_margins",
    "mine_boundary",
    "modularity_penalty",
    "plan_samples",
    "predict_logits",
    "render_report",
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


def _saved_modules() -> dict[str, Path]:
    """Every module of the engine by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted((ROOT / "saved").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The engine modules ``module`` imports anywhere in its text (top level, in functions,
    under TYPE_CHECKING): every arrow counts, lazy or not."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            submodules = {f"{source}.{alias.name}" for alias in node.names} & set(known)
            targets.update(submodules)
            if node.module or not submodules:  # "from . import x" imports x, not the package
                targets.add(source)
    return {t for t in targets if t in known and t != module}


def test_no_import_circle_and_no_upward_import_in_the_engine() -> None:
    known = _saved_modules()
    graph = {module: _imported(module, path, known) for module, path in known.items()}
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts if m.startswith(t + "."))
    assert upward == []
    # a depth-first search: a module met again while it is still open closes a circle
    state: dict[str, str] = {}
    circles: list[str] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_report_model_does_not_import_torch() -> None:
    """The report and the contract's value type read without torch: no module they reach
    imports it (checked on the import graph, since ``saved/__init__`` itself imports torch)."""
    known = _saved_modules()
    reached, todo = set(), ["saved.report"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(_imported(module, known[module], known))
    assert "saved.bounds" in reached
    heavy = sorted(
        module
        for module in reached
        for node in ast.walk(ast.parse(known[module].read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(
            (name or "").split(".")[0] in ("torch", "numpy")
            for name in (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            )
        )
    )
    assert heavy == []


def test_no_module_only_re_exports() -> None:
    """Every engine module defines something: no shim that only re-exports moved names."""
    shims = []
    for module, path in _saved_modules().items():
        if path.name == "__init__.py":
            continue
        body = ast.parse(path.read_text()).body
        does = [
            node
            for node in body
            if not isinstance(node, (ast.Import, ast.ImportFrom))
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
            and not (isinstance(node, ast.Assign) and "__all__" in ast.unparse(node))
        ]
        if not does:
            shims.append(module)
    assert shims == []


def test_the_plugin_imports_only_public_names() -> None:
    """pytest_decompose reaches the engine through ``saved.__all__`` only: every
    ``from saved... import`` and every ``saved.<name>`` it uses."""
    outside = []
    for path in sorted((ROOT / "pytest_decompose").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("saved"):
                for alias in node.names:
                    if node.module != "saved" or (
                        alias.name not in saved.__all__ and alias.name != "__version__"
                    ):
                        outside.append(f"{path.name}:{node.lineno} {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                outside += [
                    f"{path.name}:{node.lineno} {a.name}"
                    for a in node.names
                    if a.name.startswith("saved.")
                ]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "saved"
                and node.attr not in saved.__all__
            ):
                outside.append(f"{path.name}:{node.lineno} saved.{node.attr}")
    assert outside == []


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
