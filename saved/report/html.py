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
from collections.abc import Callable, Sequence

from .model import ContractReport

__all__ = ["html_page"]

#: Type and spacing of every chart (px): the SVG text size, a line of text, and the room
#: for the y-axis labels at the left of a plot.
FONT = 11
LINE = 14
LEFT = 40
#: characters of a caption line in a chart ``width`` px wide (whole words; never cut)
CHAR_WIDTH = 6.2

# Every chart follows one pattern, so that a browser test can check all of them: a title
# (class "title"), axes with ticks (class "tick") and an axis label ("axis-label"), or for a
# heatmap a colour scale with its ticks ("scale"), a legend ("legend") and, where there is
# more to say, captions wrapped to the chart's width ("caption").


def _text(x: float, y: float, text: str, cls: str, anchor: str = "start", extra: str = "") -> str:
    return (
        f'<text class="{cls}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>'
        f"{html.escape(text)}</text>"
    )


def _svg(label: str, width: float, height: float, parts: list[str]) -> str:
    return (
        f'<svg class="plot" role="img" aria-label="{label}" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">' + "".join(parts) + "</svg>"
    )


def _captions(lines: list[str], width: float, top: float) -> tuple[list[str], float]:
    """``lines`` wrapped at whole words to ``width``, from ``top``; the parts and the height
    they take."""
    parts: list[str] = []
    y = top
    for line in lines:
        for piece in textwrap.wrap(line, max(20, int((width - 4) / CHAR_WIDTH))):
            y += LINE
            parts.append(_text(2, y, piece, "caption"))
    return parts, y - top


def _y_axis(
    left: float,
    top: float,
    plot_h: float,
    ticks: list[float],
    label: str,
    fmt: str = "{:g}",
    high: float = 1.0,
) -> list[str]:
    """A vertical axis from ``top`` (value ``high``) down ``plot_h`` px (value 0), its ticks
    and its label."""
    parts = [f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>']
    for value in ticks:
        y = top + plot_h * (1 - value / high)
        parts.append(f'<line x1="{left - 3}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#999"/>')
        parts.append(_text(left - 5, y + 4, fmt.format(value), "tick", "end"))
    parts.append(
        _text(
            12,
            top + plot_h / 2,
            label,
            "axis-label",
            "middle",
            f' transform="rotate(-90 12 {top + plot_h / 2:.1f})"',
        )
    )
    return parts


def _x_axis(
    left: float, y: float, plot_w: float, ticks: list[tuple[float, str]], label: str
) -> list[str]:
    """A horizontal axis at ``y`` from ``left`` across ``plot_w`` px; ``ticks`` are (share of
    the width, text)."""
    parts = [f'<line x1="{left}" y1="{y}" x2="{left + plot_w}" y2="{y}" stroke="#999"/>']
    for share, text in ticks:
        x = left + plot_w * share
        parts.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 3}" stroke="#999"/>')
        parts.append(_text(x, y + 3 + FONT, text, "tick", "middle"))
    parts.append(_text(left + plot_w / 2, y + 3 + FONT + LINE, label, "axis-label", "middle"))
    return parts


def _legend(x: float, y: float, items: list[tuple[str, str]]) -> list[str]:
    """Swatches in a row from (``x``, ``y``): (SVG attributes of the swatch, text) each."""
    parts = []
    for style, text in items:
        parts.append(f'<rect x="{x:.1f}" y="{y - 9}" width="10" height="10" {style}/>')
        parts.append(_text(x + 14, y, text, "legend"))
        x += 24 + CHAR_WIDTH * len(text)
    return parts


def _scale(
    x: float, y: float, width: float, colour: Callable[[float], str], label: str
) -> list[str]:
    """A colour scale from 0 to 1 across ``width`` px at (``x``, ``y``), with ticks."""
    steps = 20
    parts = [
        f'<rect x="{x + width * i / steps:.1f}" y="{y}" width="{width / steps + 0.5:.1f}" '
        f'height="8" fill="{colour((i + 0.5) / steps)}"/>'
        for i in range(steps)
    ]
    for value in (0.0, 0.5, 1.0):
        parts.append(_text(x + width * value, y + 8 + FONT, f"{value:g}", "scale", "middle"))
    parts.append(_text(x + width + 8, y + 8, label, "scale"))
    return parts


