"""``assert_decomposable`` and ``ContractViolation``: the plugin's assertion."""

from __future__ import annotations

import platform
from typing import Any

from . import _session

__all__ = ["ContractViolation", "assert_decomposable", "format_violation"]


class ContractViolation(AssertionError):
    """The decomposition contract does not hold; ``report`` holds every measurement."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


def _resolve_contract(explicit: dict[str, Any], marker: dict[str, Any]) -> Any:
    from saved import Contract

    values = {**marker, **{k: v for k, v in explicit.items() if v is not None}}
    return Contract(**values)


def format_violation(report: Any, top: int = 5) -> str:
    """The failure message: every failed axis with its numbers, then the top counterexamples."""
    contract = report.contract
    lines = [
        f"decomposition contract violated ({report.method}; |B| = {report.n_boundary} boundary "
        f"samples of {report.n_samples}):"
    ]
    if not report.semantic_holds:
        other = "hoeffding" if contract.bound == "binomial" else "binomial"
        lines.append(
            f"  semantic: {report.bound_label} {report.semantic_bound:.4f} > eps = "
            f"{contract.eps:g} (Dis {report.disagreement:.4f} = {report.n_counterexamples} of "
            f"{report.n_boundary}; {other}: {report.bounds[other]:.4f})"
        )
        lines += _too_few_samples(report)
    if not report.structural_holds:
        lines.append(
            f"  structural: max overlap {report.max_overlap:.4f} > gamma = {contract.gamma:g}"
        )
    if not report.reduction_holds:
        lines.append(f"  reduction: min prune {report.min_prune:.4f} < eta = {contract.eta:g}")
    if report.split is not None:
        lines.append(f"samples: {report.split.describe()}")
    if report.counterexamples:
        lines.append(
            f"top counterexamples ({report.n_counterexamples} in all; index: original -> "
            "decomposed label, margin):"
        )
        for c in report.counterexamples[:top]:
            lines.append(f"  {c.index}: {c.reference} -> {c.decomposed} (margin {c.margin:.4g})")
    return "\n".join(lines)


def _too_few_samples(report: Any) -> list[str]:
    """When the bound, not Dis, is what failed — Dis is within eps, or even Dis = 0 could not
    pass with this few boundary samples — the samples that would pass, under both bounds
    (:func:`saved.plan_samples`). Empty otherwise."""
    from dataclasses import replace

    import saved
    from saved.contract import upper_bound

    contract = report.contract
    if report.disagreement < contract.eps:
        expected = report.disagreement
        lines = [
            f"    Dis is within eps but the data are too few to certify it at delta = "
            f"{contract.delta:g}; to pass at Dis = {expected:.4f}:"
        ]
    elif upper_bound(0, report.n_boundary, contract.delta, contract.bound) > contract.eps:
        expected = 0.0
        lines = [
            f"    too few boundary samples to ever pass: even Dis = 0 gives "
            f"{upper_bound(0, report.n_boundary, contract.delta, contract.bound):.4f} for "
            f"|B| = {report.n_boundary}; to pass at Dis = 0:"
        ]
    else:
        return []
    fraction = 0.5
    if report.split is not None and report.split.mode == "held-out":
        total = report.split.n_decomposition + report.split.n_evaluation
        fraction = report.split.n_evaluation / total
    for name in sorted(("binomial", "hoeffding"), key=lambda b: b != contract.bound):
        plan = saved.plan_samples(
            replace(contract, bound=name), expected, evaluation_fraction=fraction
        )
        lines.append(
            f"      {name}: |B| >= {plan.n_boundary}, about {plan.n_samples} evaluated samples "
            f"at kappa = {contract.kappa:g} ({plan.n_with_holdout} in all with "
            f"{fraction:.2g} held out)"
        )
    return lines


def assert_decomposable(
    model: Any,
    data: Any,
    eps: float | None = None,
    kappa: float | None = None,
    gamma: float | None = None,
    eta: float | None = None,
    *,
    delta: float | None = None,
    kappa_margin: float | None = None,
    bound: str | None = None,
    method: str = "lbmask",
    sparsity: float | str = 0.5,
    labels: Any = None,
    calibration: Any = None,
    calibration_labels: Any = None,
    evaluation_fraction: float = 0.5,
    same_samples: bool = False,
    **kwargs: Any,
) -> Any:
    """Decompose ``model`` and assert the contract on samples the decomposition never saw;
    returns the ``ContractReport``.

    By default a seeded, stratified ``evaluation_fraction`` of ``data`` is held out to certify
    and the rest decomposes (:func:`saved.holdout`); ``calibration=`` decomposes on that data
    and certifies on all of ``data``; ``same_samples=True`` is the paper's literal Algorithm 1
    (labelled in the report; its bound is then not valid). Thresholds not given here come from
    the test's ``@pytest.mark.decomposable(...)`` marker, then from the defaults (eps 0.1,
    kappa 0.2, gamma 0.5, eta 0.3, delta 0.05, the binomial bound). Other keyword arguments go
    to :func:`saved.decompose`.

    Raises:
        ContractViolation: an ``AssertionError`` naming each failed axis with its numbers and the
            top counterexamples.
    """
    __tracebackhide__ = True
    import saved

    state = _session.current.get()
    marker = state.marker if state is not None else {}
    contract = _resolve_contract(
        {
            "eps": eps,
            "kappa": kappa,
            "gamma": gamma,
            "eta": eta,
            "delta": delta,
            "kappa_margin": kappa_margin,
            "bound": bound,
        },
        marker,
    )
    if state is not None:
        engine = state.engine_factory()
    else:
        from .engine import Engine

        engine = Engine()
    plan = saved.holdout(
        model,
        data,
        labels,
        calibration=calibration,
        calibration_labels=calibration_labels,
        evaluation_fraction=evaluation_fraction,
        same_samples=same_samples,
        seed=engine.seed,
        device=engine.device,
    )
    announce = state.announce if state is not None else None
    decomposition = engine.decompose(
        model,
        plan.decompose_data,
        method=method,
        sparsity=sparsity,
        labels=plan.decompose_labels,
        keep=plan.decompose_keep,
        contract=contract,
        announce=announce,
        **kwargs,
    )
    report = saved.evaluate(
        model,
        decomposition,
        data,
        contract,
        labels,
        device=engine.device,
        keep=plan.evaluate_keep,
        split=plan.split,
    )
    if state is not None:
        _record(state, report, engine)
    if not report.holds:
        raise ContractViolation(format_violation(report), report)
    return report


def _record(state: _session.TestState, report: Any, engine: Any) -> None:
    import torch

    entry = {
        "nodeid": state.nodeid,
        "report": report.to_dict(),
        "seed": engine.seed,
        "timing": dict(engine.last_timing),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": engine.device or "model's own",
            "platform": platform.platform(),
        },
    }
    state.results.append(entry)
    index = sum(1 for r in state.results if r["nodeid"] == state.nodeid)
    prefix = "decompose" if index == 1 else f"decompose{index}"
    for name, value in (
        ("holds", report.holds),
        ("disagreement", round(report.disagreement, 6)),
        ("bound", report.contract.bound),
        ("upper_bound", round(report.semantic_bound, 6)),
        ("hoeffding", round(report.hoeffding, 6)),
        ("binomial", round(report.binomial, 6)),
        ("samples", report.split.mode if report.split is not None else "unknown"),
        ("max_overlap", round(report.max_overlap, 6)),
        ("min_prune", round(report.min_prune, 6)),
        ("confusion_deviation", round(report.confusion_deviation, 6)),
        ("n_boundary", report.n_boundary),
    ):
        state.user_properties.append((f"{prefix}_{name}", value))
