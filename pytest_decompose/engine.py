"""The session engine: decompositions honouring the command-line options, with a disk cache.

Imported lazily (it imports torch and the engine); the plugin module itself stays light.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import saved
from saved import __version__ as saved_version

__all__ = ["CacheStats", "Engine"]


@dataclass
class CacheStats:
    """What the cache did this session: ``trained`` counts real mask computations."""

    hits: int = 0
    trained: int = 0
    refreshed: int = 0
    unreadable: int = 0


@dataclass
class Engine:
    """Decomposes models for tests; one per pytest session.

    Args:
        cache_dir: where decompositions are kept (``None``: no cache).
        refresh: recompute and overwrite cached entries.
        device: device for decomposition work (``None``: the model's).
        seed: seed for every random choice.
    """

    cache_dir: Path | None = None
    refresh: bool = False
    device: str | None = None
    seed: int = 0
    stats: CacheStats = field(default_factory=CacheStats)
    #: seconds and estimate of the last decompose call (``cached`` when read from the cache)
    last_timing: dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        """The session's seed and device, as :func:`saved.check` takes them."""
        return {"seed": self.seed, "device": self.device}

    def cache_key(
        self,
        model: nn.Module,
        data: object,
        labels: object,
        settings: dict[str, Any],
        device: str | None = None,
    ) -> str:
        """sha256 of everything a decomposition depends on. ``device``: the call's (default:
        the session's); an unavailable one is refused here, before the cache is read."""
        device = str(saved.resolve_device(model, device if device is not None else self.device))
        material = {
            "model": saved.fingerprint(model),
            "data": saved.fingerprint(data, labels),  # a DataLoader is streamed, not held
            "settings": settings,
            "seed": self.seed,
            "device": device,
            "saved": saved_version,
            "torch": torch.__version__,
        }
        return hashlib.sha256(
            json.dumps(material, sort_keys=True, default=str).encode()
        ).hexdigest()

    def decompose(
        self,
        model: nn.Module,
        data: object,
        *,
        announce: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> saved.Decomposition:
        """:func:`saved.decompose` with this session's seed and device, through the cache.

        ``announce(text)`` is told the time estimate of a decomposition that will take more
        than a minute, before it starts.
        """
        kwargs.setdefault("seed", self.seed)
        kwargs.setdefault("device", self.device)
        kwargs.setdefault("progress", False)
        self.last_timing = {"cached": True}

        def estimated(estimate: Any) -> None:
            self.last_timing["estimate"] = round(estimate.total, 1)
            if announce is not None and estimate.total > 60:
                announce(f"pytest-decompose: decomposing, {estimate.describe()}")

        def compute() -> saved.Decomposition:
            started = time.perf_counter()
            decomposition = saved.decompose(model, data, on_estimate=estimated, **kwargs)
            self.last_timing.update(cached=False, seconds=round(time.perf_counter() - started, 1))
            self.stats.trained += 1
            return decomposition

        contract = kwargs.get("contract")
        if self.cache_dir is None:
            return _judged_by(compute(), contract)
        settings = {
            k: _digest_of(v) if isinstance(v, torch.Tensor) else v
            for k, v in kwargs.items()
            # the reference logits are the model's on the data: both are in the key already
            if k not in ("progress", "labels", "device", "contract", "reference")
        }
        if contract is not None:  # only what the masks depend on: one decomposition serves
            # every contract that agrees on those
            # (LBMask's default overlap hinge aims below gamma; a scored method with it in the
            # key only shares less)
            overlap = (kwargs.get("lbmask") or saved.LBMaskConfig()).overlap_limit == "contract"
            settings["contract"] = contract.shaping_masks(kwargs.get("sparsity"), overlap=overlap)
        key = self.cache_key(model, data, kwargs.get("labels"), settings, kwargs["device"])
        path = self.cache_dir / f"{key}.safetensors"
        with self._locked(key):
            if path.exists() and not self.refresh:
                try:
                    decomposition = saved.load(path, model)
                except (ValueError, OSError) as error:
                    self.stats.unreadable += 1
                    warnings.warn(
                        f"pytest-decompose: ignoring a broken cache entry ({error}); recomputing",
                        stacklevel=2,
                    )
                else:
                    self.stats.hits += 1
                    return _judged_by(decomposition, contract)
            elif path.exists():
                self.stats.refreshed += 1
            decomposition = compute()
            decomposition.save(path)  # atomic: written aside, then renamed
            return _judged_by(decomposition, contract)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """An exclusive lock per key, so two workers never compute or write one entry twice."""
        assert self.cache_dir is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # lock files stay: unlinking one while another process waits on it would let a third
        # process lock a new file of the same name at the same time
        with open(self.cache_dir / f"{key}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _judged_by(decomposition: saved.Decomposition, contract: Any) -> saved.Decomposition:
    """The decomposition recording the caller's contract, as a copy (a cached one was stored
    with the contract of the call that computed it; :func:`saved.evaluate` defaults to the
    recorded one)."""
    return decomposition if contract is None else decomposition.judged_by(contract)


def _digest_of(tensor: torch.Tensor) -> str:
    """A tensor argument (the ``keep`` mask) in a cache key: its content, not its repr."""
    data = tensor.detach().cpu().contiguous()
    return hashlib.sha256(
        f"{data.dtype}|{tuple(data.shape)}|".encode() + data.numpy().tobytes()
    ).hexdigest()
