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
import subprocess
import sys
from pathlib import Path

from saved.datasets import DEBIAN_FILE, DEBIAN_SETS, build_debian_records, parse_dumpavail


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
