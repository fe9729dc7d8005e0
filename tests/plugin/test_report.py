"""The report a person looks at: `pytest examples/ --decompose-report=DIR` writes the terminal
summary, the JSON and the HTML, and headless Chromium renders the HTML's tables and plots."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.io import decode_png, read_file

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
]

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (make test installs it where apt-get works)",
)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None, "chromium must be installed in CI (see the Makefile)"
    profile = tmp_path / "profile"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


#: Run in the page by Chromium: for every chart, its label, how many tick and scale texts,
#: axis labels or scales, and legend entries it holds, and how many of its texts reach outside
#: its box (rotated labels included: measured on the laid-out page); then the width of the
#: narrowest test-name cell of the summary table.
CHART_CHECK = """<script>
const rows = [];
document.querySelectorAll("svg.plot").forEach((svg) => {
  const box = svg.getBoundingClientRect();
  let outside = 0;
  svg.querySelectorAll("text").forEach((t) => {
    const r = t.getBoundingClientRect();
    if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 ||
        r.bottom > box.bottom + 1) outside += 1;
  });
  const count = (selector) => svg.querySelectorAll(selector).length;
  rows.push([svg.getAttribute("aria-label"), count("text.tick, text.scale"),
             count("text.axis-label, text.scale"), count("text.legend"), outside].join("|"));
});
const cells = [...document.querySelectorAll("td.name")];
const names = cells.map((td) => td.getBoundingClientRect().width);
rows.push("name-width|" + Math.min(...names));
const pre = document.createElement("pre");
pre.id = "chart-check";
pre.textContent = rows.join("\\n");
document.body.appendChild(pre);
</script>"""


def _chart_check(tmp_path: Path, page: Path) -> list[list[str]]:
    """The rows :data:`CHART_CHECK` writes into ``page`` laid out at 1280 px by Chromium."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CHART_CHECK + "</body>"))
    dom = _chromium(tmp_path, "--window-size=1280,1600", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="chart-check">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-2000:]
    return [line.split("|") for line in html.unescape(found.group(1)).splitlines()]


def _colour_pixels(png: Path, rgb: tuple[int, int, int]) -> int:
    image = decode_png(read_file(str(png)))[:3].int()
    target = torch.tensor(rgb).view(3, 1, 1)
    return int(((image - target).abs().sum(0) < 30).sum())


def _pytest_examples(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``pytest examples ARGS`` as a user runs it: a process of its own, from the repository,
    with a pytest cache and Hypothesis database of this test's (cold on the first call)."""
    command = [sys.executable, "-m", "pytest", "examples", "-q", "-o", f"cache_dir={tmp_path}/c"]
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis")},
    )


@needs_chromium
def test_examples_report_renders_in_chromium(tmp_path: Path) -> None:
    out = tmp_path / "report"
    run = _pytest_examples(tmp_path, f"--decompose-report={out}")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "decomposition contracts" in run.stdout  # the terminal summary
    assert f"next: open {out / 'decompose-report.html'}" in run.stdout
    document = json.loads((out / "decompose-report.json").read_text())
    checks = len(document["results"])
    assert checks >= 4
    page = out / "decompose-report.html"

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert dom.count('<tr class="holds">') + dom.count('<tr class="fails">') == checks
    # histogram, per-class bars, overlap heatmap; and for structured masks over several
    # blocks the kept-per-block heatmap and the overlap-by-depth plot
    blocks = sum(len(r["report"]["blocks"]) >= 2 for r in document["results"])
    assert dom.count("<svg") == 4 * checks + 2 * blocks
    assert blocks >= 1 and dom.count('aria-label="kept share per block"') == blocks
    assert dom.count('aria-label="overlap by depth"') == blocks
    assert dom.count("<polyline") == 2 * blocks  # mean and max overlap, along depth
    assert 'aria-label="margin histogram"' in dom and "kappa cut" in dom
    # the disagreement by margin decile of every check: ten bars, each labelled with its value
    assert dom.count('aria-label="disagreement by margin decile"') == checks
    assert dom.count("<title>decile 10: margins") == checks

    # every chart: ticks with values or a colour scale, labelled axes or a scale, a legend,
    # and no text outside its box; test names keep a readable column at 1280 px
    *charts, (_, name_width) = _chart_check(tmp_path, page)
    assert len(charts) == 4 * checks + 2 * blocks
    for label, ticks, axes, legend, outside in charts:
        assert int(ticks) >= 2 and int(axes) >= 1 and int(legend) >= 1, label
        assert int(outside) == 0, label
    assert float(name_width) >= 200

    # a warm re-run learns no masks: every decomposition comes from the cache
    warm = _pytest_examples(tmp_path)
    assert warm.returncode == 0, warm.stdout[-3000:]
    assert "0 decompositions computed" in warm.stdout

    shot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri())
    assert _colour_pixels(shot, (0x5B, 0x8D, 0xEF)) > 200  # histogram bars above the cut
    assert _colour_pixels(shot, (0xD9, 0x53, 0x4F)) > 200  # boundary-subset bars
    assert _colour_pixels(shot, (0xF0, 0xAD, 0x4E)) > 100  # per-class disagreement bars
    assert _colour_pixels(shot, (0x8E, 0x44, 0xAD)) > 100  # disagreement by margin decile
    if os.environ.get("SAVE_REPORT_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "report-screenshot.png")
