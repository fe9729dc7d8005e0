"""How low must the sparsity go before the contract holds? A held-out sweep -> docs/SWEEP.md.

docs/RESULTS.md fails the semantic axis at s = 0.5 on every model, and ``sparsity="auto"`` did
not rescue any row. This sweep asks whether *any* sparsity the contract accepts could: on the
RESULTS models and data (the same 512 training samples with their mined boundary points, the
same test split, the same contract), it measures on the held-out boundary subset B

* LBMask with the library's defaults, learned once at s = 0.5, its ranking binarised at every
  s of ``GRID`` (exactly what ``sparsity="auto"`` reuses: no retraining per sparsity);
* LBMask relearned at s = eta (the least pruning the contract accepts), in case the ranking
  learned at 0.5 is what fails at lower sparsity;
* unstructured Wanda at every s of ``GRID`` (the per-weight baseline LBMask is compared with).

Each point gives the boundary disagreement Dis, its Clopper-Pearson upper limit (the verdict's
semantic axis) and the max pairwise Jaccard overlap (the structural axis). The contract can hold
only at a point where the upper limit is <= eps *and* the overlap is <= gamma *and* s >= eta.

    .venv/bin/python benchmarks/sparsity_sweep.py            # ~45 min, writes docs/SWEEP.md
    .venv/bin/python benchmarks/sparsity_sweep.py --smoke --out /tmp/SWEEP.md   # CI
    .venv/bin/python benchmarks/sparsity_sweep.py --render docs/SWEEP.json    # re-render only

Per-model rows are cached in ``$SAVED_CACHE_DIR/sweep`` (keyed by model, settings and grid), so
an interrupted sweep resumes. The last line printed is the JSON of every row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from generated import chosen_models, log, provenance, render_only, write_document
from models import cache_dir
from paper_rows import Bench, Settings

import saved
from saved import ClassComponents, predict_logits
from saved.boundary import calibration_set, calibration_sources
from saved.contract import boundary_subset, clopper_pearson_upper, jaccard_overlap, logit_margins
from saved.decomposition import Decomposition
from saved.inputs import match_dtype
from saved.masking.lbmask import train_masks
from saved.masking.units import UnitSpace

ROOT = Path(__file__).resolve().parents[1]
GRID = (0.1, 0.2, 0.3, 0.4, 0.5)
LEARNED_AT = 0.5
MODELS = ("vit-fmnist", "minilm-debian4", "minilm-debian14", "resnet18-fmnist")


def point(
    method: str, sparsity: float, logits: torch.Tensor, masks: torch.Tensor, sweep: Sweep
) -> dict[str, Any]:
    """One point of the sweep: Dis on B, its upper limit, the max pairwise overlap."""
    decomposed = sweep.components.predict(logits)
    wrong = int((decomposed != sweep.target).sum())
    n = sweep.target.numel()
    overlap = jaccard_overlap(masks.cpu())
    k = overlap.shape[0]
    return {
        "method": method,
        "sparsity": sparsity,
        "dis": wrong / n,
        "upper": clopper_pearson_upper(wrong, n, sweep.settings.contract.delta),
        "overlap": float(overlap[~torch.eye(k, dtype=torch.bool)].max()),
    }


class Sweep:
    """One RESULTS model: its data (as in docs/RESULTS.md) and the held-out boundary subset B."""

    def __init__(self, name: str, settings: Settings, relearn: bool = True) -> None:
        self.name, self.settings, self.relearn = name, settings, relearn
        self.bench = Bench(name, settings)
        model, test = self.bench.model, self.bench.test.without_labels()
        reference = predict_logits(model, test)
        subset = boundary_subset(logit_margins(reference), q=settings.contract.kappa)
        self.probe = test.select(subset)
        self.target = reference.argmax(1)[subset]
        self.n_test = len(test)
        self.components = ClassComponents(reference.shape[1])

    def learn(self, sparsity: float) -> tuple[torch.Tensor, UnitSpace, dict[str, Any]]:
        """LBMask logits at ``sparsity`` with the library's defaults, on the same calibration
        rows ``saved.decompose`` builds (the smoke run checks the masks are the same)."""
        bench = self.bench
        inputs = match_dtype(bench.calib, bench.model)
        space = UnitSpace.of(bench.model, inputs.batch(slice(0, 2)))
        config = replace(self.settings.lbmask(), sparsity=sparsity)
        run = train_masks(
            bench.model,
            calibration_set(inputs, bench.mined("held-out"), bench.model),
            self.components,
            space,
            config,
            seed=0,
            sources=calibration_sources(len(inputs), bench.mined("held-out")),
        )
        return run.logits, space, {"sparsity": sparsity, **run.summary().to_dict()}

    def masked(self, space: UnitSpace, masks: torch.Tensor) -> torch.Tensor:
        decomposition = Decomposition(self.bench.model, space, self.components, masks)
        return decomposition.component_logits(self.probe)

    def run(self) -> dict[str, Any]:
        contract, points, runs = self.settings.contract, [], []
        started = time.perf_counter()
        logits, space, summary = self.learn(LEARNED_AT)
        runs.append(summary)
        allocation = self.settings.lbmask().allocation
        learned_masks = None
        for s in GRID:
            masks = space.binarise(logits, s, allocation)
            if s == LEARNED_AT:
                learned_masks = masks
            points.append(point("lbmask", s, self.masked(space, masks), masks, self))
        if self.relearn:
            eta_logits, _, summary = self.learn(contract.eta)
            runs.append(summary)
            masks = space.binarise(eta_logits, contract.eta, allocation)
            points.append(
                point("lbmask relearned", contract.eta, self.masked(space, masks), masks, self)
            )
        for s in GRID:
            decomposition = saved.decompose(
                self.bench.model,
                self.bench.calib,
                method="wanda",
                sparsity=s,
                boundary=self.bench.boundary,
                mined=self.bench.mined("held-out"),
                progress=False,
            )
            logits_w = decomposition.component_logits(self.probe)
            points.append(point("wanda", s, logits_w, decomposition.supports, self))
        row: dict[str, Any] = {
            "model": self.name,
            "test_accuracy": self.bench.record["test_accuracy"],
            "n_test": self.n_test,
            "n_boundary": self.target.numel(),
            "points": points,
            "runs": runs,
            "seconds": round(time.perf_counter() - started, 1),
        }
        if self.settings.smoke:  # the masks learned here are the ones saved.decompose learns
            reference = saved.decompose(
                self.bench.model,
                self.bench.calib,
                sparsity=LEARNED_AT,
                boundary=self.bench.boundary,
                lbmask=self.settings.lbmask(),
                mined=self.bench.mined("held-out"),
                progress=False,
            )
            row["same_masks_as_decompose"] = bool(torch.equal(reference.masks, learned_masks))
        for p in points:
            log(
                f"{self.name} {p['method']} s={p['sparsity']:.2f}: Dis {p['dis']:.4f} "
                f"(upper {p['upper']:.4f}), overlap {p['overlap']:.4f}"
            )
        return row


def cached(name: str, settings: Settings, relearn: bool = True) -> dict[str, Any]:
    material = [name, {k: v for k, v in asdict(settings).items() if k != "contract"}]
    material += [settings.contract.to_dict(), GRID, LEARNED_AT, saved.__version__]
    if not relearn:
        material.append("without relearning at eta")
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    path = cache_dir().parent / "sweep" / f"{key}.json"
    if path.exists():
        log(f"{name}: from the cache")
        row: dict[str, Any] = json.loads(path.read_text())
        return row
    row = Sweep(name, settings, relearn).run()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    temporary.write_text(json.dumps(row))
    temporary.replace(path)
    return row


# --------------------------------------------------------------------------- markdown


def admissible(p: dict[str, Any], contract: dict[str, Any]) -> bool:
    """The contract can hold here: semantic, structural and reduction axes all within."""
    return (
        p["upper"] <= contract["eps"]
        and p["overlap"] <= contract["gamma"]
        and p["sparsity"] >= contract["eta"] - 1e-9
    )


def conclusion(row: dict[str, Any], contract: dict[str, Any]) -> str:
    points = row["points"]
    by = {(p["method"], p["sparsity"]): p for p in points}
    semantic = [p for p in points if p["upper"] <= contract["eps"]]
    holds = [p for p in points if admissible(p, contract)]
    lowest = min(
        (p for p in points if p["method"] != "wanda"), key=lambda p: (p["dis"], -p["sparsity"])
    )
    parts = [f"**{row['model']}** (|B| = {row['n_boundary']})."]
    if holds:
        where = ", ".join(f"{p['method']} s={p['sparsity']:.2f}" for p in holds)
        parts.append(f"The contract can hold at: {where}.")
    else:
        parts.append(
            "No point meets both axes at s >= eta: the contract cannot hold at any sparsity of "
            'the grid, so no per-component choice between them (`sparsity="auto"`) can make it.'
        )
    if semantic:
        where = ", ".join(
            f"{p['method']} s={p['sparsity']:.2f} (overlap {p['overlap']:.4f})" for p in semantic
        )
        parts.append(f"Semantic axis within eps at: {where}.")
    else:
        parts.append(
            f"The semantic axis is within eps nowhere; LBMask's lowest Dis is {lowest['dis']:.4f} "
            f"({lowest['method']}, s={lowest['sparsity']:.2f}, upper {lowest['upper']:.4f})."
        )
    eta_rate = contract["eta"]
    reused = by.get(("lbmask", eta_rate))
    relearned = by.get(("lbmask relearned", eta_rate))
    if reused and relearned:
        parts.append(
            f"At s = eta = {eta_rate:g}: ranking from s = {LEARNED_AT} gives Dis "
            f"{reused['dis']:.4f}, relearned at eta {relearned['dis']:.4f}."
        )
    wanda = by.get(("wanda", LEARNED_AT))
    if wanda:
        matching = [
            p["sparsity"]
            for p in points
            if p["method"] == "lbmask" and p["dis"] <= wanda["dis"] + 1e-12
        ]
        if matching:
            where = ", ".join(f"{rate:.2f}" for rate in matching)
            parts.append(
                f"LBMask's Dis is at or below unstructured Wanda's at s = {LEARNED_AT} "
                f"({wanda['dis']:.4f}) at s = {where} of the grid."
            )
        else:
            parts.append(
                f"LBMask does not reach unstructured Wanda's Dis at s = {LEARNED_AT} "
                f"({wanda['dis']:.4f}) at any sparsity of the grid."
            )
    return " ".join(parts)


def table(row: dict[str, Any], contract: dict[str, Any]) -> list[str]:
    lines = [
        "| method | s | Dis | upper (Clopper-Pearson) | max overlap | contract can hold |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in row["points"]:
        lines.append(
            f"| {p['method']} | {p['sparsity']:.2f} | {p['dis']:.4f} | {p['upper']:.4f} | "
            f"{p['overlap']:.4f} | {'yes' if admissible(p, contract) else 'no'} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    contract = results["contract"]
    lines = [
        "# SWEEP: how low must the sparsity go before the contract holds?",
        "",
        "Generated by `benchmarks/sparsity_sweep.py`; no number here is edited by hand. "
        "Regenerate:",
        "",
        f"    {results['command']}",
        "",
        f"{provenance(results)} "
        f"Machine: {results['machine']}. Contract: eps = {contract['eps']}, boundary quantile "
        f"q = {contract['kappa']}, gamma = {contract['gamma']}, eta = {contract['eta']}, "
        f"delta = {contract['delta']}. Data as in docs/RESULTS.md: masks learned on "
        f"{results['settings']['calib']} training samples and their mined boundary points; "
        "every figure is measured on the held-out boundary subset B of the test split. The "
        "models are trained by `benchmarks/models.py` on the machine that runs the sweep (test "
        "accuracy in each heading; the vision models' training is not bit-reproducible across "
        "machines, so compare a model's points with each other, and with docs/RESULTS.md only "
        "when the accuracies agree). "
        f"`lbmask`: the library's defaults, learned once at s = {LEARNED_AT}, the ranking "
        'binarised at each s (what `sparsity="auto"` reuses); `lbmask relearned`: learned '
        "again at s = eta (for the models the command's `--relearn` names: it doubles the "
        "learning time); `wanda`: unstructured Wanda at each s. The contract can hold only "
        "where the upper limit is <= eps, the overlap <= gamma and s >= eta.",
        "",
        "## Conclusions",
        "",
    ]
    for row in results["rows"]:
        lines += [conclusion(row, contract), ""]
    for row in results["rows"]:
        lines += [
            f"## {row['model']} (test accuracy {row['test_accuracy']:.4f}; n = {row['n_test']}, "
            f"|B| = {row['n_boundary']})",
            "",
            *table(row, contract),
            "",
        ]
        steps = ", ".join(
            f"s = {r['sparsity']}: {r['steps_run']} fixed steps"
            if r["stopped"] == "steps"
            else f"s = {r['sparsity']}: stopped ({r['stopped']}) after {r['steps_run']} steps "
            f"(best {r['best_step']})"
            for r in row["runs"]
        )
        lines += [f"Mask learning: {steps}.", ""]
    lines.append(
        "No timing is reported here: the sweep is not a benchmark, and its rows may come from "
        "the cache (`$SAVED_CACHE_DIR/sweep`) or share the machine."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for CI")
    parser.add_argument("--only", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--out", type=Path, default=None, help="default docs/SWEEP.md")
    parser.add_argument("--render", type=Path, help="rebuild the markdown from a SWEEP.json")
    parser.add_argument(
        "--relearn",
        default=None,
        help="comma-separated models that also relearn masks at s = eta (default: all); the "
        "relearning doubles a model's mask-learning time",
    )
    args = parser.parse_args()
    if render_only(args, markdown):
        return
    names = chosen_models(parser, args.only, MODELS)
    settings = Settings.tiny() if args.smoke else Settings()
    out = args.out or ROOT / "docs" / "SWEEP.md"
    torch.manual_seed(0)
    started = time.perf_counter()
    relearn = set(names) if args.relearn is None else {n.strip() for n in args.relearn.split(",")}
    rows = [cached(name, settings, name in relearn) for name in names]
    results = {
        "command": shlex.join([".venv/bin/python", "benchmarks/sparsity_sweep.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, CPU",
        "settings": {k: v for k, v in asdict(settings).items() if k != "contract"},
        "contract": settings.contract.to_dict(),
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    write_document(out, results, markdown)


if __name__ == "__main__":
    main()
