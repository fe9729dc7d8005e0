"""The rows of ``benchmarks/paper_tables.py``: one model, one method, one protocol, computed
or read back from the row cache and the committed store (``benchmarks/rows/``).

Kept apart from the tables' rendering on purpose: a row's key digests ``saved/``, this file
and ``benchmarks/models.py`` -- the code that computes a row -- and not the script that lays
the rows out, so a fix to a table's wording does not orphan hours of committed rows of a
regeneration spread over sittings (docs/DECISIONS.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from generated import code_digest, commit, log
from models import (
    RECIPES,
    _atomic_write,
    cache_dir,
    head,
    is_cached,
    load_split,
    recipe_key,
    smoke,
    trained,
)
from torch import nn

import saved
from saved import BoundaryConfig, Contract, LBMaskConfig, SampleSplit
from saved.boundary import mine_boundary

ROOT = Path(__file__).resolve().parents[1]
#: Rows of full-size runs, committed: a regeneration that takes longer than one sitting goes on
#: where it stopped on another machine (keyed like the row cache, by the code's digest, the
#: model's weights and the settings; see docs/DECISIONS.md), with each model's record
STORE = ROOT / "benchmarks" / "rows"


@dataclass
class Settings:
    calib: int = 512  # training samples given to decompose (before boundary points)
    test_text: int | None = None  # None: the whole test split
    test_vision: int = 2000
    steps: int | None = None  # None: the library's default (automatic stopping)
    batch: int | None = None  # None: the library's default
    smoke: bool = False
    contract: Contract = field(default_factory=Contract)

    @classmethod
    def tiny(cls) -> Settings:
        return cls(calib=16, test_text=48, test_vision=48, steps=2, batch=8, smoke=True)

    def lbmask(self) -> LBMaskConfig:
        config = LBMaskConfig()
        if self.steps is not None:
            config = replace(config, steps=self.steps)
        if self.batch is not None:
            config = replace(config, batch_size=self.batch)
        return config


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


@functools.cache
def engine_digest() -> str:
    """The digest of ``saved/``, this file and the models' script (computed once per run)."""
    return code_digest("paper_rows.py", "models.py")


def stored_model(store: Path, name: str, is_smoke: bool) -> dict[str, Any] | None:
    """The record (accuracy, curve, weights digest) of ``name``'s current recipe in ``store``."""
    recipe = smoke(RECIPES[name]) if is_smoke else RECIPES[name]
    path = store / "models" / f"{recipe_key(recipe)}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def store_model(store: Path, record: dict[str, Any]) -> None:
    path = store / "models" / f"{record['key']}.json"
    _atomic_write(path, lambda name: Path(name).write_text(json.dumps(record, indent=1) + "\n"))


