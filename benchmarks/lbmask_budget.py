"""How much data and how many steps does LBMask need, and how low can structured masks go?
A held-out study, part two of docs/STUDY.md -> docs/BUDGET.md.

docs/STUDY.md learned every mask on 512 training samples plus their mined boundary points, for
at most 200-1,600 steps, and found curves that flattened far above the issue's targets. This
script asks whether that was the models or the budget:

* Q5 data: held-out boundary Dis against the decomposition data — the first study's 512
  samples with their mined boundary points ("512+mined"), the same 512 without them ("512",
  in no default plan: an exploratory variant) and the whole training split ("whole": 20,000
  images for the Fashion-MNIST models) — as learning curves of fixed-step runs;
* Q6 floor: masks learned on the evaluation boundary subset B itself and measured there. That
  is never a certificate (the samples are not independent of the masks); it is an optimistic
  floor: how low structured masks at s = 0.5 can take the boundary disagreement on these very
  samples, so a held-out figure far above it is the decomposer's generalisation, not the
  mask family's reach.

Everything else is the library's LBMask (objective, allocation, weighting) at s = 0.5; every
held-out figure is measured on the held-out boundary subset B of the test split, as in
docs/STUDY.md (the same B, the same models). Beside each curve, unstructured Wanda at s = 0.5
is scored on the same decomposition data: the comparison issue 13 asks for, at equal data.

    .venv/bin/python benchmarks/lbmask_budget.py              # ~3.5 h, writes docs/BUDGET.md
    .venv/bin/python benchmarks/lbmask_budget.py --only minilm-debian4,minilm-debian14  # ~2.4 h
    .venv/bin/python benchmarks/lbmask_budget.py --smoke --out /tmp/BUDGET.md   # CI
    .venv/bin/python benchmarks/lbmask_budget.py --render docs/BUDGET.json    # re-render only
    .venv/bin/python benchmarks/lbmask_budget.py --only minilm-debian4 --keep docs/BUDGET.json
        # 3,833 s: redo one model; the others keep their rows from the earlier JSON (same code)
    .venv/bin/python benchmarks/lbmask_budget.py --only minilm-debian4,minilm-debian14 \
        --parts wanda --keep docs/BUDGET.json
        # 354 s: only the Wanda rows (--parts: curves, wanda, floor); the rest is kept

Rows are cached like the first study's (``$SAVED_CACHE_DIR/study``), so an interrupted run
resumes. The last line printed is the JSON written beside the markdown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from generated import kept_note, log, provenance, study_main
from lbmask_study import Bench, build_bench, cached, measure, select
from models import head, load_split

from saved import LBMaskConfig
from saved.baselines import MaskContext, wanda
from saved.inputs import DEFAULT_BATCH_SIZE
from saved.masking.weights import WeightSpace

SPARSITY = 0.5
#: decomposition samples of the "whole" variant: every training text; for Fashion-MNIST a
#: seeded 20,000 of the 60,000 training images (the size the vision models were trained on)
WHOLE: dict[str, int | None] = {"fmnist": 20_000, "debian4": None, "debian14": None}


@dataclass(frozen=True)
class Plan:
    """What runs on one model: the data variants with their step counts, and the floor's."""

    data: tuple[tuple[str, int], ...]  # (variant, steps): "512+mined", "512", "whole"
    floor_steps: int


PLANS: dict[str, Plan] = {
    "minilm-debian4": Plan((("512+mined", 800), ("whole", 6400)), 400),
    "vit-fmnist": Plan((("512+mined", 800), ("whole", 1600)), 400),
    "resnet18-fmnist": Plan((("512+mined", 800), ("whole", 800)), 400),
    "minilm-debian14": Plan((("whole", 1600),), 400),
}
CHECKPOINTS = (50, 100, 200, 400, 800, 1600, 3200, 6400)
#: what each model's plan runs (``--parts``): the learning curves of every data variant,
#: unstructured Wanda scored on each variant's data, the floor
PARTS = ("curves", "wanda", "floor")


def smoke_plan(plan: Plan) -> Plan:
    return Plan(tuple((variant, 4) for variant, _ in plan.data), 4)


def variant_bench(bench: Bench, variant: str, smoke: bool) -> Bench:
    """``bench`` with the decomposition data of ``variant`` (the held-out B unchanged)."""
    if variant == "512+mined":
        return bench  # build_bench's own: 512 samples and their mined boundary points
    source = "fmnist" if bench.name.endswith("fmnist") else bench.name.split("-", 1)[1]
    count = 512 if variant == "512" else WHOLE[source]
    if smoke:
        count = 16 if variant == "512" else 32
    data = head(load_split(source, "train"), count, seed=1).without_labels()
    return replace(bench, calibration=data, sources=torch.arange(len(data)))


