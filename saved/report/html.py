"""A :class:`~saved.report.ContractReport` as a self-contained HTML page, the one page both
``saved report --html`` and ``pytest --decompose-report`` write.

Every figure is read from the typed report (its verdict properties and text methods), never
from the JSON by key. The plots are inline SVG written here rather than drawn with a plotting
library: the page must be one file that opens anywhere, and a few small charts do not justify
a plotting dependency.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence

from .model import ContractReport

__all__ = ["html_page"]

#: A caption line under a 420 px chart at 11 px type, and the distance between lines.
CAPTION_CHARS = 66
LINE_HEIGHT = 13


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _certificate_html(report: ContractReport) -> str:
    """What certified the verdict: the samples used, how mask learning ended, and when only the
    bound failed, how many samples would pass (the same lines as the failure message)."""
    parts = []
    if report.split is not None:
        parts.append(f"<p class='samples'>samples: {html.escape(report.split.describe())}</p>")
    note = report.training_note()
    if note is not None:
        parts.append(f"<p class='training'>{html.escape(note)}</p>")
    plan = report.sample_advice() if not report.semantic_holds else []
    if plan:
        lines = "<br>".join(html.escape(line.strip()) for line in plan)
        parts.append(f"<p class='plan'>{lines}</p>")
    return "".join(parts)


def _histogram_svg(report: ContractReport) -> str:
    hist = report.extra.get("margin_histogram")
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
        inside = edges[i] < report.boundary_margin
        colour = "#d9534f" if inside else "#5b8def"
        bars.append(
            f'<rect x="{pad + i * bar:.1f}" y="{height - pad - h:.1f}" width="{bar - 1:.1f}" '
            f'height="{h:.1f}" fill="{colour}"><title>{count} samples</title></rect>'
        )
    cut = pad + (width - 2 * pad) * min(report.boundary_margin / top, 1.0)
    return (
        f'<svg class="plot" role="img" aria-label="margin histogram" width="{width}" '
        f'height="{height}"><text x="{pad}" y="14">logit margins (red: boundary subset)</text>'
        + "".join(bars)
        + f'<line x1="{cut:.1f}" x2="{cut:.1f}" y1="{pad}" y2="{height - pad}" stroke="black" '
        f'stroke-dasharray="4"/><text x="{cut + 3:.1f}" y="{pad + 10}">kappa cut '
        f'{report.boundary_margin:.3g}</text><text x="{pad}" y="{height - 6}">0</text>'
        f'<text x="{width - pad - 30}" y="{height - 6}">{top:.3g}</text></svg>'
    )


def _margin_profile_svg(report: ContractReport) -> str:
    """Disagreement (y, 0 to 1) in each margin decile (x, lowest margins on the left), the
    value above each bar and the decile's margin range in its tooltip."""
    profile = report.margin_profile
    if not profile:
        return ""
    width, height, left, top, bottom = 380, 190, 34, 30, 36
    plot_w, plot_h = width - left - 10, height - top - bottom
    bar = plot_w / len(profile)
    parts = [
        '<text x="2" y="14">disagreement by margin decile (lowest margins left)</text>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" '
        'stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">1</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
        f'<text x="2" y="{top + plot_h / 2:.0f}">Dis</text>',
    ]
    for i, row in enumerate(profile):
        h = plot_h * row.disagreement
        x = left + i * bar
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 2:.1f}" '
            f'height="{h:.1f}" fill="#8e44ad"><title>decile {row.index + 1}: margins '
            f"{row.margin_low:.3g} to {row.margin_high:.3g}, {row.n_disagreements} of "
            f"{row.n_samples} disagree</title></rect>"
            f'<text x="{x + bar / 2:.1f}" y="{top + plot_h - h - 3:.1f}" text-anchor="middle">'
            f"{row.disagreement:.2f}</text>"
            f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 13}" text-anchor="middle">'
            f"{row.index + 1}</text>"
        )
    parts.append(
        f'<text x="{left}" y="{height - 6}">margin decile (1: margins {profile[0].margin_low:.3g}'
        f" to {profile[0].margin_high:.3g}; {len(profile)}: up to "
        f"{profile[-1].margin_high:.3g})</text>"
    )
    return (
        f'<svg class="plot" role="img" aria-label="disagreement by margin decile" '
        f'width="{width}" height="{height}">' + "".join(parts) + "</svg>"
    )


def _class_bars_svg(report: ContractReport) -> str:
    rows = [r for r in report.per_class if r.disagreement is not None]
    if not rows:
        return ""
    width, bar_h, pad = 360, 14, 24
    height = pad * 2 + bar_h * len(rows)
    parts = [f'<text x="{pad}" y="14">boundary disagreement per class</text>']
    for i, row in enumerate(rows):
        assert row.disagreement is not None  # filtered above; for the type checker
        w = (width - 3 * pad) * row.disagreement
        y = pad + i * bar_h
        parts.append(
            f'<text x="2" y="{y + bar_h - 3}">{row.class_index}</text><rect x="{pad}" '
            f'y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="#f0ad4e"><title>class '
            f"{row.class_index}: {row.disagreement:.4f} of {row.n_boundary}</title></rect>"
        )
    return (
        f'<svg class="plot" role="img" aria-label="per-class disagreement" width="{width}" '
        f'height="{height}">' + "".join(parts) + "</svg>"
    )


def _overlap_svg(report: ContractReport) -> str:
    overlap = report.overlap
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


