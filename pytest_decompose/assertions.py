"""``assert_decomposable`` and ``ContractViolation``: the plugin's assertion."""

from __future__ import annotations

import math
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
    from saved.contract import samples_needed

    contract = report.contract
    lines = [
        f"decomposition contract violated ({report.method}; |B| = {report.n_boundary} boundary "
        f"samples of {report.n_samples}):"
    ]
    if not report.semantic_holds:
        lines.append(
            f"  semantic: Dis + h = {report.disagreement:.4f} + {report.hoeffding:.4f} = "
            f"{report.semantic_bound:.4f} > eps = {contract.eps:g}"
        )
        if report.hoeffding >= contract.eps:
            needed = samples_needed(contract.eps, contract.delta)
            total = (
                needed if contract.kappa_margin is not None else _total_for(needed, contract.kappa)
            )
            lines.append(
                f"    the Hoeffding term alone ({report.hoeffding:.4f} for |B| = "
                f"{report.n_boundary}) exceeds eps: too few boundary samples to ever pass; "
                f"|B| >= {needed} is needed (about {total} samples at kappa = {contract.kappa:g})"
            )
    if not report.structural_holds:
        lines.append(
            f"  structural: max overlap {report.max_overlap:.4f} > gamma = {contract.gamma:g}"
        )
    if not report.reduction_holds:
        lines.append(f"  reduction: min prune {report.min_prune:.4f} < eta = {contract.eta:g}")
    if report.counterexamples:
        lines.append(
            f"top counterexamples ({report.n_counterexamples} in all; index: original -> "
            "decomposed label, margin):"
        )
        for c in report.counterexamples[:top]:
            lines.append(f"  {c.index}: {c.reference} -> {c.decomposed} (margin {c.margin:.4g})")
    return "\n".join(lines)


def _total_for(needed: int, kappa: float) -> int:
    """The smallest n whose quantile boundary subset has at least ``needed`` samples."""
    return math.ceil((needed - 0.5) / kappa)


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
    method: str = "lbmask",
    sparsity: float = 0.5,
    labels: Any = None,
    **kwargs: Any,
) -> Any:
    """Decompose ``model`` on ``data`` and assert the contract; returns the ``ContractReport``.

    Thresholds not given here come from the test's ``@pytest.mark.decomposable(...)`` marker,
    then from the defaults (eps 0.1, kappa 0.2, gamma 0.5, eta 0.3, delta 0.05). Other keyword
    arguments go to :func:`saved.decompose`.

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
        },
        marker,
    )
    if state is not None:
        engine = state.engine_factory()
    else:
        from .engine import Engine

        engine = Engine()
    decomposition = engine.decompose(
        model, data, method=method, sparsity=sparsity, labels=labels, contract=contract, **kwargs
    )
    report = saved.evaluate(model, decomposition, data, contract, labels, device=engine.device)
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
        ("hoeffding", round(report.hoeffding, 6)),
        ("max_overlap", round(report.max_overlap, 6)),
        ("min_prune", round(report.min_prune, 6)),
        ("confusion_deviation", round(report.confusion_deviation, 6)),
        ("n_boundary", report.n_boundary),
    ):
        state.user_properties.append((f"{prefix}_{name}", value))
