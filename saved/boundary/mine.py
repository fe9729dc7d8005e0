"""Mining's entry point: PGD then bisection over the data, chunk by chunk."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._progress import progress_bar
from .._runtime import frozen_eval, on_device, resolve_device
from ..contract import logit_margins
from ..distributed import ranks_for
from ..embedding import ContinuousForm, continuous_form
from ..inputs import DEFAULT_BATCH_SIZE, as_inputs, match_dtype
from .bisect import Pairs, bisect
from .config import BoundaryConfig, Plan, plan_for
from .pgd import pgd
from .result import BoundarySet
from .rows import call_model

__all__ = ["mine_boundary"]


@dataclass
class _Mined:
    """One chunk's outcome on the CPU, row for row (see :class:`BoundarySet`)."""

    ends: Tensor
    source: Tensor
    classes: Tensor
    flipped: Tensor
    refined: Tensor
    third: Tensor
    gap: Tensor
    steps: Tensor
    margins: Tensor
    logits: Tensor

    @classmethod
    def joined(cls, chunks: list[_Mined]) -> _Mined:
        return cls(
            **{
                item.name: torch.cat([getattr(chunk, item.name) for chunk in chunks])
                for item in dataclasses.fields(cls)
            }
        )


def mine_boundary(
    model: nn.Module,
    data: object,
    config: BoundaryConfig | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = False,
    targets: Tensor | None = None,
    reference: Tensor | None = None,
    distributed: bool | None = None,
) -> BoundarySet:
    """Mine boundary points around every sample of ``data`` (see :mod:`saved.boundary`).

    Args:
        model: the reference classifier; left exactly as it was (weights, mode, flags).
        data: any input form :func:`saved.as_inputs` accepts (labels are not used).
        config: the attack and bisection settings.
        batch_size: samples attacked together.
        device: where to run; the model's device by default.
        seed: seeds the random starts; same seed, same boundary set (on the CPU).
        progress: draw a progress bar on a terminal.
        targets: a class per sample to push toward (targeted PGD), instead of the runner-up.
        reference: the model's ``[n, C]`` logits on ``data`` when the caller has computed them
            (``decompose`` does): the clean pass over the data is then not repeated.
        distributed: split the batches across the ranks of torch.distributed (as in
            :func:`saved.decompose`); every rank returns the same set. Each batch draws its
            random starts from its own generator (seeded by ``seed`` and the batch's index), so
            the set does not depend on which process mined which batch.
    """
    config = config or BoundaryConfig()
    if targets is not None:
        config = dataclasses.replace(config, targeted=True)
    inputs = match_dtype(as_inputs(data), model)
    if targets is not None and tuple(targets.shape) != (len(inputs),):
        raise ValueError(
            f"targets: expected one class per sample ({len(inputs)}), got {tuple(targets.shape)}"
        )
    if reference is not None and (reference.dim() != 2 or reference.shape[0] != len(inputs)):
        raise ValueError(
            f"reference: expected [{len(inputs)}, C] logits of the data, got "
            f"{tuple(reference.shape)}"
        )
    ranks, run_on = ranks_for(distributed, resolve_device(model, device))
    runner_model = on_device(model, run_on)
    form = continuous_form(runner_model, inputs)
    miner = _Miner(runner_model, form, config, plan_for(config, form), run_on, seed)
    n = len(inputs)
    mined: dict[int, _Mined] = {}
    progress = progress and (ranks is None or ranks.leader)
    # text chunks by length, so that each runs at its own longest text, not the data set's
    # (MiniLM, 1,000 Debian texts: mining 105 s in data order); the set keeps the data's order
    order = form.inputs.length_order()
    if order is None:
        order = torch.arange(n)
    with frozen_eval(runner_model), progress_bar("Mining boundary", n, progress) as advance:
        for index, start in enumerate(range(0, n, batch_size)):
            chunk = order[start : start + batch_size]
            if ranks is None or ranks.owns(index):
                mined[index] = miner.chunk(
                    chunk,
                    None if reference is None else reference[chunk],
                    None if targets is None else targets[chunk],
                    index,
                )
            advance(chunk.numel())
    if ranks is not None:  # every rank's batches, and the iterations they ran, on every rank
        parts = ranks.gather((mined, miner.pgd_steps, miner.bisection_steps))
        mined = {index: part for share, _, _ in parts for index, part in share.items()}
        miner.pgd_steps = sum(pgd_steps for _, pgd_steps, _ in parts)
        miner.bisection_steps = sum(steps for _, _, steps in parts)
    joined = _Mined.joined([mined[index] for index in sorted(mined)])
    in_order = torch.argsort(joined.source)
    joined = _Mined(**{k: getattr(joined, k)[in_order] for k in vars(joined)})
    base = form.inputs.without_labels()
    return BoundarySet(
        inside=base.replace(form.field, joined.ends[:, 0]),
        outside=base.replace(form.field, joined.ends[:, 1]),
        source=joined.source,
        classes=joined.classes,
        flipped=joined.flipped,
        refined=joined.refined,
        third_class=joined.third,
        gaps=joined.gap,
        steps=joined.steps,
        margins=joined.margins,
        field=form.field,
        pgd_steps_run=miner.pgd_steps,
        bisection_steps_run=miner.bisection_steps,
        logits=joined.logits,
    )


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index``'s random starts: distinct per batch, fixed per ``seed``."""
    return (seed * 1_000_003 + index) % (2**63)