def _room(text: str, x: float = 2, bold: bool = False) -> float:
    """The width a line of ``text`` needs from ``x`` (bold titles run wider)."""
    return x + len(text) * (CHAR_WIDTH + (0.8 if bold else 0.0)) + 8


def _red(value: float) -> str:
    shade = int(255 - 200 * value)
    return f"rgb(255,{shade},{shade})"


def _blue(value: float) -> str:
    shade = int(255 - 200 * value)
    return f"rgb({shade},{shade},255)"


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
    """The logit margins of the evaluated samples: counts (y) by margin (x), the boundary
    subset B (the lowest kappa share) in red, its cut marked."""
    hist = report.extra.get("margin_histogram")
    if not hist:
        return ""
    counts, edges = hist["counts"], hist["edges"]
    width, top, plot_h = 380, 36, 110
    plot_w = width - LEFT - 12
    peak = max(counts) or 1
    low, high = edges[0], edges[-1] if edges[-1] > edges[0] else edges[0] + 1.0
    bar = plot_w / len(counts)
    parts = [_text(2, 14, "logit margins of the evaluated samples", "title")]
    parts += _legend(
        LEFT, 30, [('fill="#d9534f"', "boundary subset B"), ('fill="#5b8def"', "others")]
    )
    for i, count in enumerate(counts):
        h = plot_h * count / peak
        colour = "#d9534f" if edges[i] < report.boundary_margin else "#5b8def"
        parts.append(
            f'<rect x="{LEFT + i * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 1:.1f}" '
            f'height="{h:.1f}" fill="{colour}"><title>margins {edges[i]:.3g} to '
            f"{edges[i + 1]:.3g}: {count} samples</title></rect>"
        )
    parts += _y_axis(LEFT, top, plot_h, [0, peak], "samples", "{:.0f}", high=peak)
    share = min(max((report.boundary_margin - low) / (high - low), 0.0), 1.0)
    parts += _x_axis(
        LEFT,
        top + plot_h,
        plot_w,
        [(0.0, f"{low:.3g}"), (0.5, f"{(low + high) / 2:.3g}"), (1.0, f"{high:.3g}")],
        "logit margin m(x)",
    )
    cut = LEFT + plot_w * share
    parts.append(
        f'<line x1="{cut:.1f}" x2="{cut:.1f}" y1="{top}" y2="{top + plot_h}" stroke="black" '
        'stroke-dasharray="4"/>'
    )
    more, used = _captions(
        [
            f"dashed: the kappa cut, margin {report.boundary_margin:.3g} "
            f"(|B| = {report.n_boundary} of {report.n_samples})"
        ],
        width,
        top + plot_h + 3 + FONT + LINE + 4,
    )
    return _svg("margin histogram", width, top + plot_h + 3 + FONT + LINE + 10 + used, parts + more)


def _margin_profile_svg(report: ContractReport) -> str:
    """Disagreement (y, 0 to 1) in each margin decile (x, lowest margins on the left), the
    value above each bar and the decile's margin range in its tooltip."""
    profile = report.margin_profile
    if not profile:
        return ""
    width, top, plot_h = 380, 46, 110
    plot_w = width - LEFT - 12
    bar = plot_w / len(profile)
    parts = [_text(2, 14, "disagreement by margin decile", "title")]
    parts += _legend(LEFT, 30, [('fill="#8e44ad"', "Dis of the decile's samples (value above)")])
    for i, row in enumerate(profile):
        h = plot_h * row.disagreement
        x = LEFT + i * bar
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 2:.1f}" '
            f'height="{h:.1f}" fill="#8e44ad"><title>decile {row.index + 1}: margins '
            f"{row.margin_low:.3g} to {row.margin_high:.3g}, {row.n_disagreements} of "
            f"{row.n_samples} disagree</title></rect>"
        )
        parts.append(
            _text(x + bar / 2, top + plot_h - h - 3, f"{row.disagreement:.2f}", "value", "middle")
        )
    parts += _y_axis(LEFT, top, plot_h, [0.0, 0.5, 1.0], "Dis")
    parts += _x_axis(
        LEFT,
        top + plot_h,
        plot_w,
        [((i + 0.5) / len(profile), str(i + 1)) for i in range(len(profile))],
        "margin decile (1: lowest margins)",
    )
    more, used = _captions(
        [
            f"decile 1: margins {profile[0].margin_low:.3g} to {profile[0].margin_high:.3g}; "
            f"decile {len(profile)}: up to {profile[-1].margin_high:.3g}"
        ],
        width,
        top + plot_h + 3 + FONT + LINE + 4,
    )
    return _svg(
        "disagreement by margin decile",
        width,
        top + plot_h + 3 + FONT + LINE + 10 + used,
        parts + more,
    )


