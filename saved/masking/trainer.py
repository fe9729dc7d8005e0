"""One LBMask step over the frozen network (:class:`MaskTrainer`): the targets, the held-out
rows, the initial logits and the straight-through update; :mod:`saved.masking.lbmask` runs the
steps and decides when to stop."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from .._runtime import (
    available_memory,
    forward_logits,
    frozen_eval,
    model_device,
    on_device,
    predict_logits,
    resolve_device,
)
from ..components import ClassComponents
from ..contract import boundary_subset, logit_margins
from ..distributed import Ranks
from ..inputs import Inputs, batch_to, trim_padding
from .config import LBMaskConfig
from .objectives import ObjectiveTargets, objective_loss
from .space import MaskSpace

__all__ = [
    "ACTIVATION_BUDGET",
    "MASK_ENTRY_BYTES",
    "MIN_SOURCES",
    "VALIDATION_ROWS",
    "MaskTrainer",
    "auto_chunk",
    "initial_logits",
    "straight_through",
]

#: Bytes one LBMask run holds per mask entry (K x N): the logits, their gradient, Adam's two
#: moments, the probabilities, hard and straight-through masks, and for per-weight masks the
#: masked weights with their gradients. Measured: 45 on resnet18's 10 x 11.2 M per-weight
#: entries (peak resident memory of two steps, docs/COVERAGE.md); 48 leaves a margin.
MASK_ENTRY_BYTES = 48


def check_memory(k: int, space: MaskSpace, device: torch.device) -> None:
    """Refuse up front a run whose masks cannot fit: a clear error instead of the kernel
    killing the process (per-weight masks of a 86 M-parameter ViT need about 40 GB)."""
    need = k * space.num_units * MASK_ENTRY_BYTES
    free = available_memory(device)
    if free is not None and need > free:
        raise MemoryError(
            f"lbmask: learning {k} masks over {space.num_units:,} units needs about "
            f"{need / 1e9:.1f} GB ({MASK_ENTRY_BYTES} bytes per mask entry), but {free / 1e9:.1f} "
            f"GB are available on {device}. Score the masks instead (method='wanda' for "
            "per-weight masks), use structured masks (method='lbmask'), or fewer components "
            "(positive_sets)"
        )


def initial_logits(
    space: MaskSpace,
    k: int,
    alpha: float,
    generator: torch.Generator,
    scores: Tensor | None = None,
) -> Tensor:
    """``[K, N]`` starting logits: ``alpha`` times the prior standardised within each group
    (only the ranking inside a group matters), plus tie-breaking noise of scale 1e-3 (drawn from
    ``generator``). The prior is the unit norms, or ``scores [K, N]`` (one ranking per
    component: similarity pruning's) when given."""
    base = space.norms[None].expand(k, -1) if scores is None else scores.cpu()
    prior = torch.cat(
        [
            (block - block.mean(1, keepdim=True)) / block.std(1, keepdim=True).clamp_min(1e-12)
            if part.stop - part.start > 1
            else torch.zeros(k, 1)
            for block, part in ((base[:, p], p) for _, p in space.group_slices())
        ],
        dim=1,
    )
    noise = torch.randn(k, space.num_units, generator=generator) * 1e-3
    return alpha * prior.float() + noise


def _held_out_rows(
    sources: Tensor, fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Rows split by source sample: a sample and the boundary points mined from it stay on
    one side, so the held-out part measures samples the masks never saw."""
    unique = torch.unique(sources)
    if unique.numel() < 2:
        raise ValueError("calibration: held-out stopping needs at least two samples")
    order = unique[torch.randperm(unique.numel(), generator=generator)]
    count = min(unique.numel() - 1, max(1, round(fraction * unique.numel())))
    held = torch.isin(sources, order[:count])
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()


def boundary_rows(reference: Tensor, sources: Tensor, config: LBMaskConfig) -> Tensor:
    """The calibration rows weighted by ``boundary_weight``. ``"rows"``: the lowest
    ``boundary_quantile`` of reference margins over all rows (mined boundary points, whose
    margins are near 0, fill it first). ``"natural"``: every mined point, and the data samples
    :func:`saved.contract.boundary_subset` picks among the data samples: the low-margin
    samples the contract's boundary subset is made of (a data sample is the row that is its
    own source; a mined row comes after every data sample)."""
    margins = logit_margins(reference)
    if config.boundary_set == "rows":
        return margins <= torch.quantile(margins, config.boundary_quantile)
    natural = sources == torch.arange(sources.numel())
    chosen = ~natural
    samples = torch.nonzero(natural).flatten()
    # the contract's own rule (boundary_subset) on the data samples: the same kind of subset
    chosen[samples[boundary_subset(margins[samples], q=config.boundary_quantile)]] = True
    return chosen


def overlap_excess(masks: Tensor, limit: float) -> Tensor:
    """Mean over component pairs of ``relu(J_ij - limit)``, ``J`` the Jaccard overlap of the
    ``[K, N]`` masks (straight-through: the hard masks' value, the probabilities' gradient),
    the contract's overlap (:func:`saved.contract.jaccard_overlap`) made differentiable: that
    one takes boolean supports and returns CPU float64 counts, without a gradient."""
    inter = masks @ masks.T
    sizes = masks.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    pairs = ~torch.eye(masks.shape[0], dtype=torch.bool, device=masks.device)
    return torch.relu(inter / union.clamp_min(1e-12) - limit)[pairs].mean()


#: The forward value of a dropped unit's mask while masks are learned (:func:`straight_through`).
DROPPED = 1e-12


def straight_through(hard: Tensor, probs: Tensor, dtype: torch.dtype) -> Tensor:
    """``[K, N]`` masks with the forward value of ``hard`` and the gradient of ``probs``.

    A dropped unit's forward value is ``DROPPED`` (at least the smallest normal number of the
    masked passes' ``dtype``), not 0. A mask multiplies a unit where it is produced, before the
    activation that usually follows (``relu(m * z)``); at m = 0 autograd takes relu's
    derivative at 0, which is 0, so a dropped unit behind a ReLU never had a gradient and
    could never come back: LBMask only ever dropped units from its random start (on a CNN
    decomposable by construction, benchmarks/cotrain_probe.py ``--blocks``, 16 of 1,600 mask
    entries moved between steps 3 and 400). At m = DROPPED the gradient is the one-sided
    derivative ``relu(z)`` of ``relu(m * z) = m * relu(z)``: what switching the unit on adds,
    for every positively homogeneous activation (ReLU, max-pooling), and the usual derivative
    at 0 for smooth ones (GELU), while the forward pass is the hard masks' to float
    precision. ``probs - probs.detach()`` is added last: ``DROPPED + p - p`` rounds to 0."""
    floor = max(DROPPED, torch.finfo(dtype).tiny)
    return hard.to(probs.dtype).clamp_min(floor) + (probs - probs.detach())


#: Rows of the held-out part measured at each validation (a seeded subsample beyond this).
VALIDATION_ROWS = 512
#: Fewer data samples than this: nothing is held out and ``"auto"`` runs ``max_steps``.
MIN_SOURCES = 10


class MaskTrainer:
    """One LBMask run: the frozen model, the targets and the mask logits being learned.

    Use as a context manager (the model is frozen in eval mode inside it, and restored after)
    and call :meth:`step`; :func:`train_masks` does both.

    Args:
        sources: for each calibration row, the data sample it comes from (a boundary point's
            attacked sample); keeps a sample and its boundary points on one side of the
            held-out split. ``None``: every row is its own sample.
        reference: the model's ``[rows, C]`` logits on ``calibration`` when the caller has
            them (``decompose`` does, from its own pass and boundary mining's); ``None``: one
            pass computes them.
        ranks: the process group sharing this run (:mod:`saved.distributed`): this process
            runs only its chunks of components, and every rank ends with the same logits.
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
        sources: Tensor | None = None,
        reference: Tensor | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.config, self.space, self.components = config, space, components
        limit = config.for_contract().overlap_limit  # "contract" here: the default contract's
        self._overlap_limit = float(limit) if limit is not None else None
        self.ranks = ranks
        self.calibration = calibration
        self.generator = torch.Generator().manual_seed(seed)
        self.device = resolve_device(model, device)
        self.model = on_device(model, self.device)
        if reference is None:
            reference = predict_logits(self.model, calibration)
        elif reference.dim() != 2 or reference.shape[0] != len(calibration):
            raise ValueError(
                f"reference: expected [{len(calibration)}, C] logits of the calibration rows, "
                f"got {tuple(reference.shape)}"
            )
        self.reference = reference.detach().float().cpu()
        if self.reference.shape[1] != components.num_classes:
            raise ValueError(
                f"components: built for {components.num_classes} classes, the model has "
                f"{self.reference.shape[1]}"
            )
        n = len(calibration)
        if sources is None:
            sources = torch.arange(n)
        if sources.shape != (n,):
            raise ValueError(f"sources: expected one sample index per row ({n})")
        self.boundary = boundary_rows(self.reference, sources, config)
        self.natural = sources == torch.arange(n)  # the data samples, not mined points
        self.weights = torch.where(self.boundary, config.boundary_weight, 1.0)
        targets = components.binary_targets(self.reference.argmax(1)).float()
        positives = targets.sum(0)
        negatives = targets.shape[0] - positives
        self.pos_weight = (negatives / positives.clamp_min(1)).clamp(1.0, 100.0).to(self.device)
        self.scale = float(self.reference.std().clamp_min(1e-6))
        if config.steps == "auto" and torch.unique(sources).numel() >= MIN_SOURCES:
            self.train_rows, held = _held_out_rows(
                sources, config.validation_fraction, self.generator
            )
            if held.numel() > VALIDATION_ROWS:
                pick = torch.randperm(held.numel(), generator=self.generator)[:VALIDATION_ROWS]
                held = held[pick.sort().values]
            order = calibration.select(held).length_order()  # batches of similar length
            self.validation_rows: Tensor | None = held if order is None else held[order]
        else:
            self.train_rows, self.validation_rows = torch.arange(n), None
        k = components.num_components
        check_memory(k, space, self.device)
        start = initial_logits(space, k, config.alpha, self.generator, self._prior_scores())
        self.logits = start.to(self.device).requires_grad_(True)
        self.optimiser = torch.optim.Adam([self.logits], lr=config.lr)
        blocks = space.quota_blocks(config.allocation)
        self._block_columns = [
            torch.cat([torch.arange(c.start, c.stop) for _, c in block]).to(self.device)
            for block in blocks
        ]
        # "params" allocation: the sparsity term weighs the one block's units by parameters
        self._param_share: Tensor | None = None
        if space.resolve_allocation(config.allocation) == "params":
            params = space.unit_params.to(self.device, torch.float32)
            self._param_share = params / params.sum()
        self.steps_taken = 0
        self._target_keep = self.keep_fraction(config.sparsity)  # every step after the ramp
        self._frozen: contextlib.AbstractContextManager[nn.Module] | None = None
        self.chunk = config.component_chunk or auto_chunk(self.model, space, k, config)
        self._chunks = [slice(i, min(i + self.chunk, k)) for i in range(0, k, self.chunk)]
        # the components whose masked passes run here (all of them in a single process)
        self._owned = torch.zeros(k, dtype=torch.bool)
        for index, part in enumerate(self._chunks):
            self._owned[part] = ranks is None or ranks.owns(index)
        floating = [p.dtype for p in self.model.parameters() if p.is_floating_point()]
        self._dtype = floating[0] if floating else torch.float32  # the masked passes' dtype

    def _prior_scores(self) -> Tensor | None:
        """Similarity pruning's ranking or the Taylor importance when ``config.prior`` asks for
        it (``alpha`` > 0); None: the magnitude prior. Per-weight masks read the magnitude
        prior under ``"taylor"`` (the default): a per-sample gradient for every weight of
        every component is K copies of the model's gradient per sample, and magnitude is
        where per-weight masks did best (docs/DECISIONS.md, unstructured LBMask)."""
        prior = self.config.prior
        if prior == "magnitude" or self.config.alpha == 0:
            return None
        from ..activity import MaskContext, similarity_scores, taylor_scores
        from .units import UnitSpace

        if not isinstance(self.space, UnitSpace):
            if prior == "taylor":
                return None
            raise ValueError(f"prior: {prior!r} ranks structural units; use it with lbmask")
        context = MaskContext(self.model, self.calibration, self.components, self.device)
        score = similarity_scores if prior == "similarity" else taylor_scores
        return score(self.space, context)

    def __enter__(self) -> MaskTrainer:
        self._frozen = frozen_eval(self.model)
        self._frozen.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._frozen is not None
        self._frozen.__exit__(*exc)  # type: ignore[arg-type]

    def _targets(self, rows: Tensor) -> ObjectiveTargets:
        return ObjectiveTargets(
            reference=self.reference[rows].to(self.device),
            weights=self.weights[rows].to(self.device),
            boundary=self.boundary[rows].to(self.device),
            pos_weight=self.pos_weight,
            scale=self.scale,
        )

    def _component_logits(self, masks: Tensor, rows: Tensor) -> Tensor:
        """``[K, B, C]`` logits of the K masked models on the calibration ``rows``."""
        batch = trim_padding(self.calibration.batch(rows, self.device))
        parts: list[Tensor | None] = []
        for index, part in enumerate(self._chunks):
            if self.ranks is not None and not self.ranks.owns(index):
                parts.append(None)  # another rank's chunk: filled in by combine below
                continue
            members = masks[part]
            out = self.space.run(self.model, members, batch)
            parts.append(out.view(members.shape[0], -1, out.shape[-1]))
        if self.ranks is None:
            return torch.cat([p for p in parts if p is not None])
        shape = (masks.shape[0], rows.numel(), self.components.num_classes)
        shared = torch.zeros(shape, dtype=self._dtype, device=self.device)
        for part, mine in zip(self._chunks, parts, strict=True):
            if mine is not None:
                shared[part] = mine.detach()
        self.ranks.combine(shared)  # every chunk's logits, each from its owner
        pairs = zip(self._chunks, parts, strict=True)
        return torch.cat([shared[part] if mine is None else mine for part, mine in pairs])

    def _loss(self, logits: Tensor, rows: Tensor) -> Tensor:
        return objective_loss(
            self.config.objective,
            logits.float(),
            self._targets(rows),
            self.components,
            temperature=self.config.temperature,
        )

    @property
    def sparsity(self) -> float:
        """The sparsity of the next step: ``config.sparsity``, reached over the first
        ``config.ramp`` steps along the cubic schedule ``s * (1 - (1 - t / ramp) ** 3)``
        (gradual pruning: the masks start from the whole network and lose units while the
        objective still sees every decision)."""
        ramp = self.config.ramp
        if self.steps_taken >= ramp:
            return self.config.sparsity
        return self.config.sparsity * (1 - (1 - (self.steps_taken + 1) / ramp) ** 3)

    @property
    def ramped(self) -> bool:
        """Whether the masks are at the target sparsity (validation compares only those)."""
        return self.steps_taken >= self.config.ramp

    def keep_fraction(self, sparsity: float) -> Tensor:
        """``[blocks]`` the share of its units (of its parameters, under ``"params"``
        allocation) each quota block keeps at ``sparsity``."""
        if self._param_share is not None:
            return torch.tensor([1 - sparsity], device=self.device)
        keeps = self.space.quota_keeps(sparsity, self.config.allocation)
        return torch.tensor(
            [k / c.numel() for k, c in zip(keeps, self._block_columns, strict=True)],
            device=self.device,
        )

    def step(self) -> float:
        """One optimisation step on a random batch of the training rows; returns the loss."""
        config = self.config
        size = min(config.batch_size, self.train_rows.numel())
        pick = torch.randint(0, self.train_rows.numel(), (size,), generator=self.generator)
        rows = self.train_rows[pick]
        self.optimiser.zero_grad(set_to_none=True)
        sparsity = self.sparsity
        probs = torch.sigmoid(self.logits)
        hard = self.space.binarise(self.logits.detach(), sparsity, config.allocation)
        masks = straight_through(hard, probs, self._dtype)  # hard forward
        loss = self._loss(self._component_logits(masks, rows), rows)
        if self._param_share is not None:
            kept = (probs @ self._param_share)[:, None]
        else:
            kept = torch.stack([probs[:, columns].mean(1) for columns in self._block_columns], 1)
        target = self._target_keep if self.ramped else self.keep_fraction(sparsity)
        penalty = (kept - target).pow(2).sum(1).mean()
        total = loss + config.sparsity_weight * penalty
        if self._overlap_limit is not None and masks.shape[0] > 1:
            total = total + config.overlap_weight * overlap_excess(masks, self._overlap_limit)
        total.backward()
        if self.ranks is not None:
            grad = self.logits.grad
            assert grad is not None
            grad[~self._owned.to(grad.device)] = 0.0  # each row's gradient from its owner
            self.ranks.combine(grad)
        self.optimiser.step()
        self.steps_taken += 1
        return float(total.detach())

    @torch.no_grad()
    def validation(self) -> tuple[float, float]:
        """The current hard masks on the held-out rows: the share of data samples among them
        whose decomposed prediction differs from the model's (what the contract counts;
        weighted as in the objective, boundary samples by ``boundary_weight``), and the
        objective on every row. Mined points do not count as flips: they sit on the
        boundary, where the model's own decision is a coin toss between two classes, and
        with their weight they made the share noise (digits MLP: a run stopped at step 25,
        held-out Dis 0.15 against 0.02 by the objective)."""
        if self.validation_rows is None:
            raise ValueError("validation: only runs with steps='auto' hold rows out")
        config = self.config
        masks = self.space.binarise(self.logits, config.sparsity, config.allocation).float()
        loss, weight, flips, samples = 0.0, 0.0, 0.0, 0.0
        for start in range(0, self.validation_rows.numel(), config.batch_size):
            rows = self.validation_rows[start : start + config.batch_size]
            logits = self._component_logits(masks, rows).float()
            weights = self.weights[rows]
            loss += float(self._loss(logits, rows)) * float(weights.sum())
            weight += float(weights.sum())
            flipped = self.components.predict(logits).cpu() != self.reference[rows].argmax(1)
            natural = self.natural[rows]
            flips += float(weights[flipped & natural].sum())
            samples += float(weights[natural].sum())
        return flips / max(samples, 1e-12), loss / weight


#: Activation elements one masked pass may produce before components are split into chunks.
ACTIVATION_BUDGET = 1 << 22


def auto_chunk(model: nn.Module, space: MaskSpace, k: int, config: LBMaskConfig) -> int:
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
    per_component = elements / rows * config.batch_size
    largest = max(1, min(k, int(ACTIVATION_BUDGET // max(per_component, 1))))
    # equal chunks: uneven ones alternate two batch shapes, which measured slower for convs
    return math.ceil(k / math.ceil(k / largest))
