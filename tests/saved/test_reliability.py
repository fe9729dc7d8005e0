"""The reliability catalogue (docs/RELIABILITY.md): bad and awkward inputs through every public
entry point, each a clear error or a documented behaviour, and the model's state unchanged
after every call, error paths included."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import saved
from pytest_decompose import assert_decomposable
from pytest_decompose.strategies import boundary_inputs, find_counterexample
from saved import cli, testing
from saved.contract import hoeffding_radius
from saved.masking.lbmask import LBMaskConfig

FAST = LBMaskConfig(steps=3)
N = 300  # samples per call: enough for every code path, quick on 2 cores


class Switchable(nn.Module):
    """A real trained classifier with BatchNorm and dropout whose output can be broken on
    purpose after it was decomposed (``fault``), to reach the evaluation error paths."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 64),
            nn.ReLU(), nn.Linear(64, num_classes),
        )  # fmt: skip
        self.fault = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if self.fault == "1-d":
            return logits.sum(1)
        if self.fault == "3-d":
            return logits[:, :, None]
        if self.fault == "nan":
            return logits * torch.nan
        if self.fault == "rows":
            return logits[:-1]
        return logits


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = testing.digits()
    return x[:N], y[:N]


def awkward(digits_xy: tuple[torch.Tensor, torch.Tensor], num_classes: int = 10) -> Switchable:
    """Trained, then left in train mode with part of it frozen: the state users hand us."""
    x, y = digits_xy
    model = testing.train_classifier(Switchable(num_classes), x, y % num_classes, steps=150)
    model.train()
    model.net[0].weight.requires_grad_(False)
    model.net[4].eval()  # a module in eval inside a training model
    return model


@pytest.fixture(scope="module")
def model(digits_xy) -> Switchable:
    return awkward(digits_xy)


@pytest.fixture(scope="module")
def decomposition(model, data) -> saved.Decomposition:
    x, y = data
    return saved.decompose(model, x, labels=y, lbmask=FAST, progress=False)


# --------------------------------------------------------------------------- entry points


def _cli(model: nn.Module, x: Any, y: Any, **kwargs: Any) -> int:
    """``saved check module:function`` in-process; the function returns (model, x, y)."""
    module = types.ModuleType("reliability_target")
    module.target = lambda: (model, x, y)  # type: ignore[attr-defined]
    sys.modules["reliability_target"] = module
    try:
        code = cli.main(["check", "reliability_target:target", "--quiet", *kwargs.get("argv", [])])
    finally:
        del sys.modules["reliability_target"]
    if code == 2:
        raise ValueError("exit status 2")  # the one-line message is checked separately
    return code


ENTRY_POINTS: dict[str, Callable[..., Any]] = {
    "decompose": lambda m, x, y, **k: saved.decompose(
        m, x, labels=y, lbmask=FAST, progress=False, **k
    ),
    "evaluate": lambda m, x, y, decomposition, **k: saved.evaluate(
        m, decomposition, x, labels=y, **k
    ),
    "assert_decomposable": lambda m, x, y, **k: assert_decomposable(
        m, x, labels=y, lbmask=FAST, progress=False, **k
    ),
    "boundary_inputs": lambda m, x, y, **k: boundary_inputs(m, x, **k),
    "find_counterexample": lambda m, x, y, decomposition, **k: find_counterexample(
        m, decomposition, x, max_examples=2, **k
    ),
    "saved check": lambda m, x, y, **k: _cli(m, x, y, **k),
}
NEEDS_DECOMPOSITION = {"evaluate", "find_counterexample"}
TAKES_LABELS = {"decompose", "evaluate", "assert_decomposable", "saved check"}


def _call(entry: str, model: nn.Module, x: Any, y: Any, decomposition: Any, **kwargs: Any) -> Any:
    if entry in NEEDS_DECOMPOSITION:
        return ENTRY_POINTS[entry](model, x, y, decomposition, **kwargs)
    return ENTRY_POINTS[entry](model, x, y, **kwargs)


# --------------------------------------------------------------------------- bad data


