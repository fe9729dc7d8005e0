"""The contract's value type and the counts behind its semantic axis: :class:`Contract` (the
thresholds), ``|B|``, upper confidence bounds of a disagreement rate, and the samples a
contract needs to be able to pass.

Torch-free, so that a report can be read without torch. Pure functions of counts: the size
of the boundary subset, the paper's Hoeffding term, the exact Clopper-Pearson limit, the one
the semantic axis compares with ``eps``, and the smallest boundary subset (and data set) at
which a given disagreement can pass.
:mod:`saved.contract` re-exports every name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from ._validation import check_in, check_number

#: How the semantic axis turns the measured Dis into an upper confidence bound.
Bound = Literal["binomial", "hoeffding"]
BOUNDS: tuple[str, ...] = get_args(Bound)

__all__ = [
    "ADAPTIVE_FIELDS",
    "BOUNDS",
    "Bound",
    "Contract",
    "SamplePlan",
    "boundary_size",
    "clopper_pearson_upper",
    "hoeffding_radius",
    "plan_samples",
    "samples_needed",
    "upper_bound",
]


#: The thresholds ``sparsity="auto"`` reads when it chooses each component's sparsity.
ADAPTIVE_FIELDS = ("eps", "kappa", "gamma", "eta")


@dataclass(frozen=True)
class Contract:
    """The thresholds a decomposition must meet; every axis must hold at once.

    Args:
        eps: bound on the upper confidence limit of the boundary disagreement (``Dis + h`` for
            ``bound="hoeffding"``, the Clopper–Pearson limit for ``"binomial"``); in (0, 1].
        kappa: the boundary as a margin *quantile*: the ``kappa`` fraction of lowest-margin
            samples forms ``B``; in (0, 1]. Ignored when ``kappa_margin`` is given.
        gamma: bound on the largest pairwise Jaccard overlap of component supports; in [0, 1].
        eta: every component must prune at least this fraction of units; in [0, 1].
        delta: failure probability of the bound; in (0, 1).
        kappa_margin: an absolute margin threshold ``B = {x : m(x) <= kappa_margin}``; >= 0.
        bound: ``"binomial"`` (default; the exact Clopper–Pearson upper limit) or
            ``"hoeffding"`` (the paper's ``Dis + sqrt(ln(2/delta) / (2n))``). Both hold with
            probability at least ``1 - delta`` for samples independent of the decomposition;
            the binomial one is never looser (docs/DECISIONS.md).
    """

    eps: float = 0.1
    kappa: float = 0.2
    gamma: float = 0.5
    eta: float = 0.3
    delta: float = 0.05
    kappa_margin: float | None = None
    bound: Bound = "binomial"

    def __post_init__(self) -> None:
        if self.bound not in BOUNDS:
            raise ValueError(f"bound: expected one of {BOUNDS}, got {self.bound!r}")
        object.__setattr__(self, "eps", check_in("eps", self.eps, "(0, 1]"))
        object.__setattr__(self, "kappa", check_in("kappa", self.kappa, "(0, 1]"))
        object.__setattr__(self, "gamma", check_in("gamma", self.gamma, "[0, 1]"))
        object.__setattr__(self, "eta", check_in("eta", self.eta, "[0, 1]"))
        object.__setattr__(self, "delta", check_in("delta", self.delta, "(0, 1)"))
        if self.kappa_margin is not None:
            margin = check_number("kappa_margin", self.kappa_margin)
            if margin < 0:
                raise ValueError(f"kappa_margin: expected a margin >= 0, got {self.kappa_margin!r}")
            object.__setattr__(self, "kappa_margin", margin)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def shaping_masks(self, sparsity: object, *, overlap: bool = False) -> dict[str, Any]:
        """The thresholds a decomposition's *masks* depend on, for a cache key.

        None for a fixed sparsity: the thresholds only judge the masks (:func:`saved.evaluate`).
        With ``sparsity="auto"`` each component's sparsity is chosen against the contract, and
        the four thresholds :func:`saved.masking.adaptive.adaptive_sparsity` reads are returned.
        ``overlap``: the masks are learned under an overlap hinge set from gamma (LBMask's
        ``overlap_limit="contract"``, the default), so gamma is returned too.
        """
        names = ADAPTIVE_FIELDS if sparsity == "auto" else ("gamma",) if overlap else ()
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Contract:
        unknown = set(values) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"contract: unknown keys {sorted(unknown)}")
        return cls(**values)


def hoeffding_radius(n: int, delta: float = 0.05) -> float:
    """Hoeffding term ``h = sqrt(ln(2 / delta) / (2 n))``.

    With probability at least ``1 - delta`` the true boundary disagreement is within ``h`` of
    the one measured on ``n`` independent boundary samples.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a sample count >= 1, got {n!r}")
    delta = check_in("delta", delta, "(0, 1)")
    return math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def clopper_pearson_upper(disagreements: int, n: int, delta: float = 0.05) -> float:
    """Exact (Clopper–Pearson) upper confidence limit of a binomial rate.

    With ``k`` disagreements among ``n`` independent boundary samples, the upper limit of the
    two-sided ``1 - delta`` interval, ``Beta(1 - delta/2; k + 1, n - k)`` (1 when ``k = n``):
    the same confidence the paper's two-sided Hoeffding term ``sqrt(ln(2/delta) / (2n))`` uses,
    and valid for every ``n``. For 0 of 200 it is 0.0183 where ``Dis + h`` is 0.0960.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a sample count >= 1, got {n!r}")
    k = disagreements
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"disagreements: expected an integer in [0, {n}], got {k!r}")
    delta = check_in("delta", delta, "(0, 1)")
    if k == n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(1.0 - delta / 2.0, k + 1, n - k))


def upper_bound(
    disagreements: int, n: int, delta: float = 0.05, bound: Bound = "binomial"
) -> float:
    """The upper confidence limit of the boundary disagreement that the semantic axis compares
    with ``eps``: the paper's ``Dis + h`` (``"hoeffding"``; it can exceed 1 for small ``n``) or
    the Clopper–Pearson limit (``"binomial"``)."""
    if bound == "hoeffding":
        if isinstance(disagreements, bool) or not isinstance(disagreements, int):
            raise ValueError(f"disagreements: expected an integer, got {disagreements!r}")
        if not 0 <= disagreements <= n:
            raise ValueError(f"disagreements: expected an integer in [0, {n}], got {disagreements}")
        return disagreements / n + hoeffding_radius(n, delta)
    if bound == "binomial":
        return clopper_pearson_upper(disagreements, n, delta)
    raise ValueError(f"bound: expected one of {BOUNDS}, got {bound!r}")


def samples_needed(
    eps: float, delta: float = 0.05, *, expected_dis: float = 0.0, bound: Bound = "hoeffding"
) -> int:
    """The smallest ``|B|`` at which a decomposition whose true boundary disagreement is
    ``expected_dis`` can pass: its upper bound at ``round(expected_dis * |B|)`` disagreements
    is ``<= eps``. With ``expected_dis = 0`` and ``"hoeffding"``: the smallest ``n`` with
    ``h(n) <= eps``; fewer samples can never pass, whatever the decomposition.

    Raises:
        ValueError: when ``expected_dis >= eps`` (no sample size passes).
    """
    eps = check_in("eps", eps, "(0, 1]")
    delta = check_in("delta", delta, "(0, 1)")
    expected = check_in("expected_dis", expected_dis, "[0, 1]")
    if expected >= eps:
        raise ValueError(
            f"expected_dis: {expected_dis!r} is not below eps = {eps:g}; no sample size passes"
        )
    if bound == "hoeffding":
        if expected == 0:
            return math.ceil(math.log(2.0 / delta) / (2.0 * eps * eps) - 1e-9)
        n = math.ceil(math.log(2.0 / delta) / (2.0 * (eps - expected) ** 2))
    elif bound != "binomial":
        raise ValueError(f"bound: expected one of {BOUNDS}, got {bound!r}")
    else:
        n = 1
    # the count rounds, so the bound is not monotone in n: step up to the first n that passes
    while upper_bound(round(expected * n), n, delta, bound) > eps:
        n = n + 1 if n < 64 else math.ceil(n * 1.01)
    while n > 1 and upper_bound(round(expected * (n - 1)), n - 1, delta, bound) <= eps:
        n -= 1
    return n


def boundary_size(n: int, q: float) -> int:
    """``|B|`` for the quantile rule: ``max(1, floor(q * n + 1/2))`` (round half up).

    Rounding half up, rather than ``ceil``, keeps exact products exact despite float noise:
    ``0.2 * 70_000`` is ``14000.000000000002`` in binary floating point and must give 14,000.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a sample count >= 1, got {n!r}")
    q = check_in("q", q, "(0, 1]")
    return max(1, min(n, math.floor(q * n + 0.5)))


@dataclass(frozen=True)
class SamplePlan:
    """How many samples a contract needs to be able to pass (:func:`plan_samples`)."""

    bound: str
    n_boundary: int  # |B|
    n_samples: int  # evaluated samples giving that |B| at kappa
    n_with_holdout: int | None  # all samples, when a share goes to decomposition


def plan_samples(
    contract: Contract, expected_dis: float = 0.0, *, evaluation_fraction: float | None = 0.5
) -> SamplePlan:
    """Samples needed so that a decomposition whose true boundary disagreement is
    ``expected_dis`` can pass ``contract``'s semantic axis.

    ``n_samples`` are the *evaluated* samples (|B| of them fall below the kappa quantile);
    ``n_with_holdout`` the data to pass when ``evaluation_fraction`` of it is held out for
    certification (the default of ``saved.check`` and ``assert_decomposable``).
    """
    n_boundary = samples_needed(
        contract.eps, contract.delta, expected_dis=expected_dis, bound=contract.bound
    )
    if contract.kappa_margin is not None:
        n_samples = n_boundary  # an absolute margin: |B| depends on the model, not on n
    else:
        n_samples = math.ceil((n_boundary - 0.5) / contract.kappa)
        while boundary_size(n_samples, contract.kappa) < n_boundary:
            n_samples += 1
    total = None
    if evaluation_fraction is not None:
        total = math.ceil(n_samples / evaluation_fraction)
    return SamplePlan(contract.bound, n_boundary, n_samples, total)
