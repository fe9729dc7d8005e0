"""The mask makers behind :func:`saved.decompose`: one registry of methods, the merged LBMask
settings, and Phase 3's dispatch — learn masks (LBMask, optionally one sparsity per
component) or score them (a baseline)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from .baselines import MaskContext, magnitude, mi, random, similarity, wanda, wanda_structured
from .components import ClassComponents
from .contract import Contract
from .distributed import Ranks
from .inputs import Inputs
from .masking.adaptive import adaptive_sparsity
from .masking.lbmask import LBMaskConfig, train_masks
from .masking.space import MaskSpace
from .report import Training

__all__ = ["METHODS", "Masks", "Method", "MethodSpec", "make_masks", "merged_config", "method_spec"]

Method = Literal[
    "lbmask",
    "lbmask-unstructured",
    "wanda",
    "wanda-structured",
    "mi",
    "similarity",
    "magnitude",
    "random",
]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """How one method makes masks: over structural units or single weights; learned by LBMask
    (``masks`` None) or scored by a baseline; whether it needs the calibration set (mined
    boundary points)."""

    space: Literal["units", "weights"]
    masks: Callable[..., Tensor] | None
    calibration: bool


_REGISTRY: dict[str, MethodSpec] = {
    "lbmask": MethodSpec("units", None, True),
    "lbmask-unstructured": MethodSpec("weights", None, True),
    "wanda": MethodSpec("weights", wanda.masks, True),
    "wanda-structured": MethodSpec("units", wanda_structured.masks, True),
    "mi": MethodSpec("units", mi.masks, True),
    "similarity": MethodSpec("units", similarity.masks, True),
    "magnitude": MethodSpec("units", magnitude.masks, False),
    "random": MethodSpec("units", random.masks, False),
}
#: Every method, with whether its supports are weights (unstructured) or structural units.
METHODS: dict[str, Literal["units", "weights"]] = {k: m.space for k, m in _REGISTRY.items()}


def method_spec(method: str) -> MethodSpec:
    if method not in _REGISTRY:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    return _REGISTRY[method]


def merged_config(
    lbmask: LBMaskConfig | None,
    sparsity: float | Literal["auto"] | None,
    alpha: float | None,
) -> LBMaskConfig:
    """``lbmask`` (or the defaults) with ``sparsity`` and ``alpha`` filled in; each may be
    given once, here or in ``lbmask``, or twice with the same value."""
    config = lbmask or LBMaskConfig()
    if sparsity is not None and sparsity != "auto":
        _agree("sparsity", sparsity, lbmask)
        config = dataclasses.replace(config, sparsity=sparsity)
    if alpha is not None:
        _agree("alpha", alpha, lbmask)
        config = dataclasses.replace(config, alpha=alpha)
    return config


def _agree(name: str, value: float, lbmask: LBMaskConfig | None) -> None:
    if lbmask is not None and getattr(lbmask, name) != value:
        raise ValueError(
            f"{name}: decompose({name}={value!r}) and lbmask.{name}={getattr(lbmask, name)!r} "
            "disagree; give it in one place"
        )


@dataclasses.dataclass(frozen=True)
class Masks:
    """What Phase 3 made: the binary masks, the sparsity (one, or one per component), the
    learned ranking (LBMask's logits; None for baselines) and how learning ended."""

    masks: Tensor
    rates: float | list[float]
    ranking: Tensor | None
    training: Training | None


def make_masks(
    chosen: MethodSpec,
    model: nn.Module,
    space: MaskSpace,
    components: ClassComponents,
    calibration: Inputs,
    config: LBMaskConfig,
    *,
    n_data: int,
    adaptive: Contract | None,
    sources: Tensor | None,
    reference: Tensor | None,
    device: torch.device,
    seed: int,
    batch_size: int,
    progress: bool,
    ranks: Ranks | None = None,
) -> Masks:
    """Learn (LBMask) or score (a baseline) one mask per component over ``space``.

    ``calibration`` is the data (its first ``n_data`` rows) plus mined boundary points;
    ``adaptive`` is the contract whose budget ``sparsity="auto"`` keeps, None for one sparsity.
    With ``ranks``, LBMask's components are split across the group; scores and the adaptive
    search run whole on every rank (deterministic, so every rank gets the same masks).
    """
    if chosen.masks is not None:
        context = MaskContext(model, calibration, components, device, batch_size)
        k = components.num_components
        scored = chosen.masks(space, k, config.sparsity, seed=seed, context=context)
        return Masks(scored, config.sparsity, None, None)
    run = train_masks(
        model,
        calibration,
        components,
        space,
        config,
        seed=seed,
        device=device,
        progress=progress,
        sources=sources,
        reference=reference,
        ranks=ranks,
    )
    rates: float | list[float] = config.sparsity
    if adaptive is not None:
        rows = _held_out_rows(len(calibration), n_data, run.validation_rows)
        rates = adaptive_sparsity(
            model,
            space,
            components,
            run.logits,
            calibration.select(rows),
            adaptive,
            allocation=config.allocation,
            device=device,
            reference=reference[rows] if reference is not None else None,
        )
    masks = space.binarise(run.logits, rates, config.allocation)
    return Masks(masks, rates, run.logits, run.summary())


def _held_out_rows(n_calibration: int, n_data: int, rows: Tensor | None) -> Tensor:
    """The data samples among the calibration rows mask learning held out (all calibration
    data samples when it held none out: fixed steps)."""
    if rows is not None:
        real = rows[rows < n_data]
        return real if real.numel() >= 10 else rows
    return torch.arange(min(n_data, n_calibration))