def _class_bars_svg(report: ContractReport) -> str:
    """Boundary disagreement (x, 0 to 1) of each class's boundary samples (rows), the value at
    the end of each bar."""
    rows = [r for r in report.per_class if r.disagreement is not None]
    if not rows:
        return ""
    width, top, bar_h = 380, 36, 14
    plot_w = width - LEFT - 50
    plot_h = bar_h * len(rows)
    parts = [_text(2, 14, "boundary disagreement per class", "title")]
    parts += _legend(LEFT, 30, [('fill="#f0ad4e"', "Dis of the class's boundary samples")])
    for i, row in enumerate(rows):
        assert row.disagreement is not None  # filtered above; for the type checker
        w = plot_w * row.disagreement
        y = top + i * bar_h
        parts.append(_text(LEFT - 5, y + bar_h - 3, str(row.class_index), "tick", "end"))
        parts.append(
            f'<rect x="{LEFT}" y="{y + 1}" width="{w:.1f}" height="{bar_h - 2}" fill="#f0ad4e">'
            f"<title>class {row.class_index}: {row.disagreement:.4f} of {row.n_boundary}</title>"
            "</rect>"
        )
        parts.append(_text(LEFT + w + 3, y + bar_h - 3, f"{row.disagreement:.2f}", "value"))
    parts.append(
        _text(
            12,
            top + plot_h / 2,
            "class",
            "axis-label",
            "middle",
            f' transform="rotate(-90 12 {top + plot_h / 2:.1f})"',
        )
    )
    parts += _x_axis(
        LEFT, top + plot_h, plot_w, [(0.0, "0"), (0.5, "0.5"), (1.0, "1")], "boundary disagreement"
    )
    return _svg("per-class disagreement", width, top + plot_h + 3 + FONT + LINE + 8, parts)