@dataclass
class _Miner:
    """One mining run's fixed parts, and the iterations it has run so far."""

    model: nn.Module
    form: ContinuousForm
    config: BoundaryConfig
    plan: Plan
    device: torch.device
    seed: int
    pgd_steps: int = 0
    bisection_steps: int = 0

    def chunk(
        self, rows: Tensor, known: Tensor | None, targets: Tensor | None, index: int
    ) -> _Mined:
        """PGD, then bisection of the pairs that flipped, on the samples ``rows`` (batch
        ``index``: it seeds the random starts); ``known``: their logits if the caller has them;
        ``targets``: their classes for targeted PGD."""
        model, form, config = self.model, self.form, self.config
        generator = torch.Generator().manual_seed(batch_seed(self.seed, index))
        others = form.inputs.fields_at(rows, self.device)
        x0 = others.pop(form.field)
        if known is not None:
            clean = known.to(self.device).float()
        else:
            with torch.no_grad():
                clean = call_model(model, form, others, x0).float()
        top2 = clean.topk(2, dim=1).indices
        reference, goal = top2[:, 0], top2[:, 1]
        if targets is not None:
            goal = targets.to(self.device)
        adversarial, iterations = pgd(
            model, form, others, x0, reference, goal, config, self.plan, generator
        )
        self.pgd_steps += iterations
        with torch.no_grad():
            logits_adv = call_model(model, form, others, adversarial).float()
        flipped = logits_adv.argmax(dim=1) != reference
        classes = torch.stack([reference, logits_adv.argmax(dim=1)], dim=1)
        pairs = Pairs(
            ends=torch.stack([x0, adversarial], dim=1),
            classes=classes,
            gap=torch.full_like(reference, math.inf, dtype=torch.float32),
            third=torch.zeros_like(flipped),
            steps=torch.zeros_like(reference),
        )
        pair = torch.nonzero(flipped).flatten()
        if pair.numel():
            both = torch.stack([clean[pair], logits_adv[pair]], dim=1)
            refined_pairs, used = bisect(
                model,
                form,
                pairs.ends[pair],
                both.softmax(dim=2),
                classes[pair],
                {key: value[pair] for key, value in others.items()},
                config,
            )
            self.bisection_steps += used
            for item in dataclasses.fields(Pairs):
                getattr(pairs, item.name)[pair] = getattr(refined_pairs, item.name)
        # margins and the two-sided class check: the ends PGD left alone (pairs that did not
        # flip) have their logits already; one fresh pass over both ends of the rest
        m = rows.numel()
        logits_ends = torch.stack([clean, logits_adv], dim=1)  # [m, 2, C]
        if pair.numel():
            twice = {key: torch.cat([value[pair], value[pair]]) for key, value in others.items()}
            moved = pairs.ends[pair].transpose(0, 1).flatten(0, 1)
            with torch.no_grad():
                fresh = call_model(model, form, twice, moved).float()
            logits_ends[pair] = fresh.view(2, pair.numel(), -1).transpose(0, 1)
        margins = logit_margins(logits_ends.flatten(0, 1)).view(m, 2)
        predicted = logits_ends.argmax(dim=2)
        refined = flipped & (pairs.gap < config.tol) & (predicted == pairs.classes).all(1)
        return _Mined(
            ends=pairs.ends.cpu(),
            source=rows,
            classes=pairs.classes.cpu(),
            flipped=flipped.cpu(),
            refined=refined.cpu(),
            third=pairs.third.cpu(),
            gap=pairs.gap.cpu(),
            steps=pairs.steps.cpu(),
            margins=margins.cpu(),
            logits=logits_ends.cpu(),
        )