def _blocks_svg(report: ContractReport) -> str:
    """Blocks x components: each component's kept share of each block (darker keeps more)."""
    blocks = report.extra.get("blocks") or []
    if len(blocks) < 2:
        return ""
    k = len(blocks[0]["kept"])
    cell, label, pad = max(6, min(18, 240 // max(k, 1))), 150, 24
    width, height = label + cell * k + 4, pad + cell * len(blocks) + 4
    parts = ['<text x="2" y="14">kept share per block (columns: components)</text>']
    for i, row in enumerate(blocks):
        y = pad + i * cell
        parts.append(f'<text x="2" y="{y + cell - 2}">{html.escape(row["block"][-24:])}</text>')
        for j, kept in enumerate(row["kept"]):
            shade = int(255 - 200 * kept)
            parts.append(
                f'<rect x="{label + j * cell}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="rgb({shade},{shade},255)"><title>{html.escape(row["block"])}, '
                f"component {j}: {kept:.3f} kept</title></rect>"
            )
    return (
        f'<svg class="plot" role="img" aria-label="kept share per block" width="{width}" '
        f'height="{height}">' + "".join(parts) + "</svg>"
    )


def _overlap_by_depth_svg(report: ContractReport) -> str:
    """Mean (solid) and max (dashed) pairwise overlap of the supports, block by block along
    depth; the block where the supports part ways is marked."""
    blocks = report.extra.get("blocks") or []
    if len(blocks) < 2:
        return ""
    width, height, left, top, plot_h = 420, 194, 34, 22, 120
    step = (width - left - 10) / (len(blocks) - 1)

    def point(i: int, value: float) -> str:
        return f"{left + i * step:.1f},{top + plot_h * (1 - value):.1f}"

    mean = " ".join(point(i, row.get("mean_overlap", 0.0)) for i, row in enumerate(blocks))
    most = " ".join(point(i, row["max_overlap"]) for i, row in enumerate(blocks))
    parts = [
        '<text x="2" y="14">overlap by depth (solid: mean, dashed: max; 0 to 1)</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" '
        'stroke="#999"/>',
        f'<polyline points="{mean}" fill="none" stroke="#2a5db0" stroke-width="2"/>',
        f'<polyline points="{most}" fill="none" stroke="#b03a2e" stroke-dasharray="4 3"/>',
    ]
    parted = report.extra.get("separation")
    if parted:
        x = left + parted["depth"] * step
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#555" '
            f'stroke-dasharray="2 2"><title>{html.escape(report.separation_line())}</title></line>'
        )
    caption = textwrap.wrap(report.separation_line(), CAPTION_CHARS)  # whole words, never cut
    for row, line in enumerate(caption):
        y = height - 6 - LINE_HEIGHT * (len(caption) - 1 - row)
        parts.append(f'<text x="2" y="{y}">{html.escape(line)}</text>')
    return (
        f'<svg class="plot" role="img" aria-label="overlap by depth" width="{width}" '
        f'height="{height}">' + "".join(parts) + "</svg>"
    )


def _summary_row(name: str, report: ContractReport) -> str:
    contract = report.contract
    status = "holds" if report.holds else "fails"
    other, other_value = report.other_bound()
    return (
        f'<tr class="{status}"><td>{name}</td><td>{html.escape(report.method)}</td>'
        f"<td>{_fmt(report.disagreement)} &rarr; {_fmt(report.semantic_bound)} "
        f"{html.escape(contract.bound)} (&le; {contract.eps:g}; {other}: {_fmt(other_value)})</td>"
        f"<td>{_fmt(report.max_overlap)} (&le; {contract.gamma:g})</td>"
        f"<td>{_fmt(report.min_prune)} (&ge; {contract.eta:g})</td>"
        f"<td>{_fmt(report.confusion_deviation)}</td><td>{report.n_boundary}</td>"
        f"<td><b>{status}</b></td></tr>"
    )


def _section(name: str, report: ContractReport) -> str:
    examples = "".join(
        f"<tr><td>{c.index}</td><td>{c.reference}</td><td>{c.decomposed}</td>"
        f"<td>{c.margin:.4g}</td></tr>"
        for c in report.counterexamples[:5]
    )
    table = (
        "<table><tr><th>index</th><th>y(x)</th><th>y_dec(x)</th><th>margin</th></tr>"
        f"{examples}</table>"
        if examples
        else "<p>no counterexamples on the boundary</p>"
    )
    return (
        f"<section><h2>{name}</h2>{_certificate_html(report)}"
        f"<div class='plots'>{_histogram_svg(report)}{_margin_profile_svg(report)}"
        f"{_class_bars_svg(report)}{_overlap_svg(report)}{_blocks_svg(report)}"
        f"{_overlap_by_depth_svg(report)}</div>"
        f"{table}</section>"
    )


def html_page(checks: Sequence[tuple[str, ContractReport]], *, about: str = "") -> str:
    """A self-contained page: a table of every check, then each check's plots.

    ``checks`` pairs a name (a test's node id, a report file) with its report; ``about`` is one
    plain-text line under the title (the session, the cache), escaped here.
    """
    rows, sections = [], []
    for raw_name, report in checks:
        name = html.escape(raw_name)
        rows.append(_summary_row(name, report))
        sections.append(_section(name, report))
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
<p>{html.escape(about)}</p>
<table id="summary"><tr><th>test</th><th>method</th><th>Dis &rarr; upper bound</th>
<th>max overlap</th>
<th>min prune</th><th>confusion dev.</th><th>|B|</th><th>verdict</th></tr>
{"".join(rows)}</table>
{"".join(sections)}
</body></html>
"""
