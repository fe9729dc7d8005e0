"""Cache faults: a broken, foreign or half-written entry is recomputed with a warning - never a
crash, never a verdict from the broken file, never a partial entry left behind, nothing
unpickled."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import saved
from pytest_decompose.engine import CacheStats, Engine
from saved.masking.lbmask import LBMaskConfig, MaskTrainer

FAST = LBMaskConfig(steps=5)


@pytest.fixture
def setup(digits_mlp, digits_xy, tmp_path):
    x = digits_xy[0][:300]
    engine = Engine(cache_dir=tmp_path / "cache")
    first = engine.decompose(digits_mlp, x, lbmask=FAST)
    (entry,) = (tmp_path / "cache").glob("*.safetensors")
    return digits_mlp, x, first, entry


def _again(model, x, entry: Path, match: str) -> tuple[saved.Decomposition, Engine]:
    """A new session over the same cache: must warn, recompute and rewrite a good entry."""
    engine = Engine(cache_dir=entry.parent)
    with pytest.warns(UserWarning, match=match):
        decomposition = engine.decompose(model, x, lbmask=FAST)
    assert (engine.stats.unreadable, engine.stats.trained, engine.stats.hits) == (1, 1, 0)
    assert saved.load(entry, model).masks.equal(decomposition.masks)  # rewritten, readable
    _no_leftovers(entry.parent)
    return decomposition, engine


def _no_leftovers(folder: Path) -> None:
    names = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))
    assert all(n.endswith(".safetensors") and not n.startswith(".") for n in names), names


def _rewrite(entry: Path, *, meta=None, tensors=None) -> None:
    with safe_open(str(entry), framework="pt") as handle:
        stored = json.loads(handle.metadata()["saved"])
    save_file(
        tensors if tensors is not None else load_file(str(entry)),
        str(entry),
        metadata={"saved": json.dumps(meta(stored) if meta else stored)},
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cached_entry_does_not_hide_an_unavailable_device(setup) -> None:
    """The call's device enters the key: asking for CUDA where there is none is an error,
    even when the cache holds this model's decomposition on the CPU."""
    model, x, _, entry = setup
    engine = Engine(cache_dir=entry.parent)
    with pytest.raises(ValueError, match="CUDA is not available"):
        engine.decompose(model, x, lbmask=FAST, device="cuda")
    assert engine.stats == CacheStats()  # refused before the cache was read
    assert engine.decompose(model, x, lbmask=FAST, device="cpu") is not None
    assert (engine.stats.hits, engine.stats.trained) == (1, 0)


def test_truncated_entry(setup) -> None:
    model, x, first, entry = setup
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    again, _ = _again(model, x, entry, "not a readable saved decomposition")
    assert torch.equal(again.masks, first.masks)  # same seed: the same answer, recomputed


def test_empty_entry(setup) -> None:
    model, x, first, entry = setup
    entry.write_bytes(b"")
    again, _ = _again(model, x, entry, "not a readable saved decomposition")
    assert torch.equal(again.masks, first.masks)


def test_corrupted_bytes(setup) -> None:
    model, x, first, entry = setup
    data = bytearray(entry.read_bytes())
    for i in range(len(data) - 200, len(data) - 100):  # inside the tensor payload
        data[i] ^= 0xFF
    entry.write_bytes(bytes(data))
    again, _ = _again(model, x, entry, "do not match their recorded sha256|not a readable")
    assert torch.equal(again.masks, first.masks)


def test_well_formed_file_with_other_masks_is_not_trusted(setup) -> None:
    """The dangerous case: a valid safetensors file whose masks differ from what was computed
    (an edit, a bit flip in the mask region). Loading it would give another verdict."""
    model, x, first, entry = setup
    tensors = load_file(str(entry))
    tensors["masks"] = 1 - tensors["masks"]
    _rewrite(entry, tensors=tensors)
    again, _ = _again(model, x, entry, "do not match their recorded sha256")
    assert torch.equal(again.masks, first.masks)


def test_entry_from_another_format_version(setup) -> None:
    model, x, first, entry = setup
    _rewrite(entry, meta=lambda m: {**m, "format": 1})
    again, _ = _again(model, x, entry, "format 1 is not 2")
    assert torch.equal(again.masks, first.masks)


def test_entry_with_incomplete_metadata(setup) -> None:
    model, x, _, entry = setup
    _rewrite(entry, meta=lambda m: {k: v for k, v in m.items() if k != "groups"})
    _again(model, x, entry, "incomplete metadata")


