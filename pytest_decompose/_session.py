"""Per-test state shared by the plugin's hooks and ``assert_decomposable`` (no heavy imports)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

#: Keyword arguments a ``decomposable`` marker may carry (those of ``saved.Contract``).
MARKER_KEYS = ("eps", "kappa", "gamma", "eta", "delta", "kappa_margin", "bound")

#: Where a threshold of a check came from, strongest first.
SOURCES = ("argument", "marker", "command line", "ini", "default")


def parse_value(key: str, text: str) -> Any:
    """One threshold written as text (an ini value, a ``--decompose-contract`` item).

    Only the type is checked here; the ranges are ``saved.Contract``'s to check.
    """
    text = text.strip()
    if key == "bound":
        return text
    if key == "kappa_margin" and text.lower() in ("", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{key}: expected a number, got {text!r}") from None


def parse_override(text: str) -> dict[str, Any]:
    """``"eps=0.05,gamma=0.4"`` as ``{"eps": 0.05, "gamma": 0.4}``."""
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in MARKER_KEYS:
            raise ValueError(
                f"--decompose-contract: expected KEY=VALUE items with KEY one of "
                f"{', '.join(MARKER_KEYS)}; got {item!r}"
            )
        values[key] = parse_value(key, value)
    return values


def resolve(layers: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Thresholds from ``layers`` (a source name -> its values), strongest source first in
    :data:`SOURCES` order, and which source each threshold came from. Keys no layer sets are
    left out (``saved.Contract``'s defaults apply; their source is ``"default"``)."""
    values: dict[str, Any] = {}
    sources = dict.fromkeys(MARKER_KEYS, "default")
    for source in reversed(SOURCES):
        for key, value in layers.get(source, {}).items():
            values[key], sources[key] = value, source
    return values, sources


@dataclass
class TestState:
    """What ``assert_decomposable`` needs to know about the running test."""

    nodeid: str
    marker: dict[str, Any]
    engine_factory: Any  # () -> Engine, created on first use
    results: list[dict[str, Any]]
    user_properties: list[tuple[str, object]] = field(default_factory=list)
    announce: Any = None  # (text) -> None: a line on the terminal, outside output capture
    #: the project's thresholds: ``{"ini": {...}, "command line": {...}}``
    project: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: Any = None  # the test's baseline.Slot, or None


def project_line(project: dict[str, dict[str, Any]]) -> str:
    """The report header's line on the project's contract (ini keys, ``--decompose-contract``)."""
    values, sources = resolve(project)
    if not values:
        return "project contract: none set (each check: arguments > marker > defaults)"
    shown = ", ".join(f"{k}={values[k]} ({sources[k]})" for k in MARKER_KEYS if k in values)
    return f"project contract: {shown}; arguments and markers of a test win over it"


def marker_settings(node: Any) -> dict[str, Any]:
    """The ``decomposable`` markers of a test item merged into one dict: the closest marker
    (function over class over module) wins key by key."""
    merged: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("decomposable"))):
        merged.update(mark.kwargs)
    return merged


current: ContextVar[TestState | None] = ContextVar("pytest_decompose_test", default=None)
