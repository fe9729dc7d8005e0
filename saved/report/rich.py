"""A :class:`~saved.report.ContractReport` in the terminal: a rich renderable.

Every figure is read from the typed report (its verdict properties and text methods), never
from the JSON by key, so the terminal, the page and the assertion message cannot disagree.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .model import ContractReport

__all__ = ["render_report"]


def _verdict(holds: bool) -> Text:
    return Text("holds", style="bold green") if holds else Text("FAILS", style="bold red")


def render_report(report: ContractReport, *, top: int = 5) -> RenderableType:
    """A rich renderable: the axes table, the per-class summary and the top counterexamples."""
    contract = report.contract
    axes = Table(title=f"Decomposition contract ({report.method})", title_justify="left")
    axes.add_column("axis")
    axes.add_column("measured", justify="right", no_wrap=True)
    axes.add_column("rule")
    axes.add_column("verdict")
    other, other_value = report.other_bound()
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
    blocks = report.blocks
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
        kept = row.kept
        least = min(range(len(kept)), key=kept.__getitem__)
        table.add_row(
            row.block,
            str(row.units),
            f"{kept[least]:.2f} ({least})",
            f"{max(kept):.2f}",
            f"{row.mean_overlap:.3f}",
            f"{row.max_overlap:.3f}",
        )
    notes = [report.separation_line()]
    if len(blocks) > BLOCK_ROWS:
        notes.append(f"{len(blocks) - BLOCK_ROWS} more blocks in the JSON and HTML reports")
    table.caption = "\n".join(note for note in notes if note)
    return table
