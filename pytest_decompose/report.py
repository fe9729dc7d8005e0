"""The session report: ``decompose-report.json`` and a self-contained ``decompose-report.html``.

The page is the engine's (:func:`saved.html_page`), the same one ``saved report --html``
writes; this module only gathers the session's checks and writes both files atomically.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from ._session import project_line

__all__ = ["render_html", "write_reports"]


def write_reports(
    directory: Path,
    results: list[dict[str, Any]],
    stats: dict[str, int],
    project: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write both reports for ``results`` (one entry per ``assert_decomposable`` call);
    ``project``: the ini and command-line thresholds (the header's project contract)."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "version": 1,
        "python": platform.python_version(),
        "cache": stats,
        "project_contract": project_line(project or {}),
        "results": sorted(results, key=lambda r: r["nodeid"]),
    }
    _atomic_write(directory / "decompose-report.json", json.dumps(document, indent=2))
    _atomic_write(directory / "decompose-report.html", render_html(document))


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def render_html(document: dict[str, Any]) -> str:
    """The HTML page of a ``decompose-report.json`` document: every check, then its plots."""
    from saved import ContractReport, html_page  # torch-importing; only when a report is written

    checks = [(e["nodeid"], ContractReport.from_dict(e["report"])) for e in document["results"]]
    cache = document.get("cache", {})
    about = (
        f"{len(checks)} checks; python {document['python']}; "
        f"cache: {cache.get('hits', 0)} hits, {cache.get('trained', 0)} computed. "
        f"{document.get('project_contract', '')}"
    ).strip()
    return html_page(checks, about=about)
