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
    """The failure message: :meth:`saved.ContractReport.explain` (every failed axis with its
    numbers, the samples used, how many would pass, the top counterexamples)."""
    return str(report.explain(top))


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