def _nan(x: torch.Tensor, y: torch.Tensor) -> tuple[Any, Any]:
    bad = x.clone()
    bad[3, 5] = torch.nan
    return bad, y


def _inf(x: torch.Tensor, y: torch.Tensor) -> tuple[Any, Any]:
    bad = x.clone()
    bad[7, 0] = -torch.inf
    return bad, y


def _nan_in_loader(x: torch.Tensor, y: torch.Tensor) -> tuple[Any, Any]:
    bad = x.clone()
    bad[-1, -1] = torch.nan  # in the last batch: found while streaming
    return DataLoader(TensorDataset(bad, y), batch_size=64), None


BAD_DATA: dict[str, tuple[Callable[..., tuple[Any, Any]], str]] = {
    "nan": (_nan, r"input 'x' holds 1 non-finite values \(NaN/Inf\)"),
    "inf": (_inf, r"input 'x' holds 1 non-finite values \(NaN/Inf\)"),
    "nan-in-dataloader": (_nan_in_loader, r"holds 1 non-finite values"),
    "empty-tensor": (lambda x, y: (x[:0], None), r"empty data \(0 samples\)"),
    "empty-dataloader": (
        lambda x, y: (DataLoader(TensorDataset(x[:0], y[:0]), batch_size=8), None),
        r"yielded no batches \(empty data\)",
    ),
    "labels-out-of-range": (lambda x, y: (x, y + 10), r"class indices outside \[0, 10\)"),
    "labels-wrong-length": (lambda x, y: (x, y[:-5]), r"labels: 295 labels for 300 samples"),
    "labels-fractional": (lambda x, y: (x, y + 0.5), r"non-integral floats"),
    "integer-features": (
        lambda x, y: ((x * 16).long(), y),
        # strategies perturb the inputs and say first that integers cannot be perturbed
        r"calling it on the data \(x: int64 \[\d+, 64\]\) failed|no continuous input to perturb",
    ),
    "wrong-feature-count": (
        lambda x, y: (x[:, :60], y),
        r"calling it on the data \(x: float32 \[\d+, 60\]\) failed",
    ),
    "meta-device-data": (lambda x, y: (x.to("meta"), y), r"meta device holds no values"),
    "not-a-tensor": (lambda x, y: (x.tolist(), y), r"data: expected a tensor, TensorDataset"),
}


BAD_DATA_CALLS = [
    (case, entry)
    for case in BAD_DATA
    for entry in ENTRY_POINTS
    if entry in TAKES_LABELS or not case.startswith("labels")  # strategies take no labels
]


@pytest.mark.parametrize(("case", "entry"), BAD_DATA_CALLS)
def test_bad_data_gives_a_clear_error_and_changes_nothing(
    entry: str, case: str, model, data, decomposition, capsys
) -> None:
    make, message = BAD_DATA[case]
    x, y = make(*data)
    before = testing.state_snapshot(model)
    if entry == "saved check":
        with pytest.raises(ValueError, match="exit status 2"):
            _call(entry, model, x, y, decomposition)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("saved: error: ")
        assert _matches(message, err[0]), err[0]
    else:
        with pytest.raises((ValueError, TypeError), match=message):
            _call(entry, model, x, y, decomposition)
    assert testing.state_snapshot(model) == before


