"""How a :class:`~saved.report.ContractReport` is shown: a rich renderable for the terminal and
a self-contained HTML page, the one page both ``saved report --html`` and
``pytest --decompose-report`` write.

Every figure is read from the typed report (its verdict properties and text methods), never
from the JSON by key, so the terminal, the page and the assertion message cannot disagree.
The plots are inline SVG written here rather than drawn with a plotting library: the page must
be one file that opens anywhere, and a few small charts do not justify a plotting dependency.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .report import ContractReport

__all__ = ["html_page", "render_report"]


# --------------------------------------------------------------------------- rich


def _verdict(holds: bool) -> Text:
    return Text("holds", style="bold green") if holds else Text("FAILS", style="bold red")


def _other_bound(report: ContractReport) -> tuple[str, float]:
    other = "hoeffding" if report.contract.bound == "binomial" else "binomial"
    return other, report.bounds[other]


def render_report(report: ContractReport, *, top: int = 5) -> RenderableType:
    """A rich renderable: the axes table, the per-class summary and the top counterexamples."""
    contract = report.contract
    axes = Table(title=f"Decomposition contract ({report.method})", title_justify="left")
    axes.add_column("axis")
    axes.add_column("measured", justify="right", no_wrap=True)
    axes.add_column("rule")
    axes.add_column("verdict")
    other, other_value = _other_bound(report)
    axes.add_row(
        "semantic",
        f"Dis {report.disagreement:.4f} -> {report.semantic_bound:.4f}",
        f"{report.bound_label} <= eps = {contract.eps:g} ({other}: {other_value:.4f})",
        _verdict(report.semantic_holds),
    )
    axes.add_row(
        "structural",
        f"{report.max_overlap:.4f}",
        f"max overlap <= gamma = {contract.gamma:g}",
        _verdict(report.structural_holds),
    )
    prunes = report.prunes
    each = ""
    if max(prunes) - min(prunes) > 1e-3:  # per-component sparsities (sparsity="auto")
        each = " (per component: " + " ".join(f"{p:.2f}" for p in prunes) + ")"
    axes.add_row(
        "reduction",
        f"{report.min_prune:.4f}",
        f"min prune >= eta = {contract.eta:g}{each}",
        _verdict(report.reduction_holds),
    )
    bound = 2 * report.disagreement
    axes.add_row(
        "confusion dev.", f"{report.confusion_deviation:.4f}", f"<= 2 Dis = {bound:.4f}", ""
    )
    axes.add_row("global dis.", f"{report.global_disagreement:.4f}", "all samples", "")
    if contract.kappa_margin is None:
        boundary_rule = f"lowest kappa = {contract.kappa:g} of margins"
    else:
        boundary_rule = f"margin <= {contract.kappa_margin:g}"
    axes.caption = (
        f"|B| = {report.n_boundary} of {report.n_samples} samples ({boundary_rule}, "
        f"margin <= {report.boundary_margin:.4g}); delta = {contract.delta:g}; "
        + report.describe_samples()
    )
    note = report.training_note()
    if note is not None:
        axes.caption += f"; {note}"

    parts: list[RenderableType] = [axes]
    summary = report.class_summary
    if summary:
        classes = Table(
            title="Per-class boundary disagreement (upper bounds hold together at "
            f"1 - delta = {1 - contract.delta:g}, Bonferroni over classes)",
            title_justify="left",
        )
        for column in ("", "class", "|B_k|", "Dis_k", "upper bound"):
            classes.add_column(column)
        for name, row in summary.items():
            rate = "-" if row.disagreement is None else f"{row.disagreement:.4f}"
            upper = "-" if row.upper_bound is None else f"{row.upper_bound:.4f}"
            classes.add_row(name, str(row.class_index), str(row.n_boundary), rate, upper)
        parts.append(classes)
    margins = _margin_table(report)
    if margins is not None:
        parts.append(margins)
    blocks = _blocks_table(report)
    if blocks is not None:
        parts.append(blocks)
    if report.counterexamples:
        table = Table(
            title=f"Counterexamples ({report.n_counterexamples}, lowest margin first)",
            title_justify="left",
        )
        for column in ("index", "y(x)", "y_dec(x)", "margin", "label"):
            table.add_column(column, justify="right")
        for c in report.counterexamples[:top]:
            label = "-" if c.label is None else str(c.label)
            table.add_row(
                str(c.index), str(c.reference), str(c.decomposed), f"{c.margin:.4g}", label
            )
        parts.append(table)
    verdict = "holds" if report.holds else "fails: " + ", ".join(report.failed_axes)
    style = "bold green" if report.holds else "bold red"
    parts.append(Text(f"Contract {verdict}", style=style))
    return Group(*parts)


def _margin_table(report: ContractReport) -> Table | None:
    """Disagreement in each margin decile of the evaluated samples, lowest margins first."""
    if not report.margin_profile:
        return None
    table = Table(
        title="Disagreement by margin decile (all evaluated samples, lowest margins first)",
        title_justify="left",
    )
    for column in ("decile", "margins", "samples", "disagree", "Dis"):
        table.add_column(column, justify="right")
    for row in report.margin_profile:
        table.add_row(
            str(row.index + 1),
            f"{row.margin_low:.3g} - {row.margin_high:.3g}",
            str(row.n_samples),
            str(row.n_disagreements),
            f"{row.disagreement:.4f}",
        )
    return table


#: block rows the terminal shows (the HTML page and the JSON hold them all)
BLOCK_ROWS = 24


def _blocks_table(report: ContractReport) -> Table | None:
    """Per block (saved.profile): the least and most a component keeps of it, and the largest
    overlap of the supports inside it; None for per-weight masks or a single block."""
    blocks = report.extra.get("blocks") or []
    if len(blocks) < 2:
        return None
    table = Table(
        title="Kept per block (share of the block's unit parameters, over components)",
        title_justify="left",
    )
    columns = ("block", "units", "least kept (component)", "most kept", "mean overlap")
    for column in (*columns, "max overlap"):
        table.add_column(column, justify="left" if column == "block" else "right")
    for row in blocks[:BLOCK_ROWS]:
        kept = row["kept"]
        least = min(range(len(kept)), key=kept.__getitem__)
        table.add_row(
            row["block"],
            str(row["units"]),
            f"{kept[least]:.2f} ({least})",
            f"{max(kept):.2f}",
            f"{row.get('mean_overlap', 0.0):.3f}",
            f"{row['max_overlap']:.3f}",
        )
    notes = [separation_line(report)]
    if len(blocks) > BLOCK_ROWS:
        notes.append(f"{len(blocks) - BLOCK_ROWS} more blocks in the JSON and HTML reports")
    table.caption = "\n".join(note for note in notes if note)
    return table


def separation_line(report: ContractReport) -> str:
    """Where the supports part ways (:func:`saved.profile.separation`), in one sentence."""
    parted = report.extra.get("separation")
    if not parted:
        return "the mean overlap never drops from one block to the next"
    return (
        f"supports part ways at {parted['block']} (depth {parted['depth']}): mean overlap "
        f"{parted['before']:.3f} -> {parted['after']:.3f}, the largest drop between blocks"
    )


# --------------------------------------------------------------------------- HTML


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
    width, height, left, top, plot_h = 420, 180, 34, 22, 120
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
            f'stroke-dasharray="2 2"><title>{html.escape(separation_line(report))}</title></line>'
        )
    parts.append(f'<text x="2" y="{height - 6}">{html.escape(separation_line(report)[:70])}</text>')
    return (
        f'<svg class="plot" role="img" aria-label="overlap by depth" width="{width}" '
        f'height="{height}">' + "".join(parts) + "</svg>"
    )


def _summary_row(name: str, report: ContractReport) -> str:
    contract = report.contract
    status = "holds" if report.holds else "fails"
    other, other_value = _other_bound(report)
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
