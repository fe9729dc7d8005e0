"""Hooks pytest-decompose calls: implement them in a ``conftest.py`` or a plugin.

Like pytest-benchmark's ``pytest_benchmark_update_json``, they let a project add what its
reports need (a commit, a model card, a data version) without patching the plugin.
"""

from __future__ import annotations

from typing import Any

import pluggy
import pytest

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_decompose_update_json(config: pytest.Config, entry: dict[str, Any]) -> None:
    """Amend one report entry (one ``assert_decomposable`` call) in place, before the reports
    are written: add keys, e.g. ``entry["commit"] = ...``. The keys the plugin writes
    (``nodeid``, ``report``, ``machine``, ``timing``) are best left as they are: the terminal
    summary and the HTML report read them.

    Called once per entry, in node-id order, on the process that writes the report (the xdist
    controller, after the workers' entries are merged), and only with ``--decompose-report``.
    """
