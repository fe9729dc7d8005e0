"""The session report: ``decompose-report.json`` and a self-contained ``decompose-report.html``.

The plots are inline SVG written here rather than drawn with a plotting library: the HTML must
be one file that opens anywhere, and three small charts do not justify a plotting dependency.
"""

from __future__ import annotations

import html
import json
import platform
from pathlib import Path
from typing import Any

__all__ = ["render_html", "write_reports"]


def write_reports(directory: Path, results: list[dict[str, Any]], stats: dict[str, int]) -> None:
    """Write both reports for ``results`` (one entry per ``assert_decomposable`` call)."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "version": 1,
        "python": platform.python_version(),
        "cache": stats,
        "results": sorted(results, key=lambda r: r["nodeid"]),
    }
    _atomic_write(directory / "decompose-report.json", json.dumps(document, indent=2))
    _atomic_write(directory / "decompose-report.html", render_html(document))


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _certificate_html(report: dict[str, Any]) -> str:
    """What certified the verdict: the samples used, how mask learning ended, and when only the
    bound failed, how many samples would pass (the same lines as the failure message)."""
    from saved import ContractReport

    parsed = ContractReport.from_dict(report)
    parts = []
    if parsed.split is not None:
        parts.append(f"<p class='samples'>samples: {html.escape(parsed.split.describe())}</p>")
    note = parsed.training_note()
    if note is not None:
        parts.append(f"<p class='training'>{html.escape(note)}</p>")
    plan = parsed.sample_advice() if not parsed.semantic_holds else []
    if plan:
        lines = "<br>".join(html.escape(line.strip()) for line in plan)
        parts.append(f"<p class='plan'>{lines}</p>")
    return "".join(parts)


def _other_bound(verdicts: dict[str, Any]) -> str:
    other = "hoeffding" if verdicts["bound"] == "binomial" else "binomial"
    return f"{other}: {_fmt(verdicts['bounds'][other])}"


def _histogram_svg(report: dict[str, Any]) -> str:
    hist = report["extra"].get("margin_histogram")
    if not hist:
        return ""
    counts, edges = hist["counts"], hist["edges"]
    width, height, pad = 360, 150, 24
    peak = max(counts) or 1
    bar = (width - 2 * pad) / len(counts)
    top = edges[-1] or 1.0
    bars = []
    for i, count in enumerate(counts):
        h = (height - 2 * pad) * count / peak
        inside = edges[i] < report["boundary_margin"]
        colour = "#d9534f" if inside else "#5b8def"
        bars.append(
            f'<rect x="{pad + i * bar:.1f}" y="{height - pad - h:.1f}" width="{bar - 1:.1f}" '
            f'height="{h:.1f}" fill="{colour}"><title>{count} samples</title></rect>'
        )
    cut = pad + (width - 2 * pad) * min(report["boundary_margin"] / top, 1.0)
    return (
        f'<svg class="plot" role="img" aria-label="margin histogram" width="{width}" '
        f'height="{height}"><text x="{pad}" y="14">logit margins (red: boundary subset)</text>'
        + "".join(bars)
        + f'<line x1="{cut:.1f}" x2="{cut:.1f}" y1="{pad}" y2="{height - pad}" stroke="black" '
        f'stroke-dasharray="4"/><text x="{cut + 3:.1f}" y="{pad + 10}">kappa cut '
        f'{report["boundary_margin"]:.3g}</text><text x="{pad}" y="{height - 6}">0</text>'
        f'<text x="{width - pad - 30}" y="{height - 6}">{top:.3g}</text></svg>'
    )


def _class_bars_svg(report: dict[str, Any]) -> str:
    rows = [r for r in report["per_class"] if r["disagreement"] is not None]
    if not rows:
        return ""
    width, bar_h, pad = 360, 14, 24
    height = pad * 2 + bar_h * len(rows)
    parts = [f'<text x="{pad}" y="14">boundary disagreement per class</text>']
    for i, row in enumerate(rows):
        w = (width - 3 * pad) * row["disagreement"]
        y = pad + i * bar_h
        parts.append(
            f'<text x="2" y="{y + bar_h - 3}">{row["class_index"]}</text><rect x="{pad}" '
            f'y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="#f0ad4e"><title>class '
            f"{row['class_index']}: {row['disagreement']:.4f} of {row['n_boundary']}</title></rect>"
        )
    return (
        f'<svg class="plot" role="img" aria-label="per-class disagreement" width="{width}" '
        f'height="{height}">' + "".join(parts) + "</svg>"
    )


def _overlap_svg(report: dict[str, Any]) -> str:
    overlap = report["overlap"]
    k = len(overlap)
    cell = max(8, min(24, 240 // max(k, 1)))
    pad = 24
    size = pad + cell * k + 4
    cells = []
    for i in range(k):
        for j in range(k):
            value = overlap[i][j]
            shade = int(255 - 200 * value)
            cells.append(
                f'<rect x="{pad + j * cell}" y="{pad + i * cell}" width="{cell}" height="{cell}" '
                f'fill="rgb(255,{shade},{shade})"><title>{i},{j}: {value:.3f}</title></rect>'
            )
    return (
        f'<svg class="plot" role="img" aria-label="overlap heatmap" width="{size}" '
        f'height="{size}"><text x="{pad}" y="14">pairwise Jaccard overlap (K = {k})</text>'
        + "".join(cells)
        + "</svg>"
    )


def render_html(document: dict[str, Any]) -> str:
    """A self-contained page: a table of every check, then each check's plots."""
    rows, sections = [], []
    for entry in document["results"]:
        report, verdicts = entry["report"], entry["report"]["verdicts"]
        contract = report["contract"]
        status = "holds" if verdicts["holds"] else "fails"
        name = html.escape(entry["nodeid"])
        rows.append(
            f'<tr class="{status}"><td>{name}</td><td>{html.escape(report["method"])}</td>'
            f"<td>{_fmt(report['disagreement'])} &rarr; {_fmt(verdicts['semantic_bound'])} "
            f"{html.escape(verdicts['bound'])} (&le; {contract['eps']:g}; "
            f"{_other_bound(verdicts)})</td>"
            f"<td>{_fmt(verdicts['max_overlap'])} (&le; {contract['gamma']:g})</td>"
            f"<td>{_fmt(verdicts['min_prune'])} (&ge; {contract['eta']:g})</td>"
            f"<td>{_fmt(report['confusion_deviation'])}</td><td>{report['n_boundary']}</td>"
            f"<td><b>{status}</b></td></tr>"
        )
        examples = "".join(
            f"<tr><td>{c['index']}</td><td>{c['reference']}</td><td>{c['decomposed']}</td>"
            f"<td>{c['margin']:.4g}</td></tr>"
            for c in report["counterexamples"][:5]
        )
        sections.append(
            f"<section><h2>{name}</h2>{_certificate_html(report)}"
            f"<div class='plots'>{_histogram_svg(report)}"
            f"{_class_bars_svg(report)}{_overlap_svg(report)}</div>"
            + (
                "<table><tr><th>index</th><th>y(x)</th><th>y_dec(x)</th><th>margin</th></tr>"
                f"{examples}</table>"
                if examples
                else "<p>no counterexamples on the boundary</p>"
            )
            + "</section>"
        )
    cache = document.get("cache", {})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Decomposition report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; white-space: nowrap; }}
td:first-child {{ white-space: normal; word-break: break-all; max-width: 380px; }}
tr.holds td:last-child {{ color: #2e7d32; }} tr.fails td:last-child {{ color: #c62828; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 1.5em; }} svg text {{ font-size: 11px; }}
</style></head><body>
<h1>Decomposition contracts</h1>
<p>{len(document["results"])} checks; python {html.escape(document["python"])};
cache: {cache.get("hits", 0)} hits, {cache.get("trained", 0)} computed.</p>
<table id="summary"><tr><th>test</th><th>method</th><th>Dis &rarr; upper bound</th>
<th>max overlap</th>
<th>min prune</th><th>confusion dev.</th><th>|B|</th><th>verdict</th></tr>
{"".join(rows)}</table>
{"".join(sections)}
</body></html>
"""
