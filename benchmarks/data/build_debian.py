"""Build the Debian text sets from the Debian archive index.

    .venv/bin/python benchmarks/data/build_debian.py            # runs `apt-cache dumpavail`
    .venv/bin/python benchmarks/data/build_debian.py FILE       # a saved dumpavail output
    .venv/bin/python benchmarks/data/build_debian.py FILE --out OTHER.jsonl.gz
    .venv/bin/python benchmarks/data/build_debian.py --long     # the long-description sets

Without ``--long``: the short-description sets, ``saved/data/debian_sections.jsonl.gz`` (shipped
in the package). With ``--long``: ``benchmarks/data/<set>.jsonl.gz`` for each set of
``saved.datasets.DEBIAN_LONG_SETS``, each text the short description and the long one, joined
from the English translation lists (``--translations FILE ...``; by default the
``Translation-en`` lists apt keeps, which need ``apt-get update -o Acquire::Languages=en``: the
image's default ``Acquire::Languages "none"`` skips them). A long set is split by source
package: every binary package of one source lies on the same side, so the test split holds no
near-copy of a training text (language packs, data packages and their program share most of
their words).

The output is byte-for-byte reproducible for the same index (fixed sections, seed, sort order,
gzip timestamp 0). Run `apt-get update` first for a current index.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import io
import json
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from saved.datasets import DEBIAN_FILE, DEBIAN_LONG_SETS, DEBIAN_SETS

TEST_FRACTION = 0.2
SEED = 0


LONG_DIR = Path(__file__).resolve().parent
APT_LISTS = "/var/lib/apt/lists/*_i18n_Translation-en*"
APT_HINT = (
    "run `apt-get update -o Acquire::Languages=en` first (the image's default "
    '`Acquire::Languages "none"` skips the translation lists), or pass --translations FILE'
)


def parse_stanzas(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """The fields of each stanza of a Debian control file (``apt-cache dumpavail``, a
    ``Translation-en`` list): a blank line ends a stanza, a line that starts with a space
    continues the field before it (kept, newline-separated, as it stands)."""
    fields: dict[str, str] = {}
    name = ""
    for line in (*lines, ""):
        line = line.rstrip("\n")
        if not line.strip():
            if fields:
                yield fields
            fields, name = {}, ""
        elif line[0] in " \t":
            if name:
                fields[name] += "\n" + line
        else:
            name, _, value = line.partition(":")
            fields[name] = value.strip()


def parse_dumpavail(lines: Iterable[str]) -> Iterator[tuple[str, str, str]]:
    """``(package, section, short description)`` of each stanza of ``apt-cache dumpavail``.

    The section's archive-area prefix (``contrib/``, ``non-free/``) is dropped.
    """
    for fields in parse_stanzas(lines):
        package, section = fields.get("Package", ""), _section(fields)
        description = fields.get("Description", "").split("\n", 1)[0]
        if package and section and description:
            yield package, section, description


def _section(fields: dict[str, str]) -> str:
    return fields.get("Section", "").rsplit("/", 1)[-1]


def description_text(field: str) -> str:
    """A ``Description-en`` field as plain text: the short description, then each paragraph of
    the long one on a line of its own (the lines of a paragraph joined by spaces; a line ``.``
    ends a paragraph; a preformatted line, two leading spaces, stays a line of its own)."""
    short, _, long = field.partition("\n")
    lines = [short.strip()]
    paragraph: list[str] = []
    for raw in long.split("\n") if long else []:
        text = raw[1:] if raw.startswith(" ") else raw
        if text.strip() == ".":
            lines.append(" ".join(paragraph))
            paragraph = []
        elif text.startswith(" "):  # preformatted: a line of its own
            lines.extend([" ".join(paragraph), text.strip()])
            paragraph = []
        else:
            paragraph.append(text.strip())
    lines.append(" ".join(paragraph))
    return "\n".join(line for line in lines if line)


def parse_translations(lines: Iterable[str]) -> dict[tuple[str, str], str]:
    """``(package, Description-md5)`` -> the English description as text
    (:func:`description_text`), from a ``Translation-en`` list."""
    found: dict[tuple[str, str], str] = {}
    for fields in parse_stanzas(lines):
        if "Package" in fields and "Description-md5" in fields and "Description-en" in fields:
            key = (fields["Package"], fields["Description-md5"])
            found.setdefault(key, description_text(fields["Description-en"]))
    return found


def long_stanzas(
    dump: Iterable[str], translations: dict[tuple[str, str], str]
) -> Iterator[tuple[str, str, str, str]]:
    """``(package, section, text, source)`` of each package of the index whose long description
    the translations hold (joined on the package name and ``Description-md5``; a package whose
    checksum differs was described anew and is left out). ``source`` is the source package."""
    for fields in parse_stanzas(dump):
        package, section = fields.get("Package", ""), _section(fields)
        text = translations.get((package, fields.get("Description-md5", "")))
        if package and section and text:
            source = fields.get("Source", package).split(" ", 1)[0]  # "name (version)"
            yield package, section, text, source


def build_debian_records(
    stanzas: Iterable[Sequence[str]],
    sections: Iterable[str] = DEBIAN_SETS["debian14"],
    *,
    test_fraction: float = TEST_FRACTION,
    seed: int = SEED,
    by_source: bool = False,
) -> list[dict[str, str]]:
    """De-duplicated, split records for the given sections, in a reproducible order.

    ``stanzas``: ``(package, section, text)``, or ``(package, section, text, source)`` with
    ``by_source``. A text that occurs in two different sections is ambiguous and dropped; a
    text repeated within one section is kept once (the alphabetically first package names it).
    Each section is shuffled with ``seed`` and its first ``round(test_fraction * size)`` texts
    form the test split, so every section is split in the same proportion. ``by_source``
    splits whole source packages instead (:func:`split_by_source`) and records each text's
    source.
    """
    wanted = set(sections)
    by_text: dict[str, set[str]] = defaultdict(set)
    first_package: dict[str, str] = {}
    source_of: dict[str, str] = {}
    for package, section, text, *source in stanzas:
        if section not in wanted:
            continue
        by_text[text].add(section)
        if package <= first_package.get(text, package):
            first_package[text] = package
            source_of[text] = source[0] if source else package
    per_section: dict[str, list[str]] = defaultdict(list)
    for text, owners in by_text.items():
        if len(owners) == 1:
            per_section[next(iter(owners))].append(text)
    if by_source:
        tested = split_by_source(per_section, source_of, test_fraction, seed)
    records: list[dict[str, str]] = []
    for section in sorted(per_section):
        texts = sorted(per_section[section])
        if not by_source:
            random.Random(f"{seed}:{section}").shuffle(texts)
            n_test = round(test_fraction * len(texts))
        for i, text in enumerate(texts):
            record = {"package": first_package[text], "section": section, "text": text}
            if by_source:
                is_test = text in tested
                record["source"] = source_of[text]
            else:
                is_test = i < n_test
            records.append({**record, "split": "test" if is_test else "train"})
    return records


def split_by_source(
    per_section: dict[str, list[str]], source_of: dict[str, str], test_fraction: float, seed: int
) -> set[str]:
    """The test texts of a split that never parts the texts of one source package: the sources
    in a seeded order, each taken into the test split whole while no section it has texts in
    would pass ``round(test_fraction * size)`` test texts. A family too large for that (a
    hundred language packs) stays in training; the other sections fill up with small ones."""
    texts_of: dict[str, list[tuple[str, str]]] = defaultdict(list)  # source -> (section, text)
    for section, texts in per_section.items():
        for text in texts:
            texts_of[source_of[text]].append((section, text))
    target = {section: round(test_fraction * len(texts)) for section, texts in per_section.items()}
    filled: collections.Counter[str] = collections.Counter()
    order = sorted(texts_of)
    random.Random(f"{seed}:sources").shuffle(order)
    tested: set[str] = set()
    for source in order:
        adds = collections.Counter(section for section, _ in texts_of[source])
        if all(filled[section] + n <= target[section] for section, n in adds.items()):
            filled.update(adds)
            tested.update(text for _, text in texts_of[source])
    return tested


def write_records(records: list[dict[str, str]], out: Path) -> int:
    """Gzipped JSONL, byte-for-byte reproducible (gzip timestamp 0); returns its size."""
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for record in records:
            handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    out.write_bytes(raw.getvalue())
    return len(raw.getvalue())


def _counts(records: list[dict[str, str]], sections: Iterable[str]) -> None:
    counts = collections.Counter((r["section"], r["split"]) for r in records)
    for section in sections:
        train, test = counts[section, "train"], counts[section, "test"]
        print(f"{section:12s} train {train:5d}  test {test:5d}")


def read_translations(files: list[str]) -> dict[tuple[str, str], str]:
    """The translations of ``files`` (plain text, or apt's compressed lists, which apt-helper
    decompresses), or of apt's own lists; a clear stop when there are none."""
    files = files or sorted(glob.glob(APT_LISTS))
    if not files:
        raise SystemExit(f"no English translation lists found ({APT_LISTS}): {APT_HINT}")
    found: dict[tuple[str, str], str] = {}
    for name in files:
        if name.endswith((".lz4", ".xz", ".gz", ".bz2", ".zst")):
            helper = ["/usr/lib/apt/apt-helper", "cat-file", name]
            text = subprocess.run(helper, capture_output=True, text=True, check=True).stdout
        else:
            text = Path(name).read_text(encoding="utf-8")
        for key, value in parse_translations(text.splitlines()).items():
            found.setdefault(key, value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dump", nargs="?", help="apt-cache dumpavail output (default: run it)")
    parser.add_argument("--out", help="the short set's file (default: the committed one)")
    parser.add_argument("--long", action="store_true", help="build the long-description sets")
    parser.add_argument(
        "--translations", nargs="+", default=[], metavar="FILE", help="with --long: the lists"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=LONG_DIR, help="with --long: where the sets go"
    )
    args = parser.parse_args()
    if args.long and args.out:
        parser.error("--out names the short set's file; the long sets go to --out-dir")
    if args.dump:
        with open(args.dump, encoding="utf-8") as handle:
            text = handle.read()
    else:
        text = subprocess.run(
            ["apt-cache", "dumpavail"], capture_output=True, text=True, check=True
        ).stdout
    if args.long:
        translations = read_translations(args.translations)
        stanzas = list(long_stanzas(text.splitlines(), translations))
        if not stanzas:
            raise SystemExit(f"no package of the index has its long description here: {APT_HINT}")
        for name, sections in DEBIAN_LONG_SETS.items():
            records = build_debian_records(stanzas, sections, by_source=True)
            out = args.out_dir / f"{name}.jsonl.gz"
            size = write_records(records, out)
            _counts(records, sections)
            print(f"{name}: {len(records)} records -> {out} ({size / 1e6:.2f} MB)", file=sys.stderr)
        return
    records = build_debian_records(parse_dumpavail(text.splitlines()), DEBIAN_SETS["debian14"])
    out = Path(args.out or DEBIAN_FILE)
    size = write_records(records, out)
    _counts(records, DEBIAN_SETS["debian14"])
    print(f"{len(records)} records -> {out} ({size / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