class _Trap:
    """Unpickling this would create a file: proof that nothing is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_in_the_cache_is_never_unpickled(setup, tmp_path) -> None:
    model, x, _, entry = setup
    marker = tmp_path / "unpickled"
    entry.write_bytes(pickle.dumps(_Trap(marker)))
    _again(model, x, entry, "not a readable saved decomposition")
    assert not marker.exists()


def test_interrupt_during_training_leaves_no_entry(digits_mlp, digits_xy, tmp_path, monkeypatch):
    x = digits_xy[0][:300]
    cache = tmp_path / "cache"
    original, calls = MaskTrainer.step, []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(MaskTrainer, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):  # the user's Ctrl-C is not swallowed
        Engine(cache_dir=cache).decompose(digits_mlp, x, lbmask=FAST)
    assert not list(cache.glob("*.safetensors"))
    _no_leftovers(cache)
    monkeypatch.setattr(MaskTrainer, "step", original)
    engine = Engine(cache_dir=cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing broken to warn about
        engine.decompose(digits_mlp, x, lbmask=FAST)
    assert (engine.stats.trained, engine.stats.unreadable) == (1, 0)


def test_interrupt_while_writing_leaves_no_partial_file(
    digits_mlp, digits_xy, tmp_path, monkeypatch
) -> None:
    import saved.decomposition as module

    x = digits_xy[0][:300]
    cache = tmp_path / "cache"

    def interrupted_replace(source, target):
        assert Path(source).stat().st_size > 0  # the full file was written aside
        raise KeyboardInterrupt

    monkeypatch.setattr(module.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        Engine(cache_dir=cache).decompose(digits_mlp, x, lbmask=FAST)
    monkeypatch.undo()
    assert not list(cache.iterdir()) or all(p.name.endswith(".lock") for p in cache.iterdir())


WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from saved import testing
    from saved.masking.lbmask import LBMaskConfig
    from saved._hashing import tensor_digest
    from pytest_decompose.engine import CacheStats, Engine

    cache, go = Path(sys.argv[1]), Path(sys.argv[2])
    x, y = testing.digits()
    model = testing.train_classifier(testing.tiny_mlp(seed=0), x, y, steps=100)
    while not go.exists():
        time.sleep(0.01)
    engine = Engine(cache_dir=cache)
    decomposition = engine.decompose(model, x[:300], lbmask=LBMaskConfig(steps=40))
    print(json.dumps({"trained": engine.stats.trained, "hits": engine.stats.hits,
                      "masks": tensor_digest(decomposition.masks)}))
    """
)


def test_two_processes_writing_one_key(tmp_path) -> None:
    """Started together on the same model and data: one computes, the other waits on the
    key's lock and reads the finished entry."""
    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(cache), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    go.touch()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["trained"] for r in results) == [0, 1]
    assert sorted(r["hits"] for r in results) == [0, 1]
    assert results[0]["masks"] == results[1]["masks"]
    assert len(list(cache.glob("*.safetensors"))) == 1
    _no_leftovers(cache)


def test_a_cache_hit_runs_no_sample_through_the_model_again(digits_mlp, digits_xy, tmp_path):
    """Through ``saved.check`` with the session's cache: the split's pass is the only one, and
    on a hit nothing more runs the reference model (the components still run to certify)."""
    x = digits_xy[0][:300]
    counts = []
    for _ in range(2):
        engine = Engine(cache_dir=tmp_path / "cache")
        counter = saved.testing.ReferenceCounter(digits_mlp, x)
        try:
            saved.check(digits_mlp, x, decomposer=engine.decompose, lbmask=FAST, progress=False)
        finally:
            counter.handle.remove()
        counts.append((counter.counts.tolist(), engine.stats.trained, engine.stats.hits))
    assert counts == [([1] * len(x), 1, 0), ([1] * len(x), 0, 1)]


def test_a_hit_records_the_callers_contract_and_leaves_the_entry_as_it_was(
    digits_mlp, digits_xy, tmp_path
):
    """One entry serves every contract at a fixed sparsity; a hit hands back a copy that
    records the caller's thresholds (what ``saved.evaluate`` applies by default)."""
    x = digits_xy[0][:300]
    cache = tmp_path / "cache"
    Engine(cache_dir=cache).decompose(digits_mlp, x, lbmask=FAST, contract=saved.Contract())
    (entry,) = cache.glob("*.safetensors")
    engine = Engine(cache_dir=cache)
    strict = saved.Contract(eps=0.05)
    hit = engine.decompose(digits_mlp, x, lbmask=FAST, contract=strict)
    assert (engine.stats.hits, engine.stats.trained) == (1, 0)
    assert hit.metadata["contract"] == strict.to_dict()
    assert saved.load(entry, digits_mlp).metadata["contract"] == saved.Contract().to_dict()
