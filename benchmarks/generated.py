"""What the scripts that write a generated document (RESULTS, STUDY, SWEEP) share: a
timestamped log on stderr, ``--render`` (rebuild the markdown from the JSON kept beside it,
computing nothing), ``--only`` (a subset of the models) and writing the document with its JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def render_only(args: argparse.Namespace, markdown: Callable[[dict[str, Any]], str]) -> bool:
    """With ``--render JSON``: write its markdown (beside it, or to ``--out``) and say so."""
    if not args.render:
        return False
    results = json.loads(args.render.read_text())
    out = args.out or args.render.with_suffix(".md")
    out.write_text(markdown(results))
    log(f"rendered {out} from {args.render}")
    return True


def chosen_models(parser: argparse.ArgumentParser, text: str, known: Iterable[str]) -> list[str]:
    """The comma-separated ``--only`` models, each one of ``known`` (a usage error if not)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    choices = list(known)
    unknown = sorted(set(names) - set(choices))
    if unknown or not names:
        parser.error(f"--only: unknown {unknown}; choose from {', '.join(choices)}")
    return names


def write_document(out: Path, results: dict[str, Any], markdown: Callable[..., str]) -> None:
    """The markdown to ``out``, its rows as JSON beside it (what ``--render`` reads), and the
    JSON as the last line on stdout (what the smoke tests read)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {out} and its .json ({results['seconds']:.0f} s)")
    print(json.dumps(results))
