"""What the scripts that write a generated document (RESULTS, STUDY, SWEEP) share: a
timestamped log on stderr, ``--render`` (rebuild the markdown from the JSON kept beside it,
computing nothing), ``--only`` (a subset of the models) and writing the document with its JSON."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def code_digest(*scripts: str) -> str:
    """sha256 of the engine (every file under ``saved/``: its code and the bundled data) and of
    the named scripts in ``benchmarks/``: a cached row is reused only by the very code (and
    data) that computed it."""
    digest = hashlib.sha256()
    engine = [f for f in sorted((ROOT / "saved").rglob("*")) if f.is_file()]
    sources = [f for f in engine if "__pycache__" not in f.parts]
    for path in [*sources, *(ROOT / "benchmarks" / s for s in scripts)]:
        digest.update(f"{path.relative_to(ROOT)}|".encode() + path.read_bytes())
    return digest.hexdigest()


@functools.cache
def commit() -> str:
    """The commit this run's code is (``git rev-parse``), ``+changes`` when the working tree
    differs from it: a generated document names the code that made it. Taken once, when a run
    starts (:func:`study_main` asks first): edits made while a long run works do not change
    the code it imported."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:  # no git: a copy of the code, not a checkout
        return "unknown"
    return (head or "unknown") + ("+changes" if changed else "")


def today() -> str:
    """The date and time a run is stamped with (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def provenance(results: dict[str, Any]) -> str:
    """Which code made a document and when: the commit and date its run stamped
    (:func:`finish`). A run older than the stamps says so, with the commit that added its
    JSON to the repository (``committed_in``, recorded afterwards from the history)."""
    added = results.get("committed_in")
    when = results.get("date") or (
        f"{added['date']} (the day its JSON was committed)" if added else "a date not recorded"
    )
    if results.get("commit"):
        return f"Code: commit {results['commit']}, run on {when}."
    if added:
        return (
            f"Code: not stamped by the run, which predates the stamp; its JSON was added in "
            f"commit {added['commit']} on {added['date']} (recorded afterwards from the history)."
        )
    return "Code: commit not recorded."


#: Every generated document and the script (in ``benchmarks/``) whose ``render(results)``
#: rebuilds its markdown from the JSON kept beside it: one list for the render-compare test.
DOCUMENTS = {
    "RESULTS": "paper_tables",
    "STUDY": "lbmask_study",
    "SWEEP": "sparsity_sweep",
    "BUDGET": "lbmask_budget",
    "COVERAGE": "coverage",
    "CONTROL": "positive_control",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def render_only(args: argparse.Namespace, markdown: Callable[[dict[str, Any]], str]) -> bool:
    """With ``--render JSON``: write its markdown (beside it, or to ``--out``) and say so;
    with ``--under-load`` too, mark the JSON's run as one that shared the machine."""
    if not args.render:
        return False
    results = json.loads(args.render.read_text())
    if getattr(args, "under_load", False):  # a run that shared the machine, said afterwards
        results["under_load"] = True
        args.render.write_text(json.dumps(results, indent=1) + "\n")
    out = args.out or args.render.with_suffix(".md")
    out.write_text(markdown(results))
    log(f"rendered {out} from {args.render}")
    return True


def chosen_models(
    parser: argparse.ArgumentParser, text: str, known: Iterable[str], option: str = "--only"
) -> list[str]:
    """The comma-separated models (or parts) of ``option``, each one of ``known`` (a usage error
    if not)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    choices = list(known)
    unknown = sorted(set(names) - set(choices))
    if unknown or not names:
        parser.error(f"{option}: unknown {unknown}; choose from {', '.join(choices)}")
    return names


def write_document(out: Path, results: dict[str, Any], markdown: Callable[..., str]) -> None:
    """The markdown to ``out``, its rows as JSON beside it (what ``--render`` reads), and the
    JSON as the last line on stdout (what the smoke tests read)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {out} and its .json ({results['seconds']:.0f} s)")
    print(json.dumps(results))