def _matches(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


# --------------------------------------------------------------------------- bad models


MODEL_FAULTS = {
    "1-d-logits": ("1-d", r"expected logits of shape \[batch, classes\], got \(\d+,\)"),
    "3-d-logits": ("3-d", r"expected logits of shape \[batch, classes\], got \(\d+, 10, 1\)"),
    "nan-logits": ("nan", r"non-finite logits \(NaN/Inf\) for \d+ samples"),
    "missing-rows": ("rows", r"\d+ rows of logits for a batch of \d+"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("case", list(MODEL_FAULTS))
def test_broken_model_output_gives_a_clear_error_and_changes_nothing(
    entry: str, case: str, model, data, decomposition, capsys
) -> None:
    fault, message = MODEL_FAULTS[case]
    x, y = data
    before = testing.state_snapshot(model)
    model.fault = fault
    try:
        with pytest.raises(
            (ValueError, TypeError), match="exit status 2" if entry == "saved check" else message
        ):
            _call(entry, model, x, y, decomposition)
    finally:
        model.fault = ""
    if entry == "saved check":
        assert _matches(message, capsys.readouterr().err)
    assert testing.state_snapshot(model) == before


def test_single_class_model_and_meta_model_are_refused(data) -> None:
    x, _ = data
    one = nn.Linear(64, 1)
    with pytest.raises(ValueError, match="num_classes: expected an integer >= 2, got 1"):
        saved.decompose(one, x, progress=False)
    meta = nn.Linear(64, 10, device="meta")
    with pytest.raises(ValueError, match="parameters are on the meta device"):
        saved.decompose(meta, x, progress=False)


def test_unavailable_device_is_refused_before_any_work(model, data) -> None:
    x, y = data
    before = testing.state_snapshot(model)
    for entry in ("decompose", "assert_decomposable"):
        with pytest.raises(ValueError, match="CUDA is not available"):
            _call(entry, model, x, y, None, device="cuda")
    assert testing.state_snapshot(model) == before


# --------------------------------------------------------------------------- documented behaviours


# a contract every decomposition meets, so the success path runs to its end
LENIENT: dict[str, dict[str, Any]] = {
    "assert_decomposable": {"eps": 1.0, "gamma": 1.0, "eta": 0.0},
    "saved check": {"argv": ["--eps", "1", "--gamma", "1", "--eta", "0"]},
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_entry_point_leaves_a_training_model_as_it_was(
    entry: str, model, data, decomposition
) -> None:
    """Success paths: train mode, dropout, BatchNorm statistics, a frozen layer, a submodule in
    eval - all as they were, and no gradients left behind."""
    x, y = data
    before = testing.state_snapshot(model)
    _call(entry, model, x, y, decomposition, **LENIENT.get(entry, {}))
    assert testing.state_snapshot(model) == before
    assert model.training and not model.net[4].training


def _figures(report: saved.ContractReport) -> dict:
    """The report's JSON without the one wall-clock figure (mask learning's seconds), which
    differs between two identical runs on a busy machine."""
    figures = report.to_dict()
    if figures.get("training"):
        figures["training"] = {k: v for k, v in figures["training"].items() if k != "seconds"}
    return figures


def test_training_mode_model_is_checked_as_in_eval(model, data) -> None:
    """We switch to eval (BatchNorm running statistics, no dropout) and restore: the report of
    a model handed over in train mode equals the report of its eval-mode copy."""
    import copy

    x, y = data
    twin = copy.deepcopy(model).eval()
    first = saved.check(model, x, labels=y, lbmask=FAST, progress=False)
    second = saved.check(twin, x, labels=y, lbmask=FAST, progress=False)
    assert _figures(first) == _figures(second)


def test_float64_and_float16_inputs_are_cast_to_the_model_dtype(model, data, decomposition) -> None:
    x, y = data
    reference = saved.evaluate(model, decomposition, x, labels=y).to_dict()
    # digits are multiples of 1/16: float64 holds the same values exactly
    assert saved.evaluate(model, decomposition, x.double(), labels=y).to_dict() == reference
    rounded = saved.evaluate(model, decomposition, x.half().float(), labels=y).to_dict()
    assert saved.evaluate(model, decomposition, x.half(), labels=y).to_dict() == rounded


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_runs_in_its_own_precision(dtype, digits_xy, data) -> None:
    x, y = data
    model = testing.train_classifier(testing.tiny_mlp(hidden=(64, 64)), *digits_xy, steps=150)
    model = model.to(dtype)
    before = testing.state_snapshot(model)
    decomposition = saved.decompose(model, x, lbmask=FAST, progress=False)
    unmasked = saved.Decomposition(
        model, decomposition.space, decomposition.components,
        torch.ones_like(decomposition.masks), "full", 0.0, {},
    )  # fmt: skip
    reference = saved.predict_logits(model, saved.as_inputs(x)).argmax(1)
    assert torch.equal(unmasked.predict(x), reference)  # the float32 inputs were cast
    report = saved.evaluate(model, decomposition, x, labels=y)
    assert report.min_prune == pytest.approx(0.5, abs=0.02)
    assert testing.state_snapshot(model) == before
    assert next(model.parameters()).dtype == dtype


def test_fewer_samples_than_one_over_q(model, data) -> None:
    """3 samples at q = 0.2: |B| = max(1, round(0.6)) = 1, h = sqrt(ln(2/0.05)/2) = 1.358, so the
    semantic axis cannot hold; the violation says how many samples it would take."""
    x, y = data
    report = saved.check(model, x[:3], labels=y[:3], lbmask=FAST, progress=False)
    assert report.n_boundary == 1
    assert (
        report.hoeffding
        == pytest.approx(hoeffding_radius(1, 0.05))
        == pytest.approx(1.3581, abs=1e-4)
    )
    assert not report.semantic_holds
    with pytest.raises(AssertionError, match=r"hoeffding: \|B\| >= 185, about 923 evaluated"):
        assert_decomposable(
            model, x[:3], labels=y[:3], lbmask=FAST, progress=False, bound="hoeffding"
        )


def test_a_class_the_data_never_reaches(model, data) -> None:
    x, y = data
    predicted = saved.predict_logits(model, saved.as_inputs(x)).argmax(1)
    keep = predicted != 3
    decomposition = saved.decompose(model, x[keep], lbmask=FAST, progress=False)
    report = saved.evaluate(model, decomposition, x[keep], labels=y[keep])
    row = report.per_class[3]
    assert row.n_boundary == 0 and row.disagreement is None  # no rate rather than 0
    assert decomposition.masks.shape[0] == 10
    assert torch.isfinite(torch.tensor(report.sizes)).all()
    assert report.min_prune == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("num_classes", [2, 100])
def test_two_and_a_hundred_classes(num_classes: int, digits_xy, data) -> None:
    x, y = data
    model = awkward(digits_xy, num_classes=num_classes)
    before = testing.state_snapshot(model)
    decomposition = saved.decompose(model, x, lbmask=FAST, progress=False)
    report = saved.evaluate(model, decomposition, x, labels=y % num_classes)
    assert decomposition.masks.shape[0] == num_classes
    assert len(report.per_class) == num_classes
    assert torch.tensor(report.overlap).shape == (num_classes, num_classes)
    assert report.min_prune == pytest.approx(0.5, abs=0.02)
    assert testing.state_snapshot(model) == before


# --------------------------------------------------------------------------- streaming


class CountingSet(torch.utils.data.Dataset):
    """Digits served one at a time, counting reads: shows what a loader was asked for."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, repeat: int = 1) -> None:
        self.x, self.y, self.repeat, self.reads = x, y, repeat, 0

    def __len__(self) -> int:
        return len(self.x) * self.repeat

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.reads += 1
        return self.x[i % len(self.x)], self.y[i % len(self.x)]


def test_iter_inputs_reads_a_loader_lazily_and_completely(data) -> None:
    from saved.inputs import as_inputs, iter_inputs

    x, y = data
    source = CountingSet(x, y)
    chunks = iter_inputs(DataLoader(source, batch_size=64), chunk_size=128)
    first = next(chunks)
    assert len(first) == 128 and source.reads == 128  # two batches, nothing more
    rest = list(chunks)
    assert [len(c) for c in rest] == [128, 44]
    whole = as_inputs(DataLoader(TensorDataset(x, y), batch_size=64))
    assert torch.equal(
        torch.cat([first.fields["x"], *[c.fields["x"] for c in rest]]), whole.fields["x"]
    )
    assert torch.equal(torch.cat([first.labels, *[c.labels for c in rest]]), y)


def test_evaluate_on_a_loader_equals_evaluate_on_the_tensor(model, data, decomposition) -> None:
    x, y = data
    on_tensor = saved.evaluate(model, decomposition, x, labels=y)
    loader = DataLoader(CountingSet(x, y), batch_size=50)
    assert (
        saved.evaluate(model, decomposition, loader, batch_size=32).to_dict() == on_tensor.to_dict()
    )
    unlabelled = DataLoader(TensorDataset(x), batch_size=50)
    assert (
        saved.evaluate(model, decomposition, unlabelled, labels=y).to_dict() == on_tensor.to_dict()
    )
    with pytest.raises(ValueError, match="labels: 299 labels for at least 300 samples"):
        saved.evaluate(model, decomposition, unlabelled, labels=y[:-1])


@settings(max_examples=25)
@given(
    n=st.integers(1, 120),
    max_samples=st.integers(1, 60),
    batch=st.integers(1, 40),
    seed=st.integers(0, 3),
)
def test_sample_inputs_is_a_seeded_uniform_subset(
    n: int, max_samples: int, batch: int, seed: int
) -> None:
    from saved.inputs import sample_inputs

    x = torch.arange(n, dtype=torch.float32)[:, None]
    loader = DataLoader(TensorDataset(x), batch_size=batch)
    picked = sample_inputs(loader, max_samples=max_samples, seed=seed).fields["x"][:, 0]
    assert len(picked) == min(n, max_samples)
    assert torch.equal(picked, picked.unique())  # distinct, in data order
    again = sample_inputs(
        DataLoader(TensorDataset(x), batch_size=max(1, batch // 2)),
        max_samples=max_samples,
        seed=seed,
    )
    assert torch.equal(again.fields["x"][:, 0], picked)  # the batching does not matter


def test_sample_inputs_is_uniform() -> None:
    """Every sample is equally likely to be kept: over 400 seeds, each of 20 samples is kept
    about 400 * 5/20 = 100 times (binomial sd 8.7; the bounds are 5 sd)."""
    from saved.inputs import sample_inputs

    x = torch.arange(20, dtype=torch.float32)[:, None]
    counts = torch.zeros(20)
    for seed in range(400):
        kept = sample_inputs(DataLoader(TensorDataset(x), batch_size=3), max_samples=5, seed=seed)
        counts[kept.fields["x"][:, 0].long()] += 1
    assert counts.sum() == 2000
    assert counts.min() > 100 - 44 and counts.max() < 100 + 44


def test_decompose_keeps_at_most_max_samples(model, data) -> None:
    x, y = data
    loader = DataLoader(CountingSet(x, y, repeat=4), batch_size=64)
    decomposition = saved.decompose(model, loader, lbmask=FAST, progress=False, max_samples=100)
    sample = saved.inputs.sample_inputs(
        DataLoader(CountingSet(x, y, repeat=4), batch_size=64), max_samples=100
    )
    assert len(sample) == 100
    expected = saved.decompose(model, sample, lbmask=FAST, progress=False, max_samples=100)
    assert torch.equal(decomposition.masks, expected.masks)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_masks_and_report(model, data) -> None:
    x, y = data
    runs = [
        saved.decompose(model, x, labels=y, lbmask=FAST, seed=s, progress=False) for s in (5, 5, 6)
    ]
    assert torch.equal(runs[0].masks, runs[1].masks)
    assert not torch.equal(runs[0].masks, runs[2].masks)
    reports = [_figures(saved.evaluate(model, d, x, labels=y)) for d in runs[:2]]
    assert reports[0] == reports[1]


@settings(max_examples=30)
@given(sizes=st.lists(st.integers(1, 1500), min_size=1, max_size=8), width=st.integers(0, 3))
def test_growing_rows_equal_concatenation(sizes: list[int], width: int) -> None:
    """evaluate's result buffer (doubling, so the heap is not pinned by small tensors) holds
    exactly what ``torch.cat`` of the chunks would."""
    from saved._rows import GrowingRows

    shape = (width,) if width else ()
    parts = [torch.randn(n, *shape) for n in sizes]
    rows = GrowingRows()
    for part in parts:
        rows.add(part)
    assert len(rows) == sum(sizes)
    assert torch.equal(rows.all(), torch.cat(parts))