def _overlap_svg(report: ContractReport) -> str:
    """The components' pairwise Jaccard overlap (rows and columns: components), with its
    colour scale."""
    overlap = report.overlap
    k = len(overlap)
    cell = max(8, min(24, 240 // max(k, 1)))
    left, top = 28, 36
    side = cell * k
    title = f"pairwise Jaccard overlap of the supports (K = {k})"
    width = max(left + side + 10, _room(title, bold=True), _room("overlap", left + 128))
    parts = [_text(2, 14, title, "title")]
    every = max(1, k // 12)  # at most a dozen component labels per side
    for i in range(k):
        if i % every == 0:
            parts.append(_text(left - 4, top + i * cell + cell / 2 + 4, str(i), "tick", "end"))
            parts.append(_text(left + i * cell + cell / 2, top - 4, str(i), "tick", "middle"))
        for j in range(k):
            value = overlap[i][j]
            parts.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" '
                f'height="{cell}" fill="{_red(value)}"><title>components {i} and {j}: '
                f"{value:.3f}</title></rect>"
            )
    below = top + side + 8
    parts += _scale(left, below, 120, _red, "overlap")
    parts += _legend(
        left, below + 8 + FONT + LINE + 4, [(f'fill="{_red(1.0)}"', "rows, columns: components")]
    )
    return _svg("overlap heatmap", width, below + 8 + FONT + LINE + 12, parts)


def _blocks_svg(report: ContractReport) -> str:
    """Blocks (rows, in depth order) x components (columns): each component's kept share of
    each block, with its colour scale."""
    blocks = report.blocks
    if len(blocks) < 2:
        return ""
    k = len(blocks[0].kept)
    cell, label, top = max(6, min(18, 240 // max(k, 1))), 150, 36
    title = "kept share of each block's units, per component"
    legend = "rows: blocks; columns: components"
    width = max(
        label + cell * k + 10,
        _room(title, bold=True),
        _room("kept share", label + 128),
        _room(legend, 16),
    )
    parts = [_text(2, 14, title, "title")]
    every = max(1, k // 12)
    for j in range(0, k, every):
        parts.append(_text(label + j * cell + cell / 2, top - 4, str(j), "tick", "middle"))
    for i, row in enumerate(blocks):
        y = top + i * cell
        parts.append(_text(label - 4, y + cell - 2, row.block[-22:], "tick", "end"))
        for j, kept in enumerate(row.kept):
            parts.append(
                f'<rect x="{label + j * cell}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="{_blue(kept)}"><title>{html.escape(row.block)}, '
                f"component {j}: {kept:.3f} kept</title></rect>"
            )
    below = top + cell * len(blocks) + 8
    parts += _scale(label, below, 120, _blue, "kept share")
    parts += _legend(
        2,
        below + 8 + FONT + LINE + 4,
        [(f'fill="{_blue(1.0)}"', legend)],
    )
    return _svg("kept share per block", width, below + 8 + FONT + LINE + 12, parts)


def _overlap_by_depth_svg(report: ContractReport) -> str:
    """Mean (solid) and max (dashed) pairwise overlap of the supports, block by block along
    depth; the block where the supports part ways is marked."""
    blocks = report.blocks
    if len(blocks) < 2:
        return ""
    width, top, plot_h = 420, 46, 110
    plot_w = width - LEFT - 12
    step = plot_w / (len(blocks) - 1)

    def point(i: int, value: float) -> str:
        return f"{LEFT + i * step:.1f},{top + plot_h * (1 - value):.1f}"

    mean = " ".join(point(i, row.mean_overlap) for i, row in enumerate(blocks))
    most = " ".join(point(i, row.max_overlap) for i, row in enumerate(blocks))
    parts = [_text(2, 14, "overlap of the supports by depth", "title")]
    parts += _legend(
        LEFT, 30, [('fill="#2a5db0"', "mean overlap"), ('fill="#b03a2e"', "max overlap (dashed)")]
    )
    parts += [
        f'<polyline points="{mean}" fill="none" stroke="#2a5db0" stroke-width="2"/>',
        f'<polyline points="{most}" fill="none" stroke="#b03a2e" stroke-dasharray="4 3"/>',
    ]
    parts += _y_axis(LEFT, top, plot_h, [0.0, 0.5, 1.0], "overlap")
    every = max(1, len(blocks) // 10)
    parts += _x_axis(
        LEFT,
        top + plot_h,
        plot_w,
        [(i / (len(blocks) - 1), str(i)) for i in range(0, len(blocks), every)],
        f"block depth (0: {blocks[0].block[-20:]}, {len(blocks) - 1}: {blocks[-1].block[-20:]})",
    )
    if report.separation is not None:
        x = LEFT + report.separation.depth * step
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#555" '
            f'stroke-dasharray="2 2"><title>{html.escape(report.separation_line())}</title></line>'
        )
    more, used = _captions(
        [("dotted: " if report.separation is not None else "") + report.separation_line()],
        width,
        top + plot_h + 3 + FONT + LINE + 4,
    )
    return _svg("overlap by depth", width, top + plot_h + 3 + FONT + LINE + 10 + used, parts + more)


def _summary_row(name: str, report: ContractReport) -> str:
    contract = report.contract
    status = "holds" if report.holds else "fails"
    other, other_value = report.other_bound()
    return (
        f'<tr class="{status}"><td class="name">{name}</td><td>{html.escape(report.method)}</td>'
        f"<td>{_fmt(report.disagreement)} &rarr; {_fmt(report.semantic_bound)} "
        f"{html.escape(contract.bound)} (&le; {contract.eps:g})<br>"
        f"<small>{other}: {_fmt(other_value)}</small></td>"
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
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
td.name {{ min-width: 18em; max-width: 32em; overflow-wrap: anywhere; }}
h2 {{ overflow-wrap: anywhere; }}
tr.holds td:last-child {{ color: #2e7d32; }} tr.fails td:last-child {{ color: #c62828; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }}
svg text {{ font-size: {FONT}px; }} svg .title {{ font-weight: 600; }}
svg .tick, svg .scale, svg .caption {{ fill: #444; }}
@media print {{
  body {{ margin: 0; }} section {{ break-inside: avoid-page; }} .plots {{ gap: 0.6em; }}
}}
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
