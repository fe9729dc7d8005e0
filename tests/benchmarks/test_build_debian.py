"""benchmarks/data/build_debian.py: the rules that turn the archive index into the committed
Debian data set (dedupe, drop ambiguous texts, a proportional seeded split)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location(
    "build_debian", ROOT / "benchmarks" / "data" / "build_debian.py"
)
assert _SPEC is not None and _SPEC.loader is not None
build_debian = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(build_debian)
parse_dumpavail = build_debian.parse_dumpavail
build_debian_records = build_debian.build_debian_records

DUMP = """\
Package: b-game
Section: contrib/games
Description: A puzzle game

Package: a-game
Section: games
Description: A puzzle game

Package: nodesc
Section: games

Package: both
Section: net
Description: shared text

Package: both2
Section: games
Description: shared text
"""


def test_parse_dumpavail_strips_area_and_skips_incomplete_stanzas() -> None:
    stanzas = list(parse_dumpavail(DUMP.splitlines()))
    assert stanzas == [
        ("b-game", "games", "A puzzle game"),
        ("a-game", "games", "A puzzle game"),
        ("both", "net", "shared text"),
        ("both2", "games", "shared text"),
    ]


def test_build_records_dedupes_and_drops_ambiguous_texts() -> None:
    records = build_debian_records(parse_dumpavail(DUMP.splitlines()), ["games", "net"])
    # the repeated text is kept once, named by the alphabetically first package; the text
    # found in two sections is dropped
    assert [(r["package"], r["section"], r["text"]) for r in records] == [
        ("a-game", "games", "A puzzle game")
    ]


def test_build_records_split_is_proportional_and_reproducible() -> None:
    stanzas = [(f"p{i}", "games" if i % 3 else "net", f"text {i}") for i in range(300)]
    first = build_debian_records(stanzas, ["games", "net"], test_fraction=0.2, seed=4)
    again = build_debian_records(reversed(stanzas), ["games", "net"], test_fraction=0.2, seed=4)
    assert first == again  # order of the archive does not matter
    for section, size in (("games", 200), ("net", 100)):
        tests = [r for r in first if r["section"] == section and r["split"] == "test"]
        assert len(tests) == round(0.2 * size)
    other_seed = build_debian_records(stanzas, ["games", "net"], test_fraction=0.2, seed=5)
    assert first != other_seed
