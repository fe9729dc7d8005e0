"""Phase 2 of SAVED: boundary-aware input generation (PGD, then bisection to the boundary).

The contract is about behaviour where decisions change, and data rarely sits there. For each
sample ``x`` with reference class ``a = y(x)``:

1. **PGD** (l_inf or l_2 ball of radius r around x, projected and clamped to the input domain)
   looks for ``x_adv`` with ``y(x_adv) = b != a`` (untargeted, or targeted at the runner-up
   class). A sample stops moving as soon as it flips, so ``x_adv`` sits just past the boundary.
2. **Bisection** of every flipped pair ``(x_lo, x_hi) = (x, x_adv)``: ``x_mid = (x_lo + x_hi)/2``
   replaces the end whose class it shares. A pair stops when the softmax gap between its two
   classes, ``max(p_a(x_lo) - p_b(x_lo), p_b(x_hi) - p_a(x_hi))``, is below ``tol``, or after
   ``max_steps`` (so it always terminates). After B steps the ends are ``2^-B`` of the original
   segment apart, and both are boundary points.

   Third class rule: when ``x_mid`` falls into a class ``c`` not in ``{a, b}``, the segment
   ``[x_lo, x_mid]`` still straddles a boundary of ``a`` (between a and c), so the pair becomes
   ``(a, c)`` with ``x_hi = x_mid`` and bisection goes on; the pair is flagged ``third_class``.

Text models are perturbed in the word-embedding space (``inputs_embeds``; padding positions
never move); the boundary points are then embeddings, and so is the calibration set.
Everything is batched: one forward (+ one input-gradient backward for PGD) per step for all
pairs still active, no Python loop over samples.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ._progress import progress_bar
from ._runtime import forward_logits, frozen_eval, on_device, resolve_device
from ._validation import check_count, check_positive
from .contract import logit_margins
from .embedding import ContinuousForm, continuous_form
from .inputs import DEFAULT_BATCH_SIZE, Inputs, as_inputs, match_dtype

__all__ = [
    "BoundaryConfig",
    "BoundarySet",
    "calibration_set",
    "calibration_sources",
    "concrete_config",
    "mine_boundary",
]

Norm = Literal["inf", "2"]


@dataclass(frozen=True)
class BoundaryConfig:
    """How boundary points are mined.

    Args:
        norm: ``"inf"`` (l_inf ball, sign steps) or ``"2"`` (l_2 ball, normalised steps).
        radius: ball radius in input units; ``None`` picks ``relative_radius`` times the data's
            scale (the standard deviation of the perturbed values, times ``sqrt(d)`` for l_2
            with ``d`` values per sample).
        relative_radius: the radius as a multiple of the data's scale when ``radius`` is None.
        step_size: PGD step; ``None`` is ``2.5 * radius / steps`` (the usual choice, which lets
            a sample cross the whole ball).
        steps: PGD iterations (>= 1).
        random_start: start from a uniform point in the ball rather than from ``x``.
        targeted: push toward the runner-up class instead of away from the predicted one.
        tol: bisection stops once the pair's softmax gap is below this (> 0).
        max_steps: bisection step cap (>= 1): mining always ends.
        domain: ``"auto"`` clamps to the data's own [min, max] (not for embeddings, which have
            no box domain); a ``(low, high)`` pair clamps to it; ``None`` never clamps.
    """

    norm: Norm = "inf"
    radius: float | None = None
    relative_radius: float = 1.0
    step_size: float | None = None
    steps: int = 20
    random_start: bool = True
    targeted: bool = False
    tol: float = 1e-4
    max_steps: int = 30
    domain: tuple[float, float] | Literal["auto"] | None = "auto"

    def __post_init__(self) -> None:
        aliases: dict[object, str] = {"inf": "inf", "2": "2", math.inf: "inf", 2: "2"}
        norm = None if isinstance(self.norm, bool) else aliases.get(self.norm)
        if norm is None:
            raise ValueError(f"norm: expected 'inf' or '2', got {self.norm!r}")
        object.__setattr__(self, "norm", norm)
        if self.radius is not None:
            check_positive("radius", self.radius)
        if self.relative_radius is not None:
            check_positive("relative_radius", self.relative_radius)
        if self.step_size is not None:
            check_positive("step_size", self.step_size)
        if self.tol is not None:
            check_positive("tol", self.tol)
        check_count("steps", self.steps)
        check_count("max_steps", self.max_steps)
        if isinstance(self.domain, tuple):
            low, high = (float(bound) for bound in self.domain)
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(
                    f"domain: expected finite (low, high) with low < high, got {self.domain!r}"
                )
            object.__setattr__(self, "domain", (low, high))
        elif self.domain not in ("auto", None):
            raise ValueError(f"domain: expected 'auto', None or (low, high), got {self.domain!r}")


@dataclass(frozen=True)
class BoundarySet:
    """The outcome of mining, one row per attacked sample.

    ``inside`` holds ``x_lo`` (class ``classes[:, 0]``, the sample's own) and ``outside`` holds
    ``x_hi`` (class ``classes[:, 1]``), both in the perturbed input form (embeddings for text).
    For a sample that never flipped both are its last PGD iterate and ``refined`` is False.
    """

    inside: Inputs
    outside: Inputs
    source: Tensor  # [m] index of the attacked sample in the data
    classes: Tensor  # [m, 2] (a, b)
    flipped: Tensor  # [m] PGD found a different class
    refined: Tensor  # [m] bisection reached gap < tol
    third_class: Tensor  # [m] a midpoint fell into a third class (pair retargeted)
    gaps: Tensor  # [m] final softmax gap of the pair (inf if never flipped)
    steps: Tensor  # [m] bisection steps the pair used
    margins: Tensor  # [m, 2] logit margins of x_lo and x_hi
    field: str  # the perturbed input field
    pgd_steps_run: int  # PGD iterations executed (each: one forward + backward)
    bisection_steps_run: int  # bisection iterations executed (each: one forward)
    logits: Tensor | None = None  # [m, 2, C] logits of x_lo and x_hi (float32, CPU)

    def __len__(self) -> int:
        return int(self.source.numel())

    @property
    def flip_rate(self) -> float:
        return float(self.flipped.double().mean())

    @property
    def refined_rate(self) -> float:
        """Refined pairs among flipped ones (0 when nothing flipped)."""
        flipped = int(self.flipped.sum())
        return float(self.refined.sum()) / flipped if flipped else 0.0

    def points(self, refined_only: bool = True) -> Inputs:
        """Both ends of every refined (or every flipped) pair: the boundary points."""
        keep = torch.nonzero(self.refined if refined_only else self.flipped).flatten()
        if keep.numel() == 0:
            raise ValueError("boundary: no pair reached the boundary; nothing to return")
        return self.inside.select(keep).concat(self.outside.select(keep))

    def point_logits(self, refined_only: bool = True) -> Tensor | None:
        """The model's logits on :meth:`points`, row for row (``None`` if not recorded)."""
        if self.logits is None:
            return None
        keep = torch.nonzero(self.refined if refined_only else self.flipped).flatten()
        return torch.cat([self.logits[keep, 0], self.logits[keep, 1]])


def calibration_set(data: Inputs, boundary: BoundarySet, model: nn.Module) -> Inputs:
    """``S ∪ boundary points``, in the perturbed form (embeddings for text), without labels."""
    form = continuous_form(model, data)
    return form.inputs.without_labels().concat(boundary.points())


def calibration_sources(num_samples: int, boundary: BoundarySet) -> Tensor:
    """For each row of :func:`calibration_set`, the index of the data sample it comes from:
    the samples themselves, then the attacked sample of each boundary point."""
    refined = boundary.source[boundary.refined]
    return torch.cat([torch.arange(num_samples), refined, refined])


# --------------------------------------------------------------------------- helpers


def _per_sample_norm(tensor: Tensor) -> Tensor:
    return tensor.flatten(1).norm(dim=1).view(-1, *([1] * (tensor.dim() - 1)))


def _project(delta: Tensor, radius: float, norm: Norm) -> Tensor:
    if norm == "inf":
        return delta.clamp(-radius, radius)
    return delta * (radius / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)


def _random_start(
    shape: torch.Size, radius: float, norm: Norm, generator: torch.Generator
) -> Tensor:
    if norm == "inf":
        return (torch.rand(shape, generator=generator) * 2 - 1) * radius
    direction = torch.randn(shape, generator=generator)
    direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
    scale = torch.rand(shape[0], generator=generator).view(-1, *([1] * (len(shape) - 1)))
    return direction * radius * scale


def _broadcast_mask(mask: Tensor | None, like: Tensor) -> Tensor | None:
    if mask is None:
        return None
    mask = mask.to(like.device, like.dtype)
    return mask.view(*mask.shape, *([1] * (like.dim() - mask.dim())))


@dataclass(frozen=True)
class _Plan:
    radius: float
    step_size: float
    domain: tuple[float, float] | None


def concrete_config(model: nn.Module, data: object, config: BoundaryConfig) -> BoundaryConfig:
    """``config`` with the radius, step and domain it would take on ``data`` made explicit, so
    that mining a few samples later uses the scale of the whole data set."""
    plan = _plan(config, continuous_form(model, as_inputs(data)))
    return dataclasses.replace(
        config, radius=plan.radius, step_size=plan.step_size, domain=plan.domain
    )


def _plan(config: BoundaryConfig, form: ContinuousForm) -> _Plan:
    values = form.inputs.fields[form.field]
    if form.position_mask is not None:
        keep = _broadcast_mask(form.position_mask, values)
        assert keep is not None
        selected = values.masked_select(keep.expand_as(values).bool())
    else:
        selected = values.flatten()
    if config.radius is not None:
        radius = float(config.radius)
    else:
        scale = float(selected.float().std()) if selected.numel() > 1 else 1.0
        if config.norm == "2":
            scale *= math.sqrt(values[0].numel())
        radius = config.relative_radius * (scale if scale > 0 else 1.0)
    step = config.step_size if config.step_size is not None else 2.5 * radius / config.steps
    domain: tuple[float, float] | None
    if config.domain == "auto":
        domain = None if form.embedded else (float(selected.min()), float(selected.max()))
    else:
        domain = config.domain
    return _Plan(radius, float(step), domain)


def _compact(
    state: dict[str, Tensor], done: Tensor, results: dict[str, Tensor], *, share: float = 0.0
) -> dict[str, Tensor]:
    """Write the finished rows of ``state`` into ``results`` (at ``state["row"]``), drop them.

    Only done once at least ``share`` of the rows are finished: until then the loops keep
    finished rows frozen in place. Compacting every time a row finishes costs a dozen index
    operations per iteration, which on small models outweighs the forward pass itself
    (measured with benchmarks/boundary.py); at ``share = 0.5`` it happens O(log n) times while
    the model never sees more than twice the rows still at work.
    """
    finished = int(done.sum())
    if finished == 0 or finished < share * done.numel():
        return state
    rows = state["row"][done]
    for key, out in results.items():
        out[rows] = state[key][done]
    keep = ~done
    return {key: value[keep] for key, value in state.items()}


_COMPACT_SHARE = 0.5
_EXTRA = "field:"


def _call(
    model: nn.Module, form: ContinuousForm, state: dict[str, Tensor], values: Tensor
) -> Tensor:
    """The model's logits with the perturbed field set to ``values`` and the rows' other fields."""
    fields = {k[len(_EXTRA) :]: v for k, v in state.items() if k.startswith(_EXTRA)}
    fields[form.field] = values
    return forward_logits(model, form.inputs.as_batch(fields))


def _pgd(
    model: nn.Module,
    form: ContinuousForm,
    extra: dict[str, Tensor],
    x0: Tensor,
    reference: Tensor,
    goal: Tensor,
    config: BoundaryConfig,
    plan: _Plan,
    generator: torch.Generator,
) -> tuple[Tensor, int]:
    """PGD on one chunk: the last iterate of every row (the first that flipped, for rows that
    flipped) and the number of iterations run (each one forward + input-gradient backward)."""
    keep = _broadcast_mask(extra.get(_EXTRA + "attention_mask"), x0) if form.embedded else None
    state: dict[str, Tensor] = {"row": torch.arange(x0.shape[0], device=x0.device), **extra}
    if config.norm == "inf":
        # the l_inf ball intersected with the domain is a box: one clamp projects onto it
        radius = plan.radius if keep is None else plan.radius * keep
        state["lower"], state["upper"] = x0 - radius, x0 + radius
        if plan.domain is not None:
            state["lower"] = state["lower"].clamp_min(plan.domain[0])
            state["upper"] = state["upper"].clamp_max(plan.domain[1])
    else:
        state["x0"] = x0
        if keep is not None:
            state["keep"] = keep

    def project(point: Tensor, rows: dict[str, Tensor]) -> Tensor:
        if config.norm == "inf":
            return torch.clamp(point, rows["lower"], rows["upper"])
        origin, mask = rows["x0"], rows.get("keep")
        delta = point - origin
        point = origin + _project(delta if mask is None else delta * mask, plan.radius, "2")
        # clamping coordinates into the box only shrinks |delta|: the point stays in the ball
        return point if plan.domain is None else point.clamp(*plan.domain)

    start = (
        _random_start(x0.shape, plan.radius, config.norm, generator).to(x0.device, x0.dtype)
        if config.random_start
        else torch.zeros_like(x0)
    )
    state["point"] = project(x0 + start, state)
    if config.targeted:
        state["goal"] = goal
    else:
        state["reference"] = reference
    results = {"point": x0.clone()}
    iterations = 0
    while iterations < config.steps and state["row"].numel():
        iterations += 1
        point = state["point"].requires_grad_(True)
        logits = _call(model, form, state, point)
        if config.targeted:
            loss = -nn.functional.cross_entropy(logits, state["goal"], reduction="sum")
            flipped = logits.argmax(dim=1) != reference[state["row"]]
        else:
            loss = nn.functional.cross_entropy(logits, state["reference"], reduction="sum")
            flipped = logits.argmax(dim=1) != state["reference"]
        (gradient,) = torch.autograd.grad(loss, point)
        point = point.detach()
        if config.norm == "inf":
            direction = gradient.sign()
        else:
            direction = gradient / _per_sample_norm(gradient).clamp_min(1e-12)
        stepped = project(torch.add(point, direction, alpha=plan.step_size), state)
        # flipped rows stay at the point that flipped (lerp with weight 1 returns it exactly)
        frozen = flipped.to(point.dtype).view(-1, *([1] * (point.dim() - 1)))
        state["point"] = torch.lerp(stepped, point, frozen)
        state = _compact(state, flipped, results, share=_COMPACT_SHARE)
    _compact(state, torch.ones_like(state["row"], dtype=torch.bool), results)
    return results["point"], iterations


def _softmax(logits: Tensor, top: Tensor) -> Tensor:
    """Softmax over classes given each row's maximum ``top``.

    Written out: ATen's softmax kernel is several times slower than these element-wise ops on
    the narrow ``[pairs, classes]`` tensors of the bisection loop (measured on the CPU).
    """
    exp = (logits - top[:, None]).exp()
    return exp / exp.sum(dim=1, keepdim=True)


def _pair_gap(probs: Tensor, classes: Tensor) -> Tensor:
    """``max(p_a(x_lo) - p_b(x_lo), p_b(x_hi) - p_a(x_hi))``.

    Args:
        probs: ``[n, 2, C]`` softmax at ``x_lo`` (index 0) and ``x_hi`` (index 1).
        classes: ``[n, 2]`` the pair's classes ``a, b``.
    """
    at = probs.gather(2, classes[:, None, :].expand(-1, 2, -1))  # p_a, p_b at both ends
    a_minus_b = at[..., 0] - at[..., 1]
    return torch.maximum(a_minus_b[:, 0], -a_minus_b[:, 1])


def _bisect(
    model: nn.Module, form: ContinuousForm, pairs: dict[str, Tensor], config: BoundaryConfig
) -> tuple[dict[str, Tensor], int]:
    """Vectorised bisection of flipped pairs.

    ``pairs`` holds ``ends`` (``[n, 2, ...]``: x_lo, x_hi of the perturbed field), ``probs``
    (``[n, 2, C]``: softmax at both ends), ``classes`` (``[n, 2]``: a, b) and the pairs' other
    input fields. Returns the final ``ends``, ``classes``, ``gap``, ``third`` and ``steps``, and
    the number of iterations run.
    """
    n = pairs["classes"].shape[0]
    device = pairs["classes"].device
    gap = _pair_gap(pairs["probs"], pairs["classes"])
    state = {
        **pairs,
        "row": torch.arange(n, device=device),
        "gap": gap,
        "third": torch.zeros(n, dtype=torch.bool, device=device),
        "steps": torch.zeros(n, dtype=torch.long, device=device),
        "active": gap >= config.tol,
    }
    results = {key: state[key].clone() for key in ("ends", "classes", "gap", "third", "steps")}
    state = _compact(state, ~state["active"], results, share=_COMPACT_SHARE)
    iterations = 0
    for _ in range(config.max_steps):
        if state["row"].numel() == 0:
            break
        iterations += 1
        ends, classes, active = state["ends"], state["classes"], state["active"]
        mid = ends.mean(dim=1)
        with torch.no_grad():
            logits = _call(model, form, state, mid).float()
        top = logits.max(dim=1)
        to_lo = (top.indices == classes[:, 0]) & active
        to_hi = active ^ to_lo  # active pairs whose midpoint is not in class a
        # lerp with weight exactly 0 or 1 returns one end unchanged: a branch-free select of
        # which end the midpoint replaces, for the points and for their probabilities at once
        weight = torch.stack([to_lo, to_hi], dim=1).float()
        end_weight = weight.view(*weight.shape, *([1] * (mid.dim() - 1))).to(mid.dtype)
        state["ends"] = torch.lerp(ends, mid[:, None], end_weight)
        probs = _softmax(logits, top.values)
        state["probs"] = torch.lerp(state["probs"], probs[:, None], weight[..., None])
        # a midpoint outside {a, b} becomes the new b: [x_lo, x_mid] straddles a's boundary
        new_b = torch.where(to_hi, top.indices, classes[:, 1])
        state["third"] = state["third"] | (new_b != classes[:, 1])
        state["classes"] = torch.stack([classes[:, 0], new_b], dim=1)
        state["steps"] = state["steps"] + active
        state["gap"] = _pair_gap(state["probs"], state["classes"])
        state["active"] = active & (state["gap"] >= config.tol)
        state = _compact(state, ~state["active"], results, share=_COMPACT_SHARE)
    _compact(state, torch.ones_like(state["row"], dtype=torch.bool), results)
    return results, iterations


# --------------------------------------------------------------------------- entry point


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
) -> BoundarySet:
    """Mine boundary points around every sample of ``data`` (see the module docstring).

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
    known = reference  # the loop below names each chunk's reference classes ``reference``
    run_on = resolve_device(model, device)
    runner_model = on_device(model, run_on)
    form = continuous_form(runner_model, inputs)
    plan = _plan(config, form)
    generator = torch.Generator().manual_seed(seed)
    n = len(inputs)
    pieces: list[dict[str, Tensor]] = []
    pgd_steps = bisection_steps = 0
    with frozen_eval(runner_model), progress_bar("Mining boundary", n, progress) as advance:
        for start in range(0, n, batch_size):
            chunk = torch.arange(start, min(start + batch_size, n))
            fields = form.inputs.fields_at(chunk, run_on)
            x0 = fields.pop(form.field)
            extra = {_EXTRA + k: v for k, v in fields.items()}
            if known is not None:
                clean = known[chunk].to(run_on).float()
            else:
                with torch.no_grad():
                    clean = _call(runner_model, form, extra, x0).float()
            top2 = clean.topk(2, dim=1).indices
            reference, goal = top2[:, 0], top2[:, 1]
            if targets is not None:
                goal = targets[chunk].to(run_on)
            adversarial, iterations = _pgd(
                runner_model, form, extra, x0, reference, goal, config, plan, generator
            )
            pgd_steps += iterations
            with torch.no_grad():
                logits_adv = _call(runner_model, form, extra, adversarial).float()
            flipped = logits_adv.argmax(dim=1) != reference
            classes = torch.stack([reference, logits_adv.argmax(dim=1)], dim=1)
            piece = {
                "ends": torch.stack([x0, adversarial], dim=1),
                "classes": classes,
                "gap": torch.full_like(reference, math.inf, dtype=torch.float32),
                "third": torch.zeros_like(flipped),
                "steps": torch.zeros_like(reference),
            }
            pair = torch.nonzero(flipped).flatten()
            if pair.numel():
                both = torch.stack([clean[pair], logits_adv[pair]], dim=1)
                chosen = {
                    "ends": piece["ends"][pair],
                    "classes": classes[pair],
                    "probs": both.softmax(dim=2),
                    **{key: value[pair] for key, value in extra.items()},
                }
                refined_pairs, used = _bisect(runner_model, form, chosen, config)
                bisection_steps += used
                for key, value in refined_pairs.items():
                    piece[key][pair] = value
            # margins and the two-sided class check: the ends PGD left alone (pairs that did
            # not flip) have their logits already; one fresh pass over both ends of the rest
            m = chunk.numel()
            logits_ends = torch.stack([clean, logits_adv], dim=1)  # [m, 2, C]
            if pair.numel():
                twice = {key: torch.cat([value[pair], value[pair]]) for key, value in extra.items()}
                moved = piece["ends"][pair].transpose(0, 1).flatten(0, 1)
                with torch.no_grad():
                    fresh = _call(runner_model, form, twice, moved).float()
                logits_ends[pair] = fresh.view(2, pair.numel(), -1).transpose(0, 1)
            margins = logit_margins(logits_ends.flatten(0, 1)).view(m, 2)
            predicted = logits_ends.argmax(dim=2)
            refined = flipped & (piece["gap"] < config.tol) & (predicted == piece["classes"]).all(1)
            pieces.append(
                {
                    "ends": piece["ends"].cpu(),
                    "source": chunk,
                    "classes": piece["classes"].cpu(),
                    "flipped": flipped.cpu(),
                    "refined": refined.cpu(),
                    "third": piece["third"].cpu(),
                    "gap": piece["gap"].cpu(),
                    "steps": piece["steps"].cpu(),
                    "margins": margins.cpu(),
                    "logits": logits_ends.cpu(),
                }
            )
            advance(chunk.numel())
    joined = {key: torch.cat([piece[key] for piece in pieces]) for key in pieces[0]}
    base = form.inputs.without_labels()
    return BoundarySet(
        inside=base.replace(form.field, joined["ends"][:, 0]),
        outside=base.replace(form.field, joined["ends"][:, 1]),
        source=joined["source"],
        classes=joined["classes"],
        flipped=joined["flipped"],
        refined=joined["refined"],
        third_class=joined["third"],
        gaps=joined["gap"],
        steps=joined["steps"],
        margins=joined["margins"],
        field=form.field,
        pgd_steps_run=pgd_steps,
        bisection_steps_run=bisection_steps,
        logits=joined["logits"],
    )
