"""saved/report/html.py and rich.py: one HTML page for the command line and the plugin, read
from the typed report; the rich rendering of the same figures."""

from __future__ import annotations

import io
import re

import torch
from rich.console import Console

from pytest_decompose.report import render_html
from saved import Contract, ContractReport, assess
from saved.cli import main
from saved.report import html_page, render_report


def _report() -> ContractReport:
    # margins 0.1, 2.0, 0.3, 5.0, 0.2; kappa = 0.6 -> B = samples {0, 4, 2}; 0 and 4 disagree
    logits = torch.tensor(
        [[1.0, 0.9, 0.0], [3.0, 1.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 5.0], [0.0, 0.0, 0.2]]
    )
    decomposed = torch.tensor([1, 0, 1, 2, 0])
    supports = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    return assess(Contract(kappa=0.6, gamma=0.4), logits, decomposed, supports, method="hand")


def _checks(page: str) -> tuple[list[str], list[str]]:
    rows = re.findall(r'<tr class="(?:holds|fails)">.*?</tr>', page, re.S)
    sections = re.findall(r"<section>.*?</section>", page, re.S)
    return rows, sections


def test_the_command_line_writes_the_plugins_page(tmp_path) -> None:
    """`saved report --html` and `pytest --decompose-report` render a report identically."""
    report = _report()
    stored = tmp_path / "r.json"
    stored.write_text(report.to_json())
    assert main(["report", str(stored), "--html", str(tmp_path / "r.html")]) == 1  # it fails
    from_cli = (tmp_path / "r.html").read_text()
    entry = {"nodeid": str(stored), "report": report.to_dict()}
    from_plugin = render_html({"results": [entry], "python": "3.11", "cache": {}})
    assert _checks(from_cli) == _checks(from_plugin)
    rows, sections = _checks(from_cli)
    assert len(rows) == 1 and len(sections) == 1
    assert "0 hits, 0 computed" in from_plugin and "written by saved" in from_cli


def test_the_page_shows_the_reports_own_figures() -> None:
    """Dis 2/3 of |B| = 3, the Clopper-Pearson limit, overlap 1/3 and prune 0.5, by hand."""
    report = _report()
    page = html_page([("a <check>", report)])
    (row,), _ = _checks(page)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[0] == "a &lt;check&gt;" and cells[1] == "hand"
    assert cells[2].startswith(f"0.6667 &rarr; {report.binomial:.4f} binomial (&le; 0.1)<br>")
    assert f"hoeffding: {report.bounds['hoeffding']:.4f}" in cells[2]
    assert cells[3] == "0.3333 (&le; 0.4)" and cells[4] == "0.5000 (&ge; 0.3)"
    assert cells[6] == "3" and "<b>fails</b>" in row
    # the two counterexamples on B, lowest margin first: samples 0 (margin 0.1) and 4 (0.2)
    examples = re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", page)
    assert examples == [("0", "0", "1"), ("4", "2", "0")]
    # one heatmap cell per pair of the 3 components, the diagonal at overlap 1
    assert len(re.findall(r"<title>components \d and \d: ", page)) == 9
    assert "<title>components 1 and 1: 1.000</title>" in page
    # one bar per margin decile (5 samples: 5 deciles), its value above it, its range inside
    chart = re.search(r'<svg[^>]*aria-label="disagreement by margin decile".*?</svg>', page, re.S)
    assert chart is not None
    assert re.findall(r">(\d\.\d\d)</text>", chart.group(0)) == ["1.00", "1.00"] + ["0.00"] * 3
    assert "<title>decile 1: margins 0.1 to 0.1, 1 of 1 disagree</title>" in chart.group(0)
    assert "decile 1: margins 0.1 to 0.1; decile 5: up to 5" in chart.group(0)


def test_the_rich_rendering_carries_the_same_figures() -> None:
    report = _report()
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(render_report(report))
    text = console.export_text()
    assert f"Dis 0.6667 -> {report.binomial:.4f}" in text
    assert "max overlap <= gamma = 0.4" in text and "0.3333" in text
    assert "Contract fails: semantic" in text
    flat = " ".join(text.split())  # the caption wraps
    assert " ".join(report.describe_samples().split()) in flat
    assert "not recorded" in report.describe_samples()  # assess() alone records no split
