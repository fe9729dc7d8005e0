"""The contract report: every measured value, threshold and verdict, and its JSON form.

Torch-free. Its renderings are :mod:`saved.report.rich` (the terminal) and
:mod:`saved.report.html` (the page); its text (``summary_line``, ``explain``,
``sample_advice``, ``training_note``, ``separation_line``) is here, one place for the
assertion, the terminal summary and both renderings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from ..bounds import Bound, Contract, plan_samples, upper_bound

__all__ = [
    "BlockRow",
    "ClassRow",
    "ContractReport",
    "Counterexample",
    "MarginBin",
    "SampleSplit",
    "Separation",
    "StopReason",
    "Training",
]

#: 2 added the binomial bound, per-class upper bounds and the sample split; 3 how mask
#: learning ended (``training``); 4 the disagreement by margin decile (``margin_profile``).
#: Versions 2 and 3 are still read (without what came later).
#: 5 the per-block profile and the separation depth as fields of their own (``blocks``,
#: ``separation``; before, under ``extra``).
REPORT_VERSION = 5
_READABLE_VERSIONS = (2, 3, 4, 5)

_SPLIT_TEXT = {
    "held-out": "certified on held-out samples the decomposition never saw",
    "calibration": "decomposed on the calibration data, certified on all of the data",
    "same-samples": "decomposed and certified on the same samples (the paper's Algorithm 1): "
    "Dis is optimistic and the bound assumes an independence that does not hold",
    "unknown": "the samples the decomposition used were not recorded",
}


@dataclass(frozen=True)
class SampleSplit:
    """Which samples learned the decomposition and which certified it.

    ``mode``: ``"held-out"`` (one data set split, seeded and stratified by the reference
    prediction), ``"calibration"`` (separate decomposition data), ``"same-samples"`` (the
    paper's literal Algorithm 1) or ``"unknown"`` (:func:`saved.evaluate` called directly).
    ``disjoint`` is None when it was not checked.
    """

    mode: str
    n_decomposition: int | None
    n_evaluation: int
    disjoint: bool | None

    def describe(self) -> str:
        sizes = f"{self.n_decomposition} decomposition / {self.n_evaluation} evaluation samples"
        if self.n_decomposition is None:
            sizes = f"{self.n_evaluation} evaluation samples"
        disjoint = {True: ", disjoint", False: ", NOT disjoint", None: ""}[self.disjoint]
        return f"{_SPLIT_TEXT.get(self.mode, self.mode)} ({sizes}{disjoint})"


@dataclass(frozen=True)
class ClassRow:
    """Boundary disagreement among boundary samples the reference model puts in one class."""

    class_index: int
    n_boundary: int
    disagreement: float | None  # None when no boundary sample has this class
    upper_bound: float | None = None  # simultaneous over classes (Bonferroni), at 1 - delta


@dataclass(frozen=True)
class Counterexample:
    """A boundary sample where the decomposed prediction differs from the reference."""

    index: int  # position in the evaluated data
    reference: int  # y(x)
    decomposed: int  # y_dec(x)
    margin: float  # m(x), the reference logit margin
    label: int | None = None  # ground truth, when labels were given


@dataclass(frozen=True)
class MarginBin:
    """The evaluated samples of one margin decile (``index`` 0: the lowest margins) and how
    many of them the decomposition decides differently
    (:func:`saved.contract.disagreement_by_margin`)."""

    index: int
    n_samples: int
    n_disagreements: int
    margin_low: float
    margin_high: float

    @property
    def disagreement(self) -> float:
        return self.n_disagreements / self.n_samples


#: Why mask learning ended: the fixed step count, no held-out improvement for ``patience``
#: measurements, the step cap, or the time budget.
StopReason = Literal["steps", "converged", "max_steps", "time_budget"]


@dataclass(frozen=True)
class Training:
    """How mask learning ended (LBMask; scored methods learn nothing and have none)."""

    steps_run: int
    best_step: int
    stopped: StopReason
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Training:
        return cls(values["steps_run"], values["best_step"], values["stopped"], values["seconds"])


@dataclass(frozen=True)
class BlockRow:
    """One block of a structured decomposition (:func:`saved.profile.block_profile`): its
    units, each component's kept share of their parameters, and the largest and the mean
    pairwise Jaccard overlap of the components' supports within it."""

    block: str
    units: int
    kept: list[float]
    max_overlap: float
    mean_overlap: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Separation:
    """Where the supports part ways (:func:`saved.profile.separation`): the block whose mean
    overlap drops most below the one before it (``before`` and ``after`` are the two blocks'
    mean overlaps)."""

    block: str
    depth: int  # the block's position in depth order, from 0
    before: float
    after: float

    @property
    def drop(self) -> float:
        return self.before - self.after

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Separation:
        return cls(values["block"], values["depth"], values["before"], values["after"])


@dataclass(frozen=True)
class ContractReport:
    """The outcome of checking one decomposition against a :class:`Contract`.

    Counterexamples are sorted by margin, lowest first; at most ``MAX_COUNTEREXAMPLES`` are kept
    and ``n_counterexamples`` counts them all.
    """

    MAX_COUNTEREXAMPLES = 1000

    contract: Contract
    method: str
    n_samples: int
    n_boundary: int
    boundary_margin: float  # the largest margin inside B: the quantile in logit units
    disagreement: float
    hoeffding: float
    binomial: float  # Clopper–Pearson upper limit of the boundary disagreement at 1 - delta
    global_disagreement: float
    overlap: list[list[float]]
    sizes: list[float]
    confusion_deviation: float
    per_class: list[ClassRow]
    counterexamples: list[Counterexample]
    n_counterexamples: int
    split: SampleSplit | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: how mask learning ended (LBMask): ``steps_run``, ``best_step``, ``stopped`` ("steps",
    #: "converged", "max_steps" or "time_budget") and ``seconds``; None for scored methods
    training: Training | None = None
    #: disagreement in each margin decile of all evaluated samples, lowest margins first:
    #: whether a decomposition fails only on near-ties or everywhere (empty in reports older
    #: than version 4)
    margin_profile: list[MarginBin] = field(default_factory=list)
    #: structured decompositions: per block, the components' kept shares and the supports'
    #: overlaps, in depth order (empty for per-weight masks and in reports before version 5
    #: that lacked them)
    blocks: list[BlockRow] = field(default_factory=list)
    #: the block where the supports part ways (None: fewer than two blocks, or no drop)
    separation: Separation | None = None

    # ------------------------------------------------------------------ derived verdicts

    @property
    def bounds(self) -> dict[str, float]:
        """Both upper confidence limits of the boundary disagreement, by name."""
        return {"binomial": self.binomial, "hoeffding": self.disagreement + self.hoeffding}

    @property
    def semantic_bound(self) -> float:
        """The upper confidence limit the contract's ``bound`` names (``Dis + h`` or the
        Clopper–Pearson limit): true boundary disagreement is below it with probability at
        least ``1 - delta``, for samples independent of the decomposition."""
        return self.bounds[self.contract.bound]

    @property
    def bound_label(self) -> str:
        return "Dis + h" if self.contract.bound == "hoeffding" else "Clopper-Pearson upper"

    @property
    def semantic_holds(self) -> bool:
        return self.semantic_bound <= self.contract.eps

    @property
    def max_overlap(self) -> float:
        k = len(self.overlap)
        return max((self.overlap[i][j] for i in range(k) for j in range(k) if i != j), default=0.0)

    @property
    def structural_holds(self) -> bool:
        return self.max_overlap <= self.contract.gamma

    @property
    def prunes(self) -> list[float]:
        return [1.0 - size for size in self.sizes]

    @property
    def min_prune(self) -> float:
        return min(self.prunes)

    @property
    def reduction_holds(self) -> bool:
        return self.min_prune >= self.contract.eta

    @property
    def holds(self) -> bool:
        """True only when every axis holds at once."""
        return self.semantic_holds and self.structural_holds and self.reduction_holds

    @property
    def failed_axes(self) -> list[str]:
        verdicts = {
            "semantic": self.semantic_holds,
            "structural": self.structural_holds,
            "reduction": self.reduction_holds,
        }
        return [axis for axis, holds in verdicts.items() if not holds]

    @property
    def budget_limited(self) -> bool:
        """Mask learning was cut by its budget (``max_steps`` or ``time_budget``) while its
        held-out objective was still improving (the last measurement was the best): a longer
        run may lower Dis, so a semantic failure is the budget's as much as the model's."""
        training = self.training
        return (
            training is not None
            and training.stopped in ("max_steps", "time_budget")
            and training.best_step == training.steps_run
        )

    def training_note(self) -> str | None:
        """One line on how mask learning ended, with advice when it was cut while still
        improving; None for methods that learn nothing."""
        training = self.training
        if training is None:
            return None
        note = (
            f"mask learning: {training.steps_run} steps, best at {training.best_step}, "
            f"stopped ({training.stopped})"
        )
        if self.budget_limited:
            note += (
                " while still improving: a longer budget (LBMaskConfig(max_steps=...) or a "
                "larger time_budget) may lower Dis"
            )
        return note

    @property
    def class_summary(self) -> dict[str, ClassRow]:
        """Best, median (lower median) and worst class by their upper bound (simultaneous over
        classes, so "the worst class is below U" holds with probability ``1 - delta``), then
        by disagreement and class index."""
        present = sorted(
            (row for row in self.per_class if row.disagreement is not None),
            key=lambda row: (row.upper_bound or 0.0, row.disagreement, row.class_index),
        )
        if not present:
            return {}
        return {
            "best": present[0],
            "median": present[(len(present) - 1) // 2],
            "worst": present[-1],
        }

    # ------------------------------------------------------------------ text

    def summary_line(self) -> str:
        """One line: the method, each axis's figure against its threshold."""
        contract = self.contract
        return (
            f"[{self.method}] Dis {self.disagreement:.4f}, {contract.bound} upper "
            f"{self.semantic_bound:.4f} (eps {contract.eps:g}), overlap {self.max_overlap:.4f} "
            f"(gamma {contract.gamma:g}), min prune {self.min_prune:.4f} (eta {contract.eta:g})"
        )

    def explain(self, top: int = 5) -> str:
        """Why the contract fails: every failed axis with its numbers, the samples used, how
        many samples would pass when the bound rather than Dis failed, then the ``top``
        counterexamples (the message of the plugin's assertion)."""
        contract = self.contract
        lines = [
            f"decomposition contract violated ({self.method}; |B| = {self.n_boundary} boundary "
            f"samples of {self.n_samples}):"
        ]
        if not self.semantic_holds:
            other = "hoeffding" if contract.bound == "binomial" else "binomial"
            lines.append(
                f"  semantic: {self.bound_label} {self.semantic_bound:.4f} > eps = "
                f"{contract.eps:g} (Dis {self.disagreement:.4f} = {self.n_counterexamples} of "
                f"{self.n_boundary}; {other}: {self.bounds[other]:.4f})"
            )
            lines += self.sample_advice()
            margin_line = self.margin_line()
            if margin_line is not None:
                lines.append(f"    {margin_line}")
            advice = self.next_step()
            if advice is not None:
                lines.append(f"    {advice}")
        if not self.structural_holds:
            lines.append(
                f"  structural: max overlap {self.max_overlap:.4f} > gamma = {contract.gamma:g}"
            )
        if not self.reduction_holds:
            lines.append(f"  reduction: min prune {self.min_prune:.4f} < eta = {contract.eta:g}")
        if self.split is not None:
            lines.append(f"samples: {self.split.describe()}")
        note = self.training_note()
        if note is not None and not self.semantic_holds:
            lines.append(note)
        if self.counterexamples:
            lines.append(
                f"top counterexamples ({self.n_counterexamples} in all; index: original -> "
                "decomposed label, margin):"
            )
            for c in self.counterexamples[:top]:
                lines.append(
                    f"  {c.index}: {c.reference} -> {c.decomposed} (margin {c.margin:.4g})"
                )
        return "\n".join(lines)

    def next_step(self) -> str | None:
        """What to try when the components themselves change too many decisions (Dis above
        eps, not only its bound): one line, None otherwise (a bound that fails alone has
        :meth:`sample_advice`)."""
        if self.semantic_holds or self.disagreement <= self.contract.eps:
            return None
        return (
            "next: Dis itself is above eps; train the model with saved.BlockWiring (class "
            "blocks the components keep exactly; MLPs and CNNs) or saved.ModularityPenalty, or "
            "decompose at a lower sparsity"
        )

    def margin_line(self) -> str | None:
        """The disagreement by margin decile in one line, lowest margins first; None without
        a profile."""
        if not self.margin_profile:
            return None
        sizes = sorted({b.n_samples for b in self.margin_profile})
        size = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        rates = " ".join(f"{b.disagreement:.2f}" for b in self.margin_profile)
        return (
            f"Dis by margin decile, lowest margins first: {rates} (n = {size} each, "
            f"margins {self.margin_profile[0].margin_low:.3g} to "
            f"{self.margin_profile[-1].margin_high:.3g})"
        )

    def sample_advice(self) -> list[str]:
        """When the bound, not Dis, is what failed — Dis is within eps, or even Dis = 0 could
        not pass with this few boundary samples — the samples that would pass, under both
        bounds (:func:`saved.plan_samples`). Empty otherwise."""
        from dataclasses import replace

        contract = self.contract
        if self.disagreement < contract.eps:
            expected = self.disagreement
            lines = [
                f"    Dis is within eps but the data are too few to certify it at delta = "
                f"{contract.delta:g}; to pass at Dis = {expected:.4f}:"
            ]
        elif upper_bound(0, self.n_boundary, contract.delta, contract.bound) > contract.eps:
            expected = 0.0
            lines = [
                f"    too few boundary samples to ever pass: even Dis = 0 gives "
                f"{upper_bound(0, self.n_boundary, contract.delta, contract.bound):.4f} for "
                f"|B| = {self.n_boundary}; to pass at Dis = 0:"
            ]
        else:
            return []
        fraction = 0.5
        split = self.split
        if split is not None and split.mode == "held-out" and split.n_decomposition is not None:
            fraction = split.n_evaluation / (split.n_decomposition + split.n_evaluation)
        both: tuple[Bound, Bound] = ("binomial", "hoeffding")
        for name in sorted(both, key=lambda b: b != contract.bound):
            plan = plan_samples(
                replace(contract, bound=name), expected, evaluation_fraction=fraction
            )
            lines.append(
                f"      {name}: |B| >= {plan.n_boundary}, about {plan.n_samples} evaluated "
                f"samples at kappa = {contract.kappa:g} ({plan.n_with_holdout} in all with "
                f"{fraction:.2g} held out)"
            )
        return lines

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the measurements, plus the derived verdicts for readers."""
        data: dict[str, Any] = {"version": REPORT_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "contract":
                value = value.to_dict()
            elif f.name in ("per_class", "counterexamples"):
                value = [vars(item).copy() for item in value]
            elif f.name == "margin_profile":  # with each decile's rate, for readers of the JSON
                value = [{**vars(b), "disagreement": b.disagreement} for b in value]
            elif f.name == "split" and value is not None:
                value = vars(value).copy()
            elif f.name == "training" and value is not None:
                value = value.to_dict()
            elif f.name == "blocks":
                value = [row.to_dict() for row in value]
            elif f.name == "separation" and value is not None:
                value = value.to_dict()
            data[f.name] = value
        data["verdicts"] = {
            "bound": self.contract.bound,
            "semantic_bound": self.semantic_bound,
            "bounds": self.bounds,
            "semantic": self.semantic_holds,
            "max_overlap": self.max_overlap,
            "structural": self.structural_holds,
            "min_prune": self.min_prune,
            "reduction": self.reduction_holds,
            "holds": self.holds,
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContractReport:
        """Rebuild a report from :meth:`to_dict` output; derived verdicts are recomputed."""
        if data.get("version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"report: version {data.get('version')!r} is not one of {_READABLE_VERSIONS}; "
                "regenerate it with this version of saved"
            )
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["contract"] = Contract.from_dict(values["contract"])
        values["per_class"] = [ClassRow(**row) for row in values["per_class"]]
        values["counterexamples"] = [Counterexample(**c) for c in values["counterexamples"]]
        values["margin_profile"] = [
            MarginBin(**{k: v for k, v in b.items() if k != "disagreement"})
            for b in values.get("margin_profile", [])
        ]
        if values.get("split") is not None:
            values["split"] = SampleSplit(**values["split"])
        if data["version"] < 5:  # the profile lived under "extra" then
            extra = dict(values.get("extra", {}))
            values["blocks"] = extra.pop("blocks", None) or []
            values["separation"] = extra.pop("separation", None)
            values["extra"] = extra
        values["blocks"] = [BlockRow(**row) for row in values.get("blocks", [])]
        if values.get("training") is not None:
            values["training"] = Training.from_dict(values["training"])
        if values.get("separation") is not None:
            values["separation"] = Separation.from_dict(values["separation"])
        return cls(**values)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> ContractReport:
        return cls.from_dict(json.loads(text))

    def describe_samples(self) -> str:
        """Which samples decomposed and which certified, or that it was not recorded."""
        return self.split.describe() if self.split else _SPLIT_TEXT["unknown"]

    def other_bound(self) -> tuple[str, float]:
        """The bound the contract does not use, and its value (shown beside the one it does)."""
        other = "hoeffding" if self.contract.bound == "binomial" else "binomial"
        return other, self.bounds[other]

    def separation_line(self) -> str:
        """Where the supports part ways (:func:`saved.profile.separation`), in one sentence."""
        parted = self.separation
        if parted is None:
            return "the mean overlap never drops from one block to the next"
        return (
            f"supports part ways at {parted.block} (depth {parted.depth}): mean overlap "
            f"{parted.before:.3f} -> {parted.after:.3f}, the largest drop between blocks"
        )
