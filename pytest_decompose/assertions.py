"""``assert_decomposable`` and ``ContractViolation``: the plugin's assertion."""

from __future__ import annotations

import platform
from typing import Any

from . import _session

__all__ = ["BaselineRegression", "ContractViolation", "assert_decomposable", "format_violation"]


class ContractViolation(AssertionError):
    """The decomposition contract does not hold; ``report`` holds every measurement."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class BaselineRegression(AssertionError):
    """The contract holds, but a figure is worse than the test's baseline by more than the
    tolerance (``pytest --decompose-update-baseline`` accepts the new figures)."""

    def __init__(self, message: str, report: Any, regressions: list[str]) -> None:
        super().__init__(message)
        self.report = report
        self.regressions = regressions


def _resolve_contract(layers: dict[str, dict[str, Any]]) -> tuple[Any, dict[str, str]]:
    """The check's ``saved.Contract`` from its layers (see ``_session.SOURCES``) and where
    each threshold came from; a bad value names its source."""
    from saved import Contract

    values, sources = _session.resolve(layers)
    try:
        return Contract(**values), sources
    except (TypeError, ValueError) as error:
        origin = ", ".join(f"{k} = {values[k]!r} ({sources[k]})" for k in sorted(values))
        raise ValueError(f"contract: {error} [from {origin}]") from None


def _baseline_lines(shown: str, regressions: list[str]) -> str:
    return f"regressed against the baseline {shown}:\n" + "\n".join(
        f"  - {line}" for line in regressions
    )


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
    the test's ``@pytest.mark.decomposable(...)`` marker, then from ``--decompose-contract``,
    then from the project's ini keys (``decompose_eps``, ...), then from the defaults (eps 0.1,
    kappa 0.2, gamma 0.5, eta 0.3, delta 0.05, the binomial bound). Other keyword arguments go
    to :func:`saved.decompose`. When the test has a baseline (``__decompose__/``), the check is
    also compared with it.

    Raises:
        ContractViolation: an ``AssertionError`` naming each failed axis with its numbers and the
            top counterexamples.
        BaselineRegression: the contract holds but a figure regressed against the baseline.
    """
    __tracebackhide__ = True
    import saved

    state = _session.current.get()
    given = {
        "eps": eps,
        "kappa": kappa,
        "gamma": gamma,
        "eta": eta,
        "delta": delta,
        "kappa_margin": kappa_margin,
        "bound": bound,
    }
    layers = dict(state.project) if state is not None else {}
    layers["marker"] = state.marker if state is not None else {}
    layers["argument"] = {k: v for k, v in given.items() if v is not None}
    contract, sources = _resolve_contract(layers)
    if state is not None:
        engine = state.engine_factory()
    else:
        from .engine import Engine

        engine = Engine()
    made: list[Any] = []  # the decomposition, for the baseline's digest of its supports

    def decomposer(*args: Any, **settings: Any) -> Any:
        made.append(engine.decompose(*args, announce=announce, **settings))
        return made[-1]

    announce = state.announce if state is not None else None
    split = {
        "labels": labels,
        "calibration": calibration,
        "calibration_labels": calibration_labels,
        "evaluation_fraction": evaluation_fraction,
        "same_samples": same_samples,
    }
    # the engine's one flow: split, decompose (through the session's cache), certify
    report = saved.check(
        model,
        data,
        contract=contract,
        decomposer=decomposer,
        **split,
        method=method,
        sparsity=sparsity,
        **{**engine.options, **kwargs},  # a seed or device given here wins over the session's
    )
    decomposition = made[-1]
    regressions: list[str] = []
    slot = state.baseline if state is not None else None
    if state is not None:
        baseline = None
        if slot is not None:
            from .baseline import snapshot

            digest = saved.fingerprint(decomposition.supports)
            status, regressions = slot.check(snapshot(report, digest))
            baseline = {"path": slot.shown, "status": status, "regressions": regressions}
        _record(state, report, engine, sources, baseline)
    if not report.holds:
        message = format_violation(report)
        if slot is not None and regressions:
            message += "\n" + _baseline_lines(slot.shown, regressions)
        raise ContractViolation(message, report)
    if slot is not None and regressions:
        raise BaselineRegression(
            f"decomposition contract holds ({report.summary_line()}), but it "
            + _baseline_lines(slot.shown, regressions)
            + "\naccept the new figures with: pytest --decompose-update-baseline",
            report,
            regressions,
        )
    return report


def _record(
    state: _session.TestState,
    report: Any,
    engine: Any,
    sources: dict[str, str],
    baseline: dict[str, Any] | None,
) -> None:
    import torch

    entry = {
        "nodeid": state.nodeid,
        "report": report.to_dict(),
        "contract_sources": sources,
        "baseline": baseline,
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
