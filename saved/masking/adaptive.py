"""Adaptive per-component sparsity (``sparsity="auto"``; the paper's first open direction).

Masks are learned once, at the configured sparsity; their logits rank every component's units.
Each component's sparsity is then chosen on held-out calibration samples, reusing that ranking
(no retraining per candidate):

1. every component starts at ``eta`` (the least pruning the contract accepts);
2. in rounds, each component in turn moves one step (``STEP``) toward ``MAX_SPARSITY`` if the
   decomposed disagreement on the held-out low-margin samples stays within the semantic
   budget ``eps / 2`` (half of ``eps``, leaving room for the confidence bound); rounds repeat
   until no component can move;
3. if two components then overlap by more than ``gamma``, the sparser-kept one of the worst
   pair moves up until they do not (the structural axis wins over the budget).

Only the component that moves is recomputed at each trial: the other components' logits on
the held-out samples are cached.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._runtime import frozen_eval
from ..components import ClassComponents
from ..contract import Contract, boundary_subset, jaccard_overlap, logit_margins
from ..inputs import Inputs
from .space import Allocation, MaskSpace

__all__ = ["MAX_SPARSITY", "STEP", "adaptive_sparsity"]

STEP = 0.05
MAX_SPARSITY = 0.95


def _grid(eta: float) -> list[float]:
    """Candidate sparsities from ``max(eta, STEP)`` up to ``MAX_SPARSITY``."""
    start = max(eta, STEP)
    values = [start]
    while values[-1] + STEP <= MAX_SPARSITY + 1e-9:
        values.append(round(values[-1] + STEP, 10))
    return values


def adaptive_sparsity(
    model: nn.Module,
    space: MaskSpace,
    components: ClassComponents,
    logits: Tensor,
    samples: Inputs,
    contract: Contract,
    *,
    allocation: Allocation = "group",
    device: torch.device | str | None = None,
    batch_size: int = 256,
    reference: Tensor | None = None,
) -> list[float]:
    """One sparsity per component (see the module docstring).

    Args:
        logits: ``[K, N]`` learned mask logits (the ranking of each component's units).
        samples: held-out calibration samples (never the evaluated ones); their lowest
            ``contract.kappa`` share of reference margins is where the budget is measured.
        reference: the unmasked model's logits of ``samples``, when already computed.
    """
    grid = _grid(contract.eta)
    k = components.num_components
    with frozen_eval(model), torch.no_grad():
        if reference is None:
            reference = _logits(model, space, None, samples, device, batch_size)
        boundary = boundary_subset(logit_margins(reference), q=contract.kappa)
        probe = samples.select(boundary)
        target = reference[boundary].argmax(1)
        level = [0] * k  # index into grid per component
        cache = torch.stack(
            [
                _component(model, space, logits, j, grid[0], allocation, probe, device)
                for j in range(k)
            ]
        )  # [K, B, C]

        def disagreement(table: Tensor) -> float:
            return float((components.predict(table) != target).double().mean())

        budget = contract.eps / 2
        moved = True
        while moved:
            moved = False
            for j in range(k):
                if level[j] + 1 >= len(grid):
                    continue
                trial = _component(
                    model, space, logits, j, grid[level[j] + 1], allocation, probe, device
                )
                table = cache.clone()
                table[j] = trial
                if disagreement(table) <= budget:
                    cache, level[j], moved = table, level[j] + 1, True
        rates = [grid[i] for i in level]
        while True:  # structural axis: separate the worst overlapping pair
            masks = space.binarise(logits, rates, allocation)
            overlap = jaccard_overlap(masks.cpu())
            overlap.fill_diagonal_(0)
            worst = int(overlap.argmax())
            a, b = divmod(worst, k)
            if float(overlap[a, b]) <= contract.gamma:
                break
            j = a if level[a] <= level[b] else b
            if level[j] + 1 >= len(grid):
                j = b if j == a else a
                if level[j] + 1 >= len(grid):
                    break
            level[j] += 1
            rates[j] = grid[level[j]]
    return rates


def _component(
    model: nn.Module,
    space: MaskSpace,
    logits: Tensor,
    k: int,
    sparsity: float,
    allocation: Allocation,
    samples: Inputs,
    device: torch.device | str | None,
) -> Tensor:
    mask = space.binarise(logits[k : k + 1], sparsity, allocation)
    return _logits(model, space, mask, samples, device, 256)


def _logits(
    model: nn.Module,
    space: MaskSpace,
    mask: Tensor | None,
    samples: Inputs,
    device: torch.device | str | None,
    batch_size: int,
) -> Tensor:
    """``[n, C]`` logits of the model masked by one mask row (unmasked when ``None``)."""
    from .._runtime import forward_logits, model_device

    run_on = device or model_device(model)
    parts = []
    for batch in samples.batches(batch_size, run_on):
        if mask is None:
            parts.append(forward_logits(model, batch).float().cpu())
        else:
            parts.append(space.run(model, mask.to(run_on), batch).float().cpu())
    return torch.cat(parts)
