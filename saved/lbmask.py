"""Phase 3 of SAVED: LBMask, learned structured binary masks over a frozen network.

For each component k, one logit per structural unit, ``p = sigmoid(logit)``. The forward pass
uses the *hard* mask — exactly the top ``keep`` units of every group by logit, the same rule as
the final binarisation — with a straight-through gradient ``hard + p - p.detach()``. The model's
weights are frozen (``requires_grad`` off inside :func:`saved.adapters.frozen_eval`), so backward
computes gradients for the mask logits only, never for weights; BatchNorm stays in eval mode and
dropout is off.

Loss per component, averaged over components:

* boundary-aware binary cross-entropy on the component's task, ``z_k = m_k[0] - m_k[1]`` against
  "the reference model predicts a class of ``P_k``" (:meth:`ClassComponents.binary_targets`),
  positives re-weighted by ``n_neg / n_pos`` and the low-margin samples (lowest
  ``boundary_quantile`` of reference margins: boundary points) weighted by ``boundary_weight``;
* plus ``sparsity_weight * sum_g (mean_{u in g} p_u - keep_g / size_g)^2``, pulling each group's
  kept fraction to the target ``1 - s``.

Initialisation ``alpha`` in [0, 1]: ``logit = alpha * z(norm) + noise`` with ``z`` the unit weight
norms standardised within each group; 0 is uniform (the paper's best; the seeded noise of scale
1e-3 only breaks ties), 1 the magnitude prior.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._progress import progress_bar
from .adapters import (
    Batch,
    Inputs,
    batch_to,
    forward_logits,
    frozen_eval,
    model_device,
    on_device,
    predict_logits,
    resolve_device,
)
from .components import ClassComponents
from .contract import logit_margins
from .units import MaskSpace

__all__ = ["LBMaskConfig", "MaskTrainer", "initial_logits", "learn_masks"]


@dataclass(frozen=True)
class LBMaskConfig:
    """Settings of mask learning (see the module docstring for the loss)."""

    sparsity: float = 0.5
    alpha: float = 0.0
    steps: int = 1000
    lr: float = 0.05
    batch_size: int = 128
    boundary_quantile: float = 0.2
    boundary_weight: float = 4.0
    sparsity_weight: float = 1.0
    component_chunk: int | None = None  # None: by activation size (see _auto_chunk)

    def __post_init__(self) -> None:
        checks = {
            "sparsity": (self.sparsity, 0.0, 1.0, "(0, 1)", False),
            "alpha": (self.alpha, 0.0, 1.0, "[0, 1]", True),
            "boundary_quantile": (self.boundary_quantile, 0.0, 1.0, "(0, 1]", None),
        }
        for name, (value, low, high, text, closed) in checks.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ValueError(f"{name}: expected a number in {text}, got {value!r}")
            if closed is True:
                bad = not low <= value <= high
            elif closed is False:
                bad = not low < value < high
            else:
                bad = not low < value <= high
            if bad:
                raise ValueError(f"{name}: expected a value in {text}, got {value!r}")
        for name, number in (("steps", self.steps), ("batch_size", self.batch_size)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {number!r}")
        for name, value in (
            ("lr", self.lr),
            ("boundary_weight", self.boundary_weight),
        ):
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}: expected a number > 0, got {value!r}")
        if not (isinstance(self.sparsity_weight, (int, float)) and self.sparsity_weight >= 0):
            raise ValueError(
                f"sparsity_weight: expected a number >= 0, got {self.sparsity_weight!r}"
            )
        chunk = self.component_chunk
        if chunk is not None and (
            isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1
        ):
            raise ValueError(f"component_chunk: expected None or an integer >= 1, got {chunk!r}")


def initial_logits(space: MaskSpace, k: int, alpha: float, generator: torch.Generator) -> Tensor:
    """``[K, N]`` starting logits: ``alpha`` times the standardised unit norms, plus tie-breaking
    noise of scale 1e-3 (drawn from ``generator``)."""
    prior = torch.cat(
        [
            (g.norms - g.norms.mean()) / g.norms.std().clamp_min(1e-12)
            if g.size > 1
            else torch.zeros(1)
            for g in space.groups
        ]
    )  # standardised within each group: only the ranking inside a group matters
    noise = torch.randn(k, space.num_units, generator=generator) * 1e-3
    return alpha * prior.float().expand(k, -1) + noise


class MaskTrainer:
    """One LBMask run: the frozen model, the targets and the mask logits being learned.

    Use as a context manager (the model is frozen in eval mode inside it, and restored after)
    and call :meth:`step`; :func:`learn_masks` does both.
    """

    def __init__(
        self,
        model: nn.Module,
        calibration: Inputs,
        components: ClassComponents,
        space: MaskSpace,
        config: LBMaskConfig,
        *,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        self.config, self.space, self.components = config, space, components
        self.calibration = calibration
        self.generator = torch.Generator().manual_seed(seed)
        self.device = resolve_device(model, device)
        self.model = on_device(model, self.device)
        reference = predict_logits(self.model, calibration)
        if reference.shape[1] != components.num_classes:
            raise ValueError(
                f"components: built for {components.num_classes} classes, the model has "
                f"{reference.shape[1]}"
            )
        self.targets = components.binary_targets(reference.argmax(1)).float()
        margins = logit_margins(reference)
        low = margins <= torch.quantile(margins, config.boundary_quantile)
        self.weights = torch.where(low, config.boundary_weight, 1.0)
        positives = self.targets.sum(0)
        negatives = self.targets.shape[0] - positives
        self.pos_weight = (negatives / positives.clamp_min(1)).clamp(1.0, 100.0).to(self.device)
        k = components.num_components
        start = initial_logits(space, k, config.alpha, self.generator)
        self.logits = start.to(self.device).requires_grad_(True)
        self.optimiser = torch.optim.Adam([self.logits], lr=config.lr)
        keeps = space.keep_counts(config.sparsity)
        self.keep_fraction = torch.tensor(
            [keep / g.size for g, keep in zip(space.groups, keeps, strict=True)]
        )
        self._frozen: contextlib.AbstractContextManager[nn.Module] | None = None
        self.chunk = config.component_chunk or _auto_chunk(self.model, space, k, config.batch_size)

    def __enter__(self) -> MaskTrainer:
        self._frozen = frozen_eval(self.model)
        self._frozen.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._frozen is not None
        self._frozen.__exit__(*exc)  # type: ignore[arg-type]

    def step(self) -> float:
        """One optimisation step on a random batch; returns the loss."""
        config, k = self.config, self.components.num_components
        n = len(self.calibration)
        rows = torch.randint(0, n, (min(config.batch_size, n),), generator=self.generator)
        batch = self.calibration.batch(rows, self.device)
        targets, weights = self.targets[rows].to(self.device), self.weights[rows].to(self.device)
        self.optimiser.zero_grad(set_to_none=True)
        total = 0.0
        for first in range(0, k, self.chunk):
            members = slice(first, min(first + self.chunk, k))
            loss = self._loss(members, batch, targets, weights)
            loss.backward()
            total += float(loss.detach())
        self.optimiser.step()
        return total

    def _loss(self, members: slice, batch: Batch, targets: Tensor, weights: Tensor) -> Tensor:
        """Loss of the components in ``members`` (their share of the mean over all K)."""
        part = self.logits[members]
        probs = torch.sigmoid(part)
        hard = self.space.binarise(part.detach(), self.config.sparsity).float()
        masks = hard + probs - probs.detach()  # straight-through: hard forward, sigmoid gradient
        count = part.shape[0]
        out = self.space.run(self.model, masks, batch)
        m, _ = self.components.outputs(out.view(count, -1, out.shape[-1]), members)
        bce = nn.functional.binary_cross_entropy_with_logits(
            m[..., 0] - m[..., 1],
            targets[:, members],
            weight=weights[:, None],
            pos_weight=self.pos_weight[members],
            reduction="none",
        ).mean(0)
        kept = torch.stack(
            [probs[:, columns].mean(1) for _, columns in self.space.group_slices()], 1
        )
        sparsity = (kept - self.keep_fraction.to(kept.device)).pow(2).sum(1)
        return (bce + self.config.sparsity_weight * sparsity).sum() / self.components.num_components


#: Activation elements one masked pass may produce before components are split into chunks.
ACTIVATION_BUDGET = 1 << 22


def _auto_chunk(model: nn.Module, space: MaskSpace, k: int, batch_size: int) -> int:
    """Components per pass: all K unless their activations exceed ``ACTIVATION_BUDGET``.

    Measured with benchmarks/lbmask.py (docs/BENCHMARKS.md): a pass over K * B rows costs less
    than K passes while its activations stay cache-sized (the digits MLP: all 10 components
    together, 0.78 of K separate passes), and more beyond (a small CNN with 10 x 64 rows: 1.94
    jointly, 0.95 in chunks of five).
    """
    elements = 0

    def count(module: nn.Module, inputs: object, output: object) -> None:
        nonlocal elements
        if isinstance(output, Tensor):
            elements += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with frozen_eval(model), torch.no_grad():
            example = space.example
            forward_logits(model, batch_to(example, model_device(model)))
    finally:
        for hook in hooks:
            hook.remove()
    rows = next(iter(example.values())).shape[0] if isinstance(example, dict) else example.shape[0]
    per_component = elements / rows * batch_size
    largest = max(1, min(k, int(ACTIVATION_BUDGET // max(per_component, 1))))
    # equal chunks: uneven ones alternate two batch shapes, which measured slower for convs
    return math.ceil(k / math.ceil(k / largest))


def learn_masks(
    model: nn.Module,
    calibration: Inputs,
    components: ClassComponents,
    space: MaskSpace,
    config: LBMaskConfig | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """Train mask logits for every component; returns the final ``[K, N]`` logits (CPU).

    Binarise with ``space.binarise(logits, config.sparsity)``. The model is left unchanged.
    """
    config = config or LBMaskConfig()
    trainer = MaskTrainer(model, calibration, components, space, config, seed=seed, device=device)
    with trainer, progress_bar("Learning masks", config.steps, progress) as advance:
        for _ in range(config.steps):
            trainer.step()
            advance(1)
    return trainer.logits.detach().cpu()
