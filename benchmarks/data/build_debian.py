"""Build saved/data/debian_sections.jsonl.gz from the Debian archive index.

    .venv/bin/python benchmarks/data/build_debian.py            # runs `apt-cache dumpavail`
    .venv/bin/python benchmarks/data/build_debian.py FILE       # a saved dumpavail output
    .venv/bin/python benchmarks/data/build_debian.py FILE --out OTHER.jsonl.gz

The output is byte-for-byte reproducible for the same index (fixed sections, seed, sort order,
gzip timestamp 0). Run `apt-get update` first for a current index.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import io
import json
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from saved.datasets import DEBIAN_FILE, DEBIAN_SETS

TEST_FRACTION = 0.2
SEED = 0


def parse_dumpavail(lines: Iterable[str]) -> Iterator[tuple[str, str, str]]:
    """``(package, section, short description)`` of each stanza of ``apt-cache dumpavail``.

    The section's archive-area prefix (``contrib/``, ``non-free/``) is dropped.
    """
    package = section = description = ""
    for line in (*lines, ""):
        line = line.rstrip("\n")
        if not line.strip():
            if package and section and description:
                yield package, section, description
            package = section = description = ""
        elif line.startswith("Package:"):
            package = line.partition(":")[2].strip()
        elif line.startswith("Section:"):
            section = line.partition(":")[2].strip().rsplit("/", 1)[-1]
        elif line.startswith("Description:"):
            description = line.partition(":")[2].strip()


def build_debian_records(
    stanzas: Iterable[tuple[str, str, str]],
    sections: Iterable[str] = DEBIAN_SETS["debian14"],
    *,
    test_fraction: float = TEST_FRACTION,
    seed: int = SEED,
) -> list[dict[str, str]]:
    """De-duplicated, split records for the given sections, in a reproducible order.

    A text that occurs in two different sections is ambiguous and dropped; a text repeated
    within one section is kept once (the alphabetically first package names it). Each section
    is shuffled with ``seed`` and its first ``round(test_fraction * size)`` texts form the test
    split, so every section is split in the same proportion.
    """
    wanted = set(sections)
    by_text: dict[str, set[str]] = defaultdict(set)
    first_package: dict[str, str] = {}
    for package, section, text in stanzas:
        if section not in wanted:
            continue
        by_text[text].add(section)
        first_package[text] = min(package, first_package.get(text, package))
    per_section: dict[str, list[str]] = defaultdict(list)
    for text, owners in by_text.items():
        if len(owners) == 1:
            per_section[next(iter(owners))].append(text)
    records: list[dict[str, str]] = []
    for section in sorted(per_section):
        texts = sorted(per_section[section])
        random.Random(f"{seed}:{section}").shuffle(texts)
        n_test = round(test_fraction * len(texts))
        for i, text in enumerate(texts):
            split = "test" if i < n_test else "train"
            records.append(
                {"package": first_package[text], "section": section, "text": text, "split": split}
            )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dump", nargs="?", help="apt-cache dumpavail output (default: run it)")
    parser.add_argument("--out", default=str(DEBIAN_FILE), help="default: the committed file")
    args = parser.parse_args()
    out = Path(args.out)
    if args.dump:
        with open(args.dump, encoding="utf-8") as handle:
            text = handle.read()
    else:
        text = subprocess.run(
            ["apt-cache", "dumpavail"], capture_output=True, text=True, check=True
        ).stdout
    records = build_debian_records(parse_dumpavail(text.splitlines()), DEBIAN_SETS["debian14"])
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for record in records:
            handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    out.write_bytes(raw.getvalue())
    counts = collections.Counter((r["section"], r["split"]) for r in records)
    for section in DEBIAN_SETS["debian14"]:
        print(
            f"{section:10s} train {counts[section, 'train']:5d}  test {counts[section, 'test']:5d}"
        )
    print(
        f"{len(records)} records -> {out} ({len(raw.getvalue()) / 1e6:.2f} MB)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
