"""benchmarks/data/build_debian.py: the rules that turn the archive index into the committed
Debian data set (dedupe, drop ambiguous texts, a proportional seeded split)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from saved.datasets import DEBIAN_LONG_SETS, read_text_set

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location(
    "build_debian", ROOT / "benchmarks" / "data" / "build_debian.py"
)
assert _SPEC is not None and _SPEC.loader is not None
build_debian = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(build_debian)
parse_dumpavail = build_debian.parse_dumpavail
build_debian_records = build_debian.build_debian_records
ScriptStdout = Callable[..., str]  # the fixture of conftest.py
SPLITS = ("train", "test")

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


# --------------------------------------------------------------------------- long descriptions

FIXTURES = Path(__file__).resolve().parent / "fixtures"
description_text = build_debian.description_text
split_by_source = build_debian.split_by_source


def test_a_description_becomes_its_short_line_and_paragraphs() -> None:
    field = (
        "A tool for foo\n"
        " It reads foo files and writes bar\n"
        " files quickly.\n"
        " .\n"
        " Features:\n"
        "  * fast\n"
        "  * small\n"
        " The end."
    )
    assert description_text(field) == (
        "A tool for foo\n"
        "It reads foo files and writes bar files quickly.\n"
        "Features:\n"
        "* fast\n"
        "* small\n"
        "The end."
    )
    assert description_text("Only a short line") == "Only a short line"


def test_a_source_package_is_never_split_and_a_family_too_large_stays_in_training() -> None:
    # science: 10 texts, one source with 6 of them; games: 5 texts of 5 sources
    per_section = {
        "science": [f"s{i}" for i in range(10)],
        "games": [f"g{i}" for i in range(5)],
    }
    source_of = {f"s{i}": "big" if i < 6 else f"lone{i}" for i in range(10)}
    source_of.update({f"g{i}": f"game{i}" for i in range(5)})
    tested = split_by_source(per_section, source_of, 0.2, seed=0)
    assert not {f"s{i}" for i in range(6)} & tested  # 6 > round(0.2 * 10) = 2: in training
    assert sum(t.startswith("s") for t in tested) == 2  # filled with two lone sources
    assert sum(t.startswith("g") for t in tested) == 1  # round(0.2 * 5)
    assert split_by_source(per_section, source_of, 0.2, seed=0) == tested  # seeded


def test_long_sets_rebuilt_from_a_slice_of_the_apt_lists(
    tmp_path: Path, script_stdout: ScriptStdout
) -> None:
    """A real slice of apt's lists (14 packages each of games, science, hamradio and sound), with
    four edits: 2048-qt's checksum changed in the index (described anew: left out), abx's
    translation removed, zz-copy (sound) given aldo's (hamradio) text, and 00-twin (games)
    3dchess's text."""
    outputs = []
    for name in ("a", "b"):
        script_stdout(
            "benchmarks/data/build_debian.py",
            str(FIXTURES / "dumpavail.txt"),
            "--long",
            "--translations",
            str(FIXTURES / "Translation-en"),
            "--out-dir",
            str(tmp_path / name),
        )
        outputs.append({p.name: p.read_bytes() for p in (tmp_path / name).iterdir()})
    assert outputs[0] == outputs[1]  # byte for byte
    assert set(outputs[0]) == {"topics14-long.jsonl.gz", "debian4-long.jsonl.gz"}
    records = {
        name.split(".")[0]: [json.loads(line) for line in gzip.decompress(data).splitlines()]
        for name, data in outputs[0].items()
    }
    topics, four = records["topics14-long"], records["debian4-long"]
    assert {r["section"] for r in topics} == {"games", "science", "hamradio", "sound"}
    assert {r["section"] for r in four} == {"games", "science", "sound"}  # no net in the slice
    packages = {r["package"] for r in topics}
    assert not {"2048-qt", "abx"} & packages
    # aldo's text is in hamradio and sound: ambiguous among topics14's sections, not debian4's
    assert not {"aldo", "zz-copy"} & packages
    assert "zz-copy" in {r["package"] for r in four if r["section"] == "sound"}
    # 3dchess's text twice in games: kept once, named by the first package, 00-twin
    twins = [r for r in topics if r["text"].startswith("Play chess across 3 boards!\n")]
    assert [(r["package"], r["source"]) for r in twins] == [("00-twin", "00-twin")]
    assert len(topics) == 4 * 14 + 2 - 2 - 2 - 1  # +2 added; left out, ambiguous, repeat
    game = next(r for r in topics if r["package"] == "0ad")
    assert game["text"].startswith(
        'Real-time strategy game of ancient warfare\n0 A.D. (pronounced "zero ey-dee") is a '
        "free, open-source, cross-platform real-time strategy (RTS) game of ancient warfare."
    )
    for rows in (topics, four):
        assert len({r["text"] for r in rows}) == len(rows)
        sides = {split: {r["source"] for r in rows if r["split"] == split} for split in SPLITS}
        assert not sides["train"] & sides["test"]  # a source on one side only
        for section in {r["section"] for r in rows}:
            texts = [r for r in rows if r["section"] == section]
            tested = sum(r["split"] == "test" for r in texts)
            assert 1 <= tested <= round(0.2 * len(texts))


def test_without_translation_lists_the_builder_says_which_apt_step_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(build_debian, "APT_LISTS", str(tmp_path / "*_Translation-en*"))
    with pytest.raises(SystemExit, match=r"apt-get update -o Acquire::Languages=en"):
        build_debian.read_translations([])


@pytest.mark.parametrize("name", sorted(DEBIAN_LONG_SETS))
def test_committed_long_sets_are_clean(name: str) -> None:
    """Every section on both sides, no text twice, no source package on both sides, a fifth of
    each section held out (whole source packages: within a few texts)."""
    path = ROOT / "benchmarks" / "data" / f"{name}.jsonl.gz"
    classes = DEBIAN_LONG_SETS[name]
    train, test = read_text_set(path, classes, "train"), read_text_set(path, classes, "test")
    assert set(train.labels) == set(test.labels) == set(range(len(classes)))
    assert len(set(train.texts + test.texts)) == len(train.texts) + len(test.texts)
    rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    sides = {split: {r["source"] for r in rows if r["split"] == split} for split in SPLITS}
    assert not sides["train"] & sides["test"]
    for label, section in enumerate(classes):
        held, kept = test.labels.count(label), train.labels.count(label)
        assert abs(held - round(0.2 * (held + kept))) <= 2, section