def floor_row(bench: Bench, steps: int, smoke: bool) -> dict[str, Any]:
    """Masks learned on B itself, measured on B at each checkpoint (the optimistic floor)."""
    on_b = replace(bench, calibration=bench.held_out, sources=torch.arange(len(bench.held_out)))
    config = LBMaskConfig(steps=steps)
    checkpoints = tuple(c for c in CHECKPOINTS if c <= steps) if not smoke else (2, 4)
    return cached("floor", on_b, config, 0, checkpoints, smoke)


def wanda_row(bench: Bench) -> dict[str, Any]:
    """Unstructured Wanda at s = 0.5 scored on ``bench``'s decomposition data (what
    ``saved.decompose(method="wanda")`` does with it), measured on the held-out B: the
    one-shot method issue 13 asks LBMask to beat, given the same data LBMask learned from."""
    space = WeightSpace.of(bench.model, bench.calibration.batch(slice(0, 2)))
    cpu = torch.device("cpu")
    context = MaskContext(bench.model, bench.calibration, bench.components, cpu, DEFAULT_BATCH_SIZE)
    started = time.perf_counter()
    masks = wanda.masks(space, bench.components.num_components, SPARSITY, context=context)
    seconds = time.perf_counter() - started
    found = measure(replace(bench, space=space), masks)
    log(f"{bench.name} wanda: Dis {found['paper']:.4f}, overlap {found['overlap']:.4f}")
    return {"model": bench.name, "method": "wanda", **found, "seconds": round(seconds, 1)}


def study(names: list[str], smoke: bool, parts: list[str]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    benches: dict[str, dict[str, Any]] = {}
    for name in names:
        plan = smoke_plan(PLANS[name]) if smoke else PLANS[name]
        bench = build_bench(name, smoke)
        benches[name] = bench.summary()
        for variant, steps in plan.data:
            chosen = variant_bench(bench, variant, smoke)
            facts = {"variant": variant, "n_rows": len(chosen.calibration)}
            if "curves" in parts:
                checkpoints = tuple(c for c in CHECKPOINTS if c <= steps) if not smoke else (2, 4)
                config = LBMaskConfig(steps=steps)
                row = cached(f"data:{variant}", chosen, config, 0, checkpoints, smoke)
                rows.append({**row, **facts})
            if "wanda" in parts:
                rows.append({"question": f"wanda:{variant}", **wanda_row(chosen), **facts})
        if "floor" in parts:
            rows.append({**floor_row(bench, plan.floor_steps, smoke), "variant": "floor"})
    return {"benches": benches, "rows": rows}


def curve_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in results["rows"] if r["question"].startswith("data:")]


def wanda_for(results: dict[str, Any], row: dict[str, Any]) -> dict[str, Any] | None:
    """The Wanda row scored on the data of LBMask's curve ``row`` (None if not run)."""
    found = select(results["rows"], model=row["model"], question=f"wanda:{row['variant']}")
    return found[0] if found else None


# --------------------------------------------------------------------------- markdown


def curve_cells(row: dict[str, Any], steps: list[int]) -> str:
    found = {c["step"]: c["paper"] for c in row["curve"]}
    return " | ".join(f"{found[s]:.4f}" if s in found else "" for s in steps)


