"""pytest hooks and options of pytest-decompose.

This module is loaded for every pytest run in an environment where the package is installed,
so it must stay light: no torch, no transformers, no engine import at module level.
"""

from __future__ import annotations

import pytest

MARKER_KEYS = ("eps", "kappa", "gamma", "eta", "delta", "kappa_margin")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("decompose", "decompositionality contracts (pytest-decompose)")
    group.addoption(
        "--decompose-report",
        action="store",
        nargs="?",
        const=".",
        default=None,
        metavar="DIR",
        help="write decompose-report.json and decompose-report.html to DIR (default: .)",
    )
    group.addoption(
        "--decompose-device",
        action="store",
        default=None,
        metavar="DEVICE",
        help="device for decomposition work, e.g. cpu or cuda:0 (default: the model's)",
    )
    group.addoption(
        "--decompose-seed",
        action="store",
        type=int,
        default=0,
        metavar="SEED",
        help="seed for every random choice of the engine (default: 0)",
    )
    group.addoption(
        "--decompose-no-cache",
        action="store_true",
        default=False,
        help="neither read nor write cached decompositions",
    )
    group.addoption(
        "--decompose-refresh",
        action="store_true",
        default=False,
        help="recompute cached decompositions and overwrite them",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "decomposable(eps=0.1, kappa=0.2, gamma=0.5, eta=0.3, delta=0.05, kappa_margin=None): "
        "the decomposition contract for the assertions inside this test",
    )
