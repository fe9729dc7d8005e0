"""Baselines: each check's figures kept in the project, so a later run fails when the
decomposition regresses (syrupy's snapshots, for decompositionality).

``pytest --decompose-update-baseline`` writes one small JSON file per test,
``__decompose__/<test file stem>/<test name>.json`` beside the test file: for each
``assert_decomposable`` call of the test, in call order, its figures (boundary Dis, the upper
bound, max overlap, min prune, confusion deviation), its per-class table and a digest of the
component supports. Commit the files; review their diffs like any other change. Later runs
compare every check with its baseline and fail, naming the figure, the baseline value and the
new one, when

* the upper bound of the boundary disagreement rises by more than the tolerance,
* the max pairwise overlap rises by more than the tolerance,
* the min pruned fraction falls by more than the tolerance, or
* a class whose upper bound met ``eps`` no longer does.

The tolerance is absolute, ``decompose_baseline_tolerance`` in the ini file (default
:data:`DEFAULT_TOLERANCE`). A check without a baseline passes and is counted in the summary.
Baseline files of tests that no longer exist are listed as stale, and removed by
``--decompose-update-baseline``.

Imports no torch: it reads reports already computed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_TOLERANCE",
    "DIRECTORY",
    "Slot",
    "baseline_path",
    "compare",
    "snapshot",
    "stale_baselines",
]

DIRECTORY = "__decompose__"
FORMAT = 1
DEFAULT_TOLERANCE = 0.02
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-\[\]]")

#: figures compared with the baseline: (key, what it is, the direction that is worse)
_GATED = (
    ("upper_bound", "upper bound of the boundary disagreement", +1),
    ("max_overlap", "max overlap", +1),
    ("min_prune", "min prune", -1),
)


def baseline_path(test_file: Path, nodeid: str) -> Path:
    """Where the baseline of the test ``nodeid`` (defined in ``test_file``) lives."""
    name = nodeid.split("::", 1)[1] if "::" in nodeid else nodeid
    return test_file.parent / DIRECTORY / test_file.stem / f"{_UNSAFE.sub('_', name)}.json"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def snapshot(report: Any, supports: str) -> dict[str, Any]:
    """The baseline record of one check: a ``saved.ContractReport`` and the digest of its
    decomposition's supports."""
    eps = report.contract.eps
    return {
        "method": report.method,
        "holds": report.holds,
        "failed_axes": list(report.failed_axes),
        "n_samples": report.n_samples,
        "n_boundary": report.n_boundary,
        "bound": report.contract.bound,
        "disagreement": _round(report.disagreement),
        "upper_bound": _round(report.semantic_bound),
        "max_overlap": _round(report.max_overlap),
        "min_prune": _round(report.min_prune),
        "confusion_deviation": _round(report.confusion_deviation),
        "classes": {
            str(row.class_index): {
                "n_boundary": row.n_boundary,
                "disagreement": _round(row.disagreement),
                "upper_bound": _round(row.upper_bound),
                "fails": row.upper_bound is not None and row.upper_bound > eps,
            }
            for row in report.per_class
        },
        "supports": supports,
    }


def compare(baseline: dict[str, Any], current: dict[str, Any], tolerance: float) -> list[str]:
    """The regressions of ``current`` against ``baseline``, one sentence each (none: [])."""
    found = []
    for key, what, worse in _GATED:
        old, new = baseline.get(key), current.get(key)
        if old is None or new is None:
            continue
        if worse * (new - old) > tolerance + 1e-9:  # figures are stored to 6 decimals
            sign = "+" if worse > 0 else "-"
            found.append(
                f"{what} ({key}) {new:.4f}, baseline {old:.4f} {sign} tolerance {tolerance:g}"
            )
    old_classes = baseline.get("classes", {})
    newly = [
        name
        for name, row in current.get("classes", {}).items()
        if row.get("fails") and name in old_classes and not old_classes[name].get("fails")
    ]
    for name in sorted(newly, key=int):
        now, before = current["classes"][name]["upper_bound"], old_classes[name]["upper_bound"]
        found.append(f"class {name} newly fails: upper bound {now:.4f} > eps (was {before:.4f})")
    return found


@dataclass
class Slot:
    """The baseline of one test while it runs: its stored checks and the ones it makes."""

    path: Path
    shown: str  # the path as messages show it (relative to the project root)
    nodeid: str
    update: bool
    tolerance: float
    made: list[dict[str, Any]] = field(default_factory=list)
    _stored: list[dict[str, Any]] | None = None
    _loaded: bool = False

    def stored(self) -> list[dict[str, Any]] | None:
        """The checks in the baseline file (None: no file); ``ValueError`` when unreadable."""
        if not self._loaded:
            self._loaded = True
            if self.path.exists():
                try:
                    document = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as error:
                    raise ValueError(f"unreadable ({error})") from None
                if not isinstance(document, dict) or document.get("format") != FORMAT:
                    raise ValueError(f"not a format-{FORMAT} baseline file")
                self._stored = list(document.get("checks", []))
        return self._stored

    def check(self, record: dict[str, Any]) -> tuple[str, list[str]]:
        """Compare the next check of the test with its baseline: ``(status, regressions)``,
        status one of ``written``, ``missing``, ``matched``, ``regressed``, ``broken``."""
        index = len(self.made)
        self.made.append(record)
        if self.update:
            return "written", []
        try:
            stored = self.stored()
        except ValueError as error:
            return "broken", [
                f"baseline {self.shown} is {error}; rewrite it with --decompose-update-baseline"
            ]
        if stored is None or index >= len(stored):
            return "missing", []
        found = compare(stored[index], record, self.tolerance)
        return ("regressed" if found else "matched"), found

    def save(self) -> None:
        """Write the checks made (``--decompose-update-baseline``), atomically."""
        if not (self.update and self.made):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"format": FORMAT, "test": self.nodeid, "checks": self.made}
        temporary = self.path.with_name(self.path.name + ".partial")
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", "utf-8")
        temporary.replace(self.path)


def stale_baselines(collected: dict[Path, set[str]], partial: set[Path]) -> list[Path]:
    """Baseline files no collected test owns.

    ``collected`` maps each collected test file to the baseline file names of its collected
    tests; files in ``partial`` were collected only in part (node ids on the command line), so
    their baselines are not judged. A baseline directory whose test file no longer exists is
    stale as a whole; one of a test file this run did not collect is left alone.
    """
    stale: list[Path] = []
    for directory in sorted({path.parent for path in collected}):
        root = directory / DIRECTORY
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            test_file = directory / f"{folder.name}.py"
            if test_file in partial:
                continue
            names = collected.get(test_file)
            if names is None and test_file.exists():
                continue
            files = sorted(folder.glob("*.json"))
            stale.extend(p for p in files if names is None or p.name not in names)
    return stale
