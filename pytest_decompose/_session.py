"""Per-test state shared by the plugin's hooks and ``assert_decomposable`` (no heavy imports)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

#: Keyword arguments a ``decomposable`` marker may carry (those of ``saved.Contract``).
MARKER_KEYS = ("eps", "kappa", "gamma", "eta", "delta", "kappa_margin", "bound")


@dataclass
class TestState:
    """What ``assert_decomposable`` needs to know about the running test."""

    nodeid: str
    marker: dict[str, Any]
    engine_factory: Any  # () -> Engine, created on first use
    results: list[dict[str, Any]]
    user_properties: list[tuple[str, object]] = field(default_factory=list)
    announce: Any = None  # (text) -> None: a line on the terminal, outside output capture


def marker_settings(node: Any) -> dict[str, Any]:
    """The ``decomposable`` markers of a test item merged into one dict: the closest marker
    (function over class over module) wins key by key."""
    merged: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("decomposable"))):
        merged.update(mark.kwargs)
    return merged


current: ContextVar[TestState | None] = ContextVar("pytest_decompose_test", default=None)
