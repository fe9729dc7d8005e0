"""The report a person looks at: `pytest examples/ --decompose-report=DIR` writes the terminal
summary, the JSON and the HTML, and headless Chromium renders the HTML's tables and plots."""

from __future__ import annotations

import json
import os
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
    blocks = sum(len(r["report"]["extra"].get("blocks", [])) >= 2 for r in document["results"])
    assert dom.count("<svg") == 4 * checks + 2 * blocks
    assert blocks >= 1 and dom.count('aria-label="kept share per block"') == blocks
    assert dom.count('aria-label="overlap by depth"') == blocks
    assert dom.count("<polyline") == 2 * blocks  # mean and max overlap, along depth
    assert 'aria-label="margin histogram"' in dom and "kappa cut" in dom
    # the disagreement by margin decile of every check: ten bars, each labelled with its value
    assert dom.count('aria-label="disagreement by margin decile"') == checks
    assert dom.count("<title>decile 10: margins") == checks

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