def conclusions(results: dict[str, Any]) -> dict[str, str]:
    rows = results["rows"]
    data_text, floor_text = [], []
    against = []
    for model in results["benches"]:
        curves = {r["variant"]: r for r in curve_rows(results) if r["model"] == model}
        for variant, row in curves.items():
            other = wanda_for(results, row)
            if other:
                last = row["curve"][-1]
                verb = "below" if last["paper"] < other["paper"] else "not below"
                against.append(
                    f"{model} {variant}: {last['paper']:.4f} after {last['step']} steps, "
                    f"{verb} Wanda's {other['paper']:.4f} (overlap {other['overlap']:.4f})"
                )
        if curves:
            parts = []
            for variant, row in curves.items():
                best = min((c["paper"], c["step"]) for c in row["curve"])
                last = row["curve"][-1]
                parts.append(
                    f"{variant} ({row['n_rows']} rows) best {best[0]:.4f} at {best[1]} steps, "
                    f"{last['paper']:.4f} at {last['step']}"
                )
            data_text.append(f"{model}: " + "; ".join(parts))
        floor = select(rows, model=model, question="floor")
        if floor:
            last = floor[0]["curve"][-1]
            held = [c["paper"] for r in curves.values() for c in r["curve"]]
            gap = f"; the best held-out figure above is {min(held):.4f}" if held else ""
            floor_text.append(
                f"{model}: {last['paper']:.4f} on B after {last['step']} steps (overlap "
                f"{last['overlap']:.4f}){gap}"
            )
    versus = (
        " Against unstructured Wanda at s = 0.5 scored on the same decomposition data "
        "(each curve's last checkpoint, not its best: choosing the best would choose on B): "
        + "; ".join(against)
        + "."
        if against
        else ""
    )
    return {
        "Q5 data": "Held-out boundary Dis (paper aggregator) by decomposition data: "
        + "; ".join(data_text)
        + "."
        + versus,
        "Q6 floor": "Masks learned on the evaluation boundary subset B itself reach, on B: "
        + "; ".join(floor_text)
        + ". The floor is optimistic (those masks saw B), but it shows what structured masks "
        "at s = 0.5 can do on these samples; the distance from it to a held-out figure is "
        "what the decomposition data and budget leave on the table.",
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# BUDGET: how much data and how many steps LBMask needs, and how low structured "
        "masks can go",
        "",
        "Generated by `benchmarks/lbmask_budget.py` (part two of docs/STUDY.md); no number here "
        "is edited by hand. Regenerate:",
        "",
        f"    {results['command']}",
        "",
        f"{provenance(results)} "
        f"Machine: {results['machine']}. Sparsity {SPARSITY}, the library's LBMask settings "
        "(objective, allocation, sample weighting) with a fixed number of steps; `Dis` is the "
        "boundary disagreement on the held-out boundary subset B of docs/STUDY.md (the q = 0.2 "
        "lowest-margin samples of the test split), paper aggregator. Every held-out row "
        "learned its masks on training samples only; the floor rows learned them on B.",
        "",
        "## Models",
        "",
        "| model | classes | units | held out | \\|B\\| | model |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, bench in results["benches"].items():
        lines.append(
            f"| {name} | {bench['classes']} | {bench['units']} | {bench['n_held_out']} | "
            f"{bench['n_boundary']} | {bench['recipe']} |"
        )
    lines += ["", "## Conclusions", ""]
    lines += [f"**{question}.** {text}\n" for question, text in conclusions(results).items()]
    steps = sorted({c["step"] for r in results["rows"] for c in r.get("curve", ())})
    header = "| " + " | ".join(str(s) for s in steps) + " |"
    lines += ["## Q5: learning curves by decomposition data (held-out boundary Dis)", ""]
    lines += [
        "LBMask's Dis after each number of steps; beside it unstructured Wanda at s = 0.5 "
        "scored on the same data (its Dis and max overlap; blank where it was not run).",
        "",
        f"| model | data | rows | {header[2:]} margin agg. | max overlap | s/step | "
        "wanda, same data | wanda overlap |",
        "|" + " --- |" * (len(steps) + 8),
    ]
    for row in curve_rows(results):
        last, other = row["curve"][-1], wanda_for(results, row)
        versus = f"{other['paper']:.4f} | {other['overlap']:.4f}" if other else " | "
        lines.append(
            f"| {row['model']} | {row['variant']} | {row['n_rows']} | "
            f"{curve_cells(row, steps)} | {last['margin']:.4f} | {last['overlap']:.4f} | "
            f"{row['per_step_s']} | {versus} |"
        )
    lines += ["", "## Q6: the floor (masks learned on B, Dis measured on B: not a certificate)", ""]
    lines += [
        f"| model | {header[2:]} margin agg. | max overlap |",
        "|" + " --- |" * (len(steps) + 3),
    ]
    for row in select(results["rows"], question="floor"):
        last = row["curve"][-1]
        lines.append(
            f"| {row['model']} | {curve_cells(row, steps)} | {last['margin']:.4f} | "
            f"{last['overlap']:.4f} |"
        )
    lines += [
        "",
        f"Whole run: {results['seconds']:.0f} s"
        + (" (under load: the machine was shared)" if results.get("under_load") else "")
        + ". Rows already in the study cache are reused; each row's s/step is that of the run "
        "that computed it.",
    ]
    lines += kept_note(results)
    return "\n".join([*lines, ""])


def main() -> None:
    description = __doc__.split("\n\n")[0]
    study_main(description, PLANS, "BUDGET", "lbmask_budget.py", study, markdown, PARTS)


if __name__ == "__main__":
    main()