def document_parser(
    description: str, models: Iterable[str], document: str
) -> argparse.ArgumentParser:
    """The options every study script takes: ``--smoke``, ``--only``, ``--out``, ``--render``
    and ``--under-load`` (``document`` is the default output, e.g. ``STUDY``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--only", default=",".join(models), help="comma-separated models")
    parser.add_argument("--out", type=Path, default=None, help=f"default docs/{document}.md")
    parser.add_argument("--render", type=Path, help=f"rebuild the markdown from a {document}.json")
    parser.add_argument(
        "--under-load",
        action="store_true",
        help="say in the document that the machine was busy during the run",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help=f"an earlier {document}.json: the rows this run does not compute are kept from it",
    )
    return parser


def _row_key(row: dict[str, Any]) -> tuple[str, Any]:
    return row["model"], row.get("question")


def keep_earlier(results: dict[str, Any], earlier: Path, order: list[str]) -> None:
    """Add to ``results`` every row of the ``earlier`` run's JSON that this run did not compute
    (a model ``--only`` left out, or a part of a model this run skipped, keyed by model and
    question), in the order of ``order`` (the plans). Each kept row says under ``"from"`` which
    run computed it (the command and its seconds; a row an earlier ``--keep`` had kept keeps its
    own), so the document can say which rows are older. Only for runs of the same code: the
    caller's word, not checked; a model both runs built must be the same model (its bench
    summary equal but for timings), or nothing is mixed."""
    old = json.loads(earlier.read_text())
    origin = {
        "command": old["command"],
        "seconds": old["seconds"],
        "commit": old.get("commit", "not recorded"),
    }
    for model in set(results["benches"]) & set(old["benches"]):
        now, then = (
            {k: v for k, v in b.items() if not k.endswith("_s")}
            for b in (results["benches"][model], old["benches"][model])
        )
        if now != then:
            raise SystemExit(f"--keep: {model} differs from the earlier run's ({then} != {now})")
    done = {_row_key(r) for r in results["rows"]}
    kept = []
    for row in old["rows"]:
        if _row_key(row) in done:
            continue
        source = row.get("from") or origin
        kept.append({**row, "from": source})
    if not kept:
        return

    def rank(model: str) -> int:
        return order.index(model) if model in order else len(order)

    benches = {**old["benches"], **results["benches"]}
    results["benches"] = {m: benches[m] for m in sorted(benches, key=rank)}
    earlier_order = [_row_key(r) for r in old["rows"]]

    def place(row: dict[str, Any]) -> tuple[int, int]:  # a new question goes after the old ones
        key = _row_key(row)
        at = earlier_order.index(key) if key in earlier_order else len(earlier_order)
        return rank(row["model"]), at

    results["rows"] = sorted([*kept, *results["rows"]], key=place)


def kept_note(results: dict[str, Any]) -> list[str]:
    """One line per earlier run whose rows ``--keep`` kept: that run's command and seconds, and
    its rows by model and question (no line when every row is this run's)."""
    runs: dict[tuple[str, float, str], dict[str, list[str]]] = {}
    for row in results["rows"]:
        if "from" in row:
            came = row["from"]
            source = (came["command"], came["seconds"], came.get("commit") or "not recorded")
            runs.setdefault(source, {}).setdefault(row["model"], []).append(
                str(row.get("question"))
            )
    return [
        f"Kept from an earlier run (`{command}`, {seconds:.0f} s, commit {done}; `--keep`), "
        "not recomputed: "
        + "; ".join(
            f"{model} ({', '.join(dict.fromkeys(questions))})"
            for model, questions in models.items()
        )
        + "."
        for (command, seconds, done), models in runs.items()
    ]


def finish(
    out: Path,
    results: dict[str, Any],
    script: str,
    args: argparse.Namespace,
    started: float,
    markdown: Callable[..., str],
) -> None:
    """Stamp ``results`` with the command that regenerates it, the machine, whether it ran under
    load and its seconds since ``started``; then :func:`write_document`."""
    results.update(
        command=shlex.join([".venv/bin/python", f"benchmarks/{script}", *sys.argv[1:]]),
        machine=f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, CPU",
        under_load=args.under_load,
        seconds=time.perf_counter() - started,
        commit=commit(),
        date=today(),
    )
    write_document(out, results, markdown)


def study_main(
    description: str,
    plans: Iterable[str],
    document: str,
    script: str,
    study: Callable[..., dict[str, Any]],
    markdown: Callable[..., str],
    parts: Iterable[str] = (),
) -> None:
    """The whole command line of a study script: parse, ``--render`` or run ``study(models,
    smoke)`` seeded, then stamp and write ``docs/<document>.md`` (or ``--out``). A script with
    named ``parts`` (what each model's plan runs) also takes ``--parts`` (default: all of them)
    and is called ``study(models, smoke, parts)``; with ``--keep``, the parts left out keep
    their earlier rows."""
    choices, part_choices = list(plans), list(parts)
    parser = document_parser(description, choices, document)
    if part_choices:
        parser.add_argument(
            "--parts", default=",".join(part_choices), help="comma-separated: " + ", ".join(parts)
        )
    args = parser.parse_args()
    if render_only(args, markdown):
        return
    names = chosen_models(parser, args.only, choices)
    torch.manual_seed(0)
    commit()  # the code as the run starts
    started = time.perf_counter()
    if part_choices:
        chosen = chosen_models(parser, args.parts, part_choices, "--parts")
        results = study(names, args.smoke, chosen)
    else:
        results = study(names, args.smoke)
    if args.keep:
        keep_earlier(results, args.keep, choices)
    out = args.out or Path(__file__).resolve().parents[1] / "docs" / f"{document}.md"
    finish(out, results, script, args, started, markdown)