class Bench:
    """One model, its data subsamples and one shared boundary mining run (mined on first use:
    a model whose rows are all in the row cache is never mined)."""

    def __init__(self, name: str, settings: Settings, store: Path | None = None) -> None:
        self.name, self.settings, self.store = name, settings, store
        self._model: nn.Module | None = None
        # a model whose weights are not cached here but whose record is in the store: its rows
        # are looked up by the stored weights digest, and it is trained only if a row is missing
        self.record = None
        if store is not None and not is_cached(name, is_smoke=settings.smoke):
            self.record = stored_model(store, name, settings.smoke)
        if self.record is None:
            self._load()
        data = "fmnist" if name.endswith("fmnist") else name.split("-", 1)[1]
        self.text = data != "fmnist"
        self.calib = head(load_split(data, "train"), settings.calib, seed=1).without_labels()
        limit = settings.test_text if self.text else settings.test_vision
        self.test = head(load_split(data, "test"), limit, seed=2)
        self.boundary = BoundaryConfig(norm="2") if self.text else BoundaryConfig()
        self._mined: dict[str, Any] = {}  # by protocol
        self.mining_seconds: dict[str, float] = {}
        self.resumed = 0  # rows taken from the row cache

    def _load(self) -> None:
        model, record = trained(self.name, is_smoke=self.settings.smoke, log=log)
        if self.record is not None and record["weights_sha256"] != self.record["weights_sha256"]:
            # rows already taken from the store belong to other weights: mixing them with rows
            # of these would make one table of two models
            if self.store is not None:
                store_model(self.store, record)
            raise RuntimeError(
                f"{self.name}: the weights trained here differ from those of the stored rows "
                f"({record['weights_sha256'][:12]} against {self.record['weights_sha256'][:12]})"
                "; run again: the rows of these weights are computed anew"
            )
        self._model, self.record = model, record
        if self.store is not None:
            store_model(self.store, record)

    @property
    def model(self) -> nn.Module:
        """The trained model, loaded (or trained) on first use."""
        if self._model is None:
            self._load()
        assert self._model is not None
        return self._model

    def data(self, protocol: str) -> Any:
        """What ``protocol`` decomposes: the training subsample (held-out) or the evaluated
        test samples themselves (paper, Algorithm 1)."""
        return self.calib if protocol == "held-out" else self.test.without_labels()

    def mined(self, protocol: str) -> Any:
        """One boundary mining run per protocol, shared by the methods of this model."""
        if protocol not in self._mined:
            data = self.data(protocol)
            self._mined[protocol], self.mining_seconds[protocol] = timed(
                lambda: mine_boundary(self.model, data, self.boundary, progress=False)
            )
            mined = self._mined[protocol]
            log(
                f"{self.name} ({protocol}): mined {len(mined)} pairs in "
                f"{self.mining_seconds[protocol]:.0f} s (refined {mined.refined_rate:.3f})"
            )
        return self._mined[protocol]

    def _row_file(self, method: str, alpha: float, sparsity: Any, protocol: str) -> Path:
        settings = {k: v for k, v in vars(self.settings).items() if k != "contract"}
        assert self.record is not None
        weights = [self.record["key"], self.record["weights_sha256"]]
        material = [engine_digest(), *weights, method, alpha, sparsity, settings]
        material += [self.settings.contract.to_dict(), protocol]
        key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
        return cache_dir().parent / "results" / f"{key}.json"

    def _stored(self, path: Path) -> Path | None:
        """Where the row of ``path`` was found: the local row cache, else the store."""
        for place in (path, None if self.store is None else self.store / path.name):
            if place is not None and place.is_file():
                return place
        return None

    def run(
        self, method: str, alpha: float = 0.0, sparsity: Any = 0.5, protocol: str = "held-out"
    ) -> dict[str, Any]:
        """One row, from the row cache when this code already computed it with these settings
        (an interrupted run resumes), else computed now and cached. ``protocol``: "held-out"
        (decompose on training samples, certify on the test split) or "paper" (the paper's
        Algorithm 1: mine, learn and certify on the test split; in-sample)."""
        path = self._row_file(method, alpha, sparsity, protocol)
        found = self._stored(path)
        if found is not None:
            row: dict[str, Any] = json.loads(found.read_text())
            self.resumed += 1
            where = "row cache" if found == path else "committed store"
            log(f"{self.name} {row['method']} ({protocol}): from the {where}")
            return row
        row = self._compute(method, alpha, sparsity, protocol)
        row.update(commit=commit(), computed=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        row["weights_sha256"] = self.record["weights_sha256"] if self.record else None
        places = [path] if self.store is None else [path, self.store / path.name]
        for place in places:
            _atomic_write(place, lambda name: Path(name).write_text(json.dumps(row, indent=1)))
        return row

    def _compute(self, method: str, alpha: float, sparsity: Any, protocol: str) -> dict[str, Any]:
        settings = self.settings
        config = settings.lbmask()
        data, mined = self.data(protocol), self.mined(protocol)
        decomposition, decompose_seconds = timed(
            lambda: saved.decompose(
                self.model,
                data,
                method=method,
                sparsity=sparsity,
                contract=settings.contract,
                boundary=self.boundary,
                lbmask=replace(config, alpha=alpha),
                mined=mined,
                progress=False,
            )
        )
        if protocol == "held-out":  # training and test splits are disjoint: a valid certificate
            split = SampleSplit("calibration", len(self.calib), len(self.test), disjoint=True)
        else:  # the paper's protocol: the same samples, an in-sample figure
            split = SampleSplit("same-samples", len(self.test), len(self.test), disjoint=False)
        report, evaluate_seconds = timed(
            lambda: saved.evaluate(
                self.model,
                decomposition,
                self.test,
                settings.contract,
                labels=self.test.labels,
                split=split,
            )
        )
        label = f"lbmask a={alpha:g}" if method == "lbmask" else method
        if sparsity == "auto":
            label += " s=auto"
        row = {
            "model": self.name,
            "method": label,
            "protocol": protocol,
            "n": report.n_samples,
            "n_boundary": report.n_boundary,
            "dis": report.disagreement,
            "h": report.hoeffding,
            "hoeffding_bound": report.bounds["hoeffding"],
            "binomial": report.binomial,
            "bound": report.semantic_bound,
            "sparsities": decomposition.sparsity,
            "training": decomposition.metadata.get("training"),
            "overlap": report.max_overlap,
            "min_prune": report.min_prune,
            "confusion": report.confusion_deviation,
            "global_dis": report.global_disagreement,
            "holds": report.holds,
            "failed": report.failed_axes,
            "decompose_s": round(decompose_seconds, 1),
            "evaluate_s": round(evaluate_seconds, 1),
            "mining_s": round(self.mining_seconds.get(protocol, 0.0), 1),  # the shared run's
            # per block: mean and max overlap, kept shares (saved.profile; structured only)
            "blocks": report.to_dict()["blocks"] or None,
            "separation": report.to_dict()["separation"],
            "margin_profile": report.to_dict()["margin_profile"],
        }
        log(
            f"{self.name} {label} ({protocol}): Dis {row['dis']:.4f}, bound {row['bound']:.4f}, "
            f"overlap {row['overlap']:.4f}, {'holds' if row['holds'] else 'fails'} "
            f"({decompose_seconds:.0f} s + {evaluate_seconds:.0f} s)"
        )
        return row
