"""Which LBMask objective, aggregator, allocation and budget? A held-out study -> docs/STUDY.md.

Every run decomposes on one split and measures on a disjoint held-out split, never on the
samples the masks were learned from:

* ``mlp-digits`` / ``cnn-digits``: the 64-128-128-10 MLP (the demo's) and the residual CNN (width
  16, the example's), trained on scikit-learn's digits; masks learned on a seeded 1,200 of the
  1,797 digits, measured on the other 597;
* ``minilm-debian4`` / ``minilm-debian14``: MiniLM fine-tuned on the Debian sections
  (``benchmarks/models.py``); masks learned on a seeded 512 training texts, measured on the
  *whole* test split;
* ``resnet18-fmnist`` / ``vit-fmnist``: masks learned on 512 training images, measured on a
  seeded 2,000 test images;
* ``mlp-unseen``: the same MLP trained on the 1,200 decomposition digits only, measured on the
  597 it never saw (issue 37: a certificate on samples the *model* never trained on either).

The measure is the boundary disagreement Dis: the disagreement between the decomposed and the
reference prediction on the held-out boundary subset B (the q = 0.2 lowest-margin held-out
samples), at sparsity 0.5, measured after 25, 50, 100, ... steps of one run (learning curves).
Both aggregators are measured on the same masks. Questions:

* Q1 objectives (:mod:`saved.masking.objectives`), with the paper's aggregator and per-group quotas;
* Q2 aggregators: ``paper`` (``argmax_k m_k[0]``) against ``margin`` (``argmax_k m_k[0] - m_k[1]``);
* Q3 allocation: per-group quotas against one quota per unit kind across layers;
* Q4 budget: the learning curves, and the automatic stopping rule (held-out part of the
  calibration data) with the library's defaults;
* Q5 learning rate (``mlp-unseen``): learning curves for each rate of ``RATES``, several seeds;
* Q6 decomposition data (``mlp-unseen``): held-out Dis against the number of decomposition
  samples (learning curves over data), drawn from (a) the model's training samples, (b) samples
  it never saw; both certified on the same 297 unseen digits, disjoint from both;
* Q7 the defaults, one change at a time: the library's defaults (automatic stopping), each
  setting of :data:`PREVIOUS` put back to its value before issue 37's rerun or issue 38 (the
  large models: those of :data:`LATEST`), and all of them together (the previous defaults).

Q1, Q3 and Q5 run fixed step counts with the library's other settings (its boundary rows and
overlap hinge among them).

    .venv/bin/python benchmarks/lbmask_study.py              # ~60 min, writes docs/STUDY.md
    .venv/bin/python benchmarks/lbmask_study.py --smoke --out /tmp/STUDY.md   # CI, a minute
    .venv/bin/python benchmarks/lbmask_study.py --render docs/STUDY.json    # re-render only

The rows are also written as JSON beside the markdown; the last line printed is that JSON.
"""

from __future__ import annotations

import functools
import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from generated import code_digest, kept_note, log, provenance, study_main
from models import cache_dir, head, load_split, trained
from torch import nn

from saved import BoundaryConfig, ClassComponents, Inputs, LBMaskConfig, as_inputs, testing
from saved._runtime import predict_logits
from saved.boundary import calibration_set, calibration_sources, mine_boundary
from saved.contract import boundary_subset, disagreement, jaccard_overlap, logit_margins
from saved.decomposition import Decomposition
from saved.masking.lbmask import train_masks
from saved.masking.units import UnitSpace

ROOT = Path(__file__).resolve().parents[1]
SPARSITY = 0.5


@dataclass(frozen=True)
class Plan:
    """What runs on one model."""

    objectives: tuple[str, ...]
    seeds: tuple[int, ...]
    checkpoints: tuple[int, ...]
    batch_size: int
    allocation: bool = True  # Q3: the default objective with the other allocation too
    auto: bool = True  # Q4: the library's defaults with automatic stopping
    rates: tuple[float, ...] = ()  # Q5: learning curves at each learning rate
    sizes: tuple[int, ...] = ()  # Q6: decomposition sizes, from training and unseen samples
    size_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # Q6's seeds: its |B| is half the others'
    ablation_seeds: tuple[int, ...] = (0,)  # Q7's seeds (seed 0 of the defaults is Q4's row)
    ablation_full: bool = True  # Q7: every variant; False: the defaults, LATEST and the previous


ALL = ("bce", "bce-plain", "match", "kl", "tie", "aggregate", "aggregate-match", "score")
#: Every objective a table may show: ALL plus the flip-aware ones (issue 37), run on mlp-unseen.
SHOWN = (*ALL, "hinge", "ce")
#: The objective Q1-Q5 measure the others against: the library's own (``"score"`` since
#: issue 37's rerun; ``"aggregate"`` before, docs/DECISIONS.md says why it changed).
LIBRARY = LBMaskConfig().objective
DEFAULT = LIBRARY
#: Q1 compares objectives with one quota per unit kind; Q3 runs the default objective with
#: per-group quotas too. The library's "auto" allocation (Q4) resolves per model.
ALLOCATION, OTHER_ALLOCATION = "kind", "group"
SHORT = (25, 50, 100, 200)
#: Q7: the settings issue 37's rerun and issue 38 changed, at their previous defaults
PREVIOUS: dict[str, Any] = {
    "objective": "aggregate",
    "boundary_set": "rows",
    "overlap_limit": None,
    "stop_on": "loss",
    "alpha": 0.0,  # a uniform start; since issue 38 the Taylor prior (alpha 1)
}
#: Q7 on the large models (a run is minutes): the newest change alone, besides all of them
LATEST = ("alpha",)
DIGITS_SEEDS = (0, 1, 2, 3, 4)

PLANS: dict[str, Plan] = {
    "mlp-digits": Plan(
        ALL, (0, 1), (25, 50, 100, 200, 400, 800, 1600), 128, ablation_seeds=DIGITS_SEEDS
    ),
    "cnn-digits": Plan(ALL, (0, 1), (25, 50, 100, 200, 400, 800), 64, ablation_seeds=DIGITS_SEEDS),
    "vit-fmnist": Plan(ALL, (0,), (25, 50, 100, 200, 400), 32),
    # the large models: Q7 with the defaults, LATEST and the previous ones (a run is minutes)
    "minilm-debian4": Plan(
        ("bce", "kl", "tie", "aggregate", "score"), (0,), SHORT, 32, ablation_full=False
    ),
    "resnet18-fmnist": Plan(
        ("bce", "kl", "aggregate", "score"), (0,), SHORT, 32, ablation_full=False
    ),
    "minilm-debian14": Plan(
        ("bce", "kl", "aggregate", "score"), (0,), SHORT, 32, ablation_full=False
    ),
    "mlp-unseen": Plan(
        ("aggregate", "hinge", "ce", "score"),
        (0, 1, 2),
        (25, 50, 100, 200, 400, 800),
        32,
        allocation=False,
        rates=(0.01, 0.02, 0.05),
        sizes=(75, 150, 300, 600, 1200),
        ablation_seeds=DIGITS_SEEDS,
    ),
}
#: Q6's unseen decomposition samples come from this many of the 597 unseen digits; the rest
#: (297) certify both sources.
UNSEEN_POOL = 300


def smoke_plan(plan: Plan) -> Plan:
    objectives = tuple(dict.fromkeys((plan.objectives[0], DEFAULT)))
    return replace(
        plan,
        objectives=objectives,
        seeds=(0,),
        checkpoints=(2, 4),
        batch_size=8,
        rates=plan.rates[:2],
        sizes=tuple(n // 20 for n in plan.sizes[:2]),
        size_seeds=(0,),
        ablation_seeds=(0,),
    )


# --------------------------------------------------------------------------- data


@dataclass
class Bench:
    """A model, its decomposition data with mined boundary points, and the held-out B."""

    name: str
    model: nn.Module
    calibration: Inputs
    sources: torch.Tensor
    held_out: Inputs  # the held-out boundary subset B
    reference: torch.Tensor  # y(x) on B
    n_held_out: int
    space: UnitSpace
    components: ClassComponents
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What the documents say about the bench: its notes, sizes and class count."""
        return {
            **self.notes,
            "n_held_out": self.n_held_out,
            "n_boundary": len(self.reference),
            "units": self.space.num_units,
            "classes": self.components.num_classes,
        }


@functools.cache  # Q6 rebuilds its benches from the same model: trained once
def _digits(name: str, smoke: bool) -> tuple[nn.Module, Inputs, Inputs, str]:
    images = name.startswith("cnn")
    x, y = testing.digits(images=images)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    used, held = (order[:1200], order[1200:]) if not smoke else (order[:64], order[64:192])
    # mlp-unseen trains on the decomposition digits only: the held-out ones are unseen by all
    seen = used if name == "mlp-unseen" else torch.arange(len(y))
    if images:
        model = testing.tiny_resnet(width=16, seed=0)
    else:
        model = testing.tiny_mlp(hidden=(128, 128), seed=0)
    model = testing.train_classifier(model, x[seen], y[seen], steps=300)
    recipe = (
        f"trained on the {len(used)} decomposition digits only (300 steps)"
        if name == "mlp-unseen"
        else "trained on all 1,797 digits (300 steps)"
    )
    return model, as_inputs(x[used]), as_inputs(x[held]), recipe


def build_bench(name: str, smoke: bool) -> Bench:
    if name.endswith("digits") or name == "mlp-unseen":
        model, data, held, recipe = _digits(name, smoke)
        boundary = BoundaryConfig()
    else:
        model, record = trained(name, is_smoke=smoke, log=log)
        source = "fmnist" if name.endswith("fmnist") else name.split("-", 1)[1]
        data = head(load_split(source, "train"), 512 if not smoke else 16, seed=1).without_labels()
        held = load_split(source, "test")
        if source == "fmnist" or smoke:
            held = head(held, 2000 if not smoke else 48, seed=2)
        held = held.without_labels()
        recipe = f"test accuracy {record['test_accuracy']:.4f}"
        boundary = BoundaryConfig(norm="2") if source != "fmnist" else BoundaryConfig()
    return bench_of(name, model, data, held, boundary, recipe)


def bench_of(
    name: str, model: nn.Module, data: Inputs, held: Inputs, boundary: BoundaryConfig, recipe: str
) -> Bench:
    """Mine ``data``'s boundary and take the held-out boundary subset B of ``held``."""
    started = time.perf_counter()
    mined = mine_boundary(model, data, boundary, progress=False)
    mining = time.perf_counter() - started
    reference_logits = predict_logits(model, held)
    subset = boundary_subset(logit_margins(reference_logits), q=0.2)
    classes = reference_logits.shape[1]
    log(
        f"{name}: {len(data)} decomposition samples, mined in {mining:.0f} s; held out "
        f"{len(held)} (|B| = {subset.numel()})"
    )
    return Bench(
        name=name,
        model=model,
        calibration=calibration_set(data, mined, model),
        sources=calibration_sources(len(data), mined),
        held_out=held.select(subset),
        reference=reference_logits.argmax(1)[subset],
        n_held_out=len(held),
        space=UnitSpace.of(model, data.batch(slice(0, 2))),
        components=ClassComponents(classes),
        notes={"recipe": recipe, "n_decompose": len(data), "mining_s": round(mining, 1)},
    )


# --------------------------------------------------------------------------- runs


def measure(bench: Bench, masks: torch.Tensor) -> dict[str, float]:
    """Held-out boundary Dis under both aggregators, and the max pairwise overlap."""
    decomposition = Decomposition(bench.model, bench.space, bench.components, masks)
    logits = decomposition.component_logits(bench.held_out)
    overlap = jaccard_overlap(masks)
    k = overlap.shape[0]
    result = {
        aggregator: disagreement(
            bench.reference, ClassComponents(k, aggregator=aggregator).predict(logits)
        )
        for aggregator in ("paper", "margin")
    }
    result["overlap"] = float(overlap[~torch.eye(k, dtype=torch.bool)].max())
    return result


def run(bench: Bench, config: LBMaskConfig, seed: int, checkpoints: tuple[int, ...]) -> dict:
    """One mask-learning run; the held-out Dis at every checkpoint (fixed steps) or at the end
    (automatic stopping). Seconds count mask learning only, not the measurements."""
    curve: list[dict[str, float]] = []
    spent = [0.0]

    def checkpoint(step: int, logits: torch.Tensor) -> None:
        if step in checkpoints:
            started = time.perf_counter()
            masks = bench.space.binarise(logits.cpu(), SPARSITY, config.allocation)
            curve.append({"step": step, **measure(bench, masks)})
            spent[0] += time.perf_counter() - started

    started = time.perf_counter()
    outcome = train_masks(
        bench.model,
        bench.calibration,
        bench.components,
        bench.space,
        config,
        seed=seed,
        sources=bench.sources,
        callback=checkpoint if config.steps != "auto" else None,
    )
    seconds = time.perf_counter() - started - spent[0]
    if config.steps == "auto":
        masks = bench.space.binarise(outcome.logits, SPARSITY, config.allocation)
        curve.append({"step": outcome.best_step, **measure(bench, masks)})
    row = {
        "model": bench.name,
        "objective": config.objective,
        "allocation": config.allocation,
        "resolved_allocation": bench.space.resolve_allocation(config.allocation),
        "steps": config.steps,
        "batch": config.batch_size,
        "lr": config.lr,
        "settings": {name: getattr(config, name) for name in PREVIOUS},
        "seed": seed,
        "curve": curve,
        "seconds": round(seconds, 1),
        "per_step_s": round(seconds / max(outcome.steps_run, 1), 3),
        "run": outcome.summary().to_dict(),
    }
    last = curve[-1]
    log(
        f"{bench.name} {config.objective}/{config.allocation} seed {seed} steps {config.steps}: "
        f"Dis {last['paper']:.4f} (paper) {last['margin']:.4f} (margin), overlap "
        f"{last['overlap']:.4f}, {seconds:.0f} s"
    )
    return row


@functools.cache
def study_digest() -> str:
    """The digest of ``saved/``, this script and the models' script (computed once per run): a
    cached row is read only by the very code that computed it."""
    return code_digest("lbmask_study.py", "models.py", "generated.py")


def _row_key(question: str, bench: Bench, config: LBMaskConfig, seed: int, smoke: bool) -> str:
    concrete = replace(config, allocation=bench.space.resolve_allocation(config.allocation))
    material = [question, bench.name, asdict(concrete), seed, smoke, study_digest()]
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def cached(
    question: str,
    bench: Bench,
    config: LBMaskConfig,
    seed: int,
    checkpoints: tuple[int, ...],
    smoke: bool,
) -> dict[str, Any]:
    """:func:`run`, its row kept in ``$SAVED_CACHE_DIR/study`` so an interrupted study resumes
    where it stopped (keyed by the run's settings and :func:`study_digest`)."""
    folder = cache_dir().parent / "study"
    path = folder / f"{_row_key(question, bench, config, seed, smoke)}.json"
    if path.exists():
        row: dict[str, Any] = json.loads(path.read_text())
        log(f"{bench.name} {config.objective}/{config.allocation} seed {seed}: from the cache")
        row.pop("migrated", None)
        row["allocation"] = config.allocation
        row["resolved_allocation"] = bench.space.resolve_allocation(config.allocation)
        return row
    row = {"question": question, **run(bench, config, seed, checkpoints)}
    folder.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    temporary.write_text(json.dumps(row))
    temporary.replace(path)
    return row


def study(names: list[str], smoke: bool) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    benches: dict[str, dict[str, Any]] = {}
    for name in names:
        plan = smoke_plan(PLANS[name]) if smoke else PLANS[name]
        bench = build_bench(name, smoke)
        benches[name] = bench.summary()
        fixed = LBMaskConfig(
            steps=max(plan.checkpoints), batch_size=plan.batch_size, allocation=ALLOCATION
        )
        for objective in plan.objectives:
            for seed in plan.seeds:
                config = replace(fixed, objective=objective)  # type: ignore[arg-type]
                rows.append(cached("objective", bench, config, seed, plan.checkpoints, smoke))
        if plan.allocation:
            config = replace(fixed, objective=DEFAULT, allocation=OTHER_ALLOCATION)
            for seed in plan.seeds:
                rows.append(cached("allocation", bench, config, seed, plan.checkpoints, smoke))
        auto = LBMaskConfig() if not smoke else LBMaskConfig(max_steps=6, eval_every=2)
        if plan.auto:
            rows.append(cached("auto", bench, auto, 0, (), smoke))
        for rate in plan.rates:
            config = replace(fixed, objective=DEFAULT, allocation=auto.allocation, lr=rate)
            for seed in plan.seeds:
                rows.append(cached("rate", bench, config, seed, plan.checkpoints, smoke))
        if plan.sizes:
            rows += data_rows(bench, plan, auto, smoke)
        rows += ablation_rows(bench, plan, auto, smoke)
    return {"benches": benches, "rows": rows}


def ablations(full: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """Q7's variants: the defaults, each of :data:`PREVIOUS` alone (``full``; otherwise those
    of :data:`LATEST`), and all of them."""
    one = [
        (f"{name}={value}", {name: value})
        for name, value in PREVIOUS.items()
        if full or name in LATEST
    ]
    return [("defaults", {}), *one, ("previous defaults", dict(PREVIOUS))]


def ablation_rows(bench: Bench, plan: Plan, config: LBMaskConfig, smoke: bool) -> list[dict]:
    """Q7: automatic stopping with the library's defaults and with each variant of
    :func:`ablations`, on every seed of ``plan.ablation_seeds``."""
    rows = []
    for variant, changes in ablations(plan.ablation_full):
        for seed in plan.ablation_seeds:
            question = "auto" if not changes and seed == 0 else "ablation"  # Q4's row: reused
            row = cached(question, bench, replace(config, **changes), seed, (), smoke)
            rows.append({**row, "question": "ablation", "variant": variant})
    return rows


def data_rows(bench: Bench, plan: Plan, config: LBMaskConfig, smoke: bool) -> list[dict]:
    """Q6: the library's defaults decomposing on ``n`` of the model's training samples or of
    samples it never saw, each certified on the same unseen digits (disjoint from both)."""
    model, training, unseen, recipe = _digits(bench.name, smoke)
    pool = UNSEEN_POOL if not smoke else len(unseen) // 2
    fresh, held = unseen.select(torch.arange(pool)), unseen.select(torch.arange(pool, len(unseen)))
    rows = []
    for source, samples in (("training", training), ("unseen", fresh)):
        for n in (n for n in plan.sizes if n <= len(samples)):
            for seed in plan.size_seeds:
                order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))
                part = samples.select(order[:n].sort().values)
                variant = bench_of(
                    f"{bench.name}/{source}-{n}", model, part, held, BoundaryConfig(), recipe
                )
                row = cached("data", variant, config, seed, (), smoke)
                rows.append(
                    {
                        **row,
                        "model": bench.name,
                        "source": source,
                        "n": n,
                        "n_boundary": len(variant.reference),
                    }
                )
    return rows


# --------------------------------------------------------------------------- markdown


def final(row: dict[str, Any], aggregator: str = "paper") -> float:
    return float(row["curve"][-1][aggregator])


def mean_final(rows: list[dict[str, Any]], aggregator: str = "paper") -> float:
    return statistics.fmean(final(r, aggregator) for r in rows)


def select(rows: list[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def objective_table(results: dict[str, Any], model: str) -> list[str]:
    rows = select(results["rows"], model=model, question="objective")
    steps = [c["step"] for c in rows[0]["curve"]]
    lines = [
        "| objective | seed | " + " | ".join(f"{s}" for s in steps) + " | margin agg. at "
        f"{steps[-1]} | max overlap | s/step |",
        "|" + " --- |" * (len(steps) + 5),
    ]
    for row in rows:
        cells = " | ".join(f"{c['paper']:.4f}" for c in row["curve"])
        lines.append(
            f"| {row['objective']} | {row['seed']} | {cells} | {final(row, 'margin'):.4f} | "
            f"{row['curve'][-1]['overlap']:.4f} | {row['per_step_s']} |"
        )
    return lines


def summary_rows(results: dict[str, Any]) -> list[str]:
    """Q1 and Q2 at a glance: each objective's final Dis, mean over seeds, per model."""
    models = list(results["benches"])
    objectives = [o for o in SHOWN if select(results["rows"], objective=o, question="objective")]
    lines = ["| objective | aggregator | " + " | ".join(models) + " |"]
    lines.append("|" + " --- |" * (len(models) + 2))
    for objective in objectives:
        for aggregator in ("paper", "margin"):
            cells = []
            for model in models:
                rows = select(
                    results["rows"], model=model, objective=objective, question="objective"
                )
                cells.append(f"{mean_final(rows, aggregator):.4f}" if rows else "")
            lines.append(f"| {objective} | {aggregator} | " + " | ".join(cells) + " |")
    return lines


def conclusions(results: dict[str, Any]) -> dict[str, str]:
    """One paragraph per question, every figure computed from the rows."""
    rows = results["rows"]
    models = list(results["benches"])
    objective_rows = select(rows, question="objective")
    text: dict[str, str] = {}

    best: dict[str, tuple[str, float]] = {}
    for model in models:
        scores = {
            o: mean_final(select(objective_rows, model=model, objective=o))
            for o in SHOWN
            if select(objective_rows, model=model, objective=o)
        }
        winner = min(scores, key=lambda o: scores[o])
        best[model] = (winner, scores[winner])
    wins = {o: sum(1 for w, _ in best.values() if w == o) for o in SHOWN}
    bce_vs_default = []
    for model in models:
        bce = select(objective_rows, model=model, objective="bce")
        chosen = select(objective_rows, model=model, objective=DEFAULT)
        if bce and chosen:
            bce_vs_default.append(f"{model} {mean_final(bce):.4f} -> {mean_final(chosen):.4f}")
    text["Q1 objectives"] = (
        "Lowest held-out boundary Dis (paper aggregator, last checkpoint, mean over seeds): "
        + "; ".join(f"{m}: {o} ({v:.4f})" for m, (o, v) in best.items())
        + ". Wins per objective: "
        + ", ".join(f"{o} {n}" for o, n in wins.items() if n)
        + f". The library's default objective is `{LIBRARY}`. `{DEFAULT}` against `bce`: "
        + "; ".join(bce_vs_default)
        + "."
    )
    paper = statistics.fmean(final(r, "paper") for r in objective_rows)
    margin = statistics.fmean(final(r, "margin") for r in objective_rows)
    by_objective = []
    for objective in SHOWN:
        chosen = select(objective_rows, objective=objective)
        if chosen:
            paper_dis, margin_dis = mean_final(chosen, "paper"), mean_final(chosen, "margin")
            ran = list(dict.fromkeys(r["model"] for r in chosen))
            where = f" ({', '.join(ran)} only)" if len(ran) < len(models) else ""
            by_objective.append(f"{objective}{where} {paper_dis:.4f} / {margin_dis:.4f}")
    text["Q2 aggregators"] = (
        f"Over every objective run, mean held-out boundary Dis is {paper:.4f} with the paper's "
        f"aggregator and {margin:.4f} with the margin aggregator. By objective (paper / margin): "
        + "; ".join(by_objective)
        + "."
    )
    pairs = []
    for model in models:
        other = select(rows, model=model, question="allocation")
        default = select(objective_rows, model=model, objective=DEFAULT)
        if other and default:
            found = {ALLOCATION: default, OTHER_ALLOCATION: other}
            group, kind = found["group"], found["kind"]
            pairs.append(
                f"{model} group {mean_final(group):.4f} / kind {mean_final(kind):.4f} (overlap "
                f"{statistics.fmean(r['curve'][-1]['overlap'] for r in group):.4f} / "
                f"{statistics.fmean(r['curve'][-1]['overlap'] for r in kind):.4f})"
            )
    text["Q3 allocation"] = (
        f"Objective `{DEFAULT}`, paper aggregator, held-out boundary Dis with per-group quotas / "
        "one quota per unit kind (same total units): " + "; ".join(pairs) + "."
    )
    curves = []
    for model in models:
        chosen = select(objective_rows, model=model, objective=DEFAULT)
        if chosen:
            first = statistics.fmean(r["curve"][0]["paper"] for r in chosen)
            best_point = min((c["paper"], c["step"]) for r in chosen for c in r["curve"])
            curves.append(
                f"{model}: {first:.4f} after {chosen[0]['curve'][0]['step']} steps, best "
                f"{best_point[0]:.4f} at {best_point[1]}, {final(chosen[0]):.4f} at "
                f"{chosen[0]['curve'][-1]['step']}"
            )
    autos = [
        f"{r['model']}: stopped ({r['run']['stopped']}) after {r['run']['steps_run']} steps "
        f"(best {r['run']['best_step']}), {r['seconds']:.0f} s, Dis {final(r):.4f}"
        for r in select(rows, question="auto")
    ]
    text["Q4 budget"] = (
        f"Learning curves of `{DEFAULT}` (held-out Dis, paper aggregator): "
        + "; ".join(curves)
        + f". Library defaults (objective `{LIBRARY}`) with automatic stopping: "
        + "; ".join(autos)
        + "."
    )
    rates = select(rows, question="rate")
    if rates:
        parts = []
        for rate in dict.fromkeys(r["lr"] for r in rates):
            chosen = [r for r in rates if r["lr"] == rate]
            spread = [final(r) for r in chosen]
            widest = max(r["curve"][-1]["overlap"] for r in chosen)
            parts.append(
                f"lr {rate}: {statistics.fmean(spread):.4f} (seeds {min(spread):.4f} to "
                f"{max(spread):.4f}, max overlap {widest:.4f})"
            )
        text["Q5 learning rate"] = (
            f"`{DEFAULT}` on {rates[0]['model']} after {rates[0]['curve'][-1]['step']} steps, "
            "held-out Dis (paper aggregator), mean over seeds: " + "; ".join(parts) + "."
        )
    sizes = select(rows, question="data")
    if sizes:
        cells = []
        for source in ("training", "unseen"):
            points = sorted({r["n"] for r in sizes if r["source"] == source})
            means = [mean_final(select(sizes, source=source, n=n)) for n in points]
            cells.append(
                f"from {source} samples "
                + ", ".join(f"n = {n}: {m:.4f}" for n, m in zip(points, means, strict=True))
            )
        text["Q6 decomposition data"] = (
            f"The library's defaults on {sizes[0]['model']}, held-out Dis on the same "
            f"{sizes[0]['n_boundary']}-sample boundary subset of unseen digits, mean over seeds: "
            + "; ".join(cells)
            + "."
        )
    ablation = select(rows, question="ablation")
    if ablation:
        parts = []
        for model in dict.fromkeys(r["model"] for r in ablation):
            means = {
                variant: mean_final(select(ablation, model=model, variant=variant))
                for variant, _ in ablations()
                if select(ablation, model=model, variant=variant)
            }
            seeds = len(select(ablation, model=model, variant="defaults"))
            parts.append(
                f"{model} ({seeds} seed{'s' if seeds > 1 else ''}): "
                + ", ".join(f"{variant} {value:.4f}" for variant, value in means.items())
            )
        text["Q7 the defaults, one change at a time"] = (
            "Held-out boundary Dis (paper aggregator, automatic stopping, mean over seeds) of "
            "the library's defaults, of each setting put back to its previous default, and of "
            "all of them put back: " + "; ".join(parts) + "."
        )
    return text


def _previous(ablation: list[dict[str, Any]]) -> dict[str, Any]:
    """The previous defaults as the rows ran them (a document renders from its own JSON, not
    from today's :data:`PREVIOUS`)."""
    earlier = [r["settings"] for r in ablation if r["variant"] == "previous defaults"]
    return earlier[0] if earlier else dict(PREVIOUS)


def ablation_table(rows: list[dict[str, Any]]) -> list[str]:
    """Q7 per model, variant and seed."""
    ablation = select(rows, question="ablation")
    if not ablation:
        return []
    lines = ["", "## Q7: the defaults, one change at a time (automatic stopping)", ""]
    lines += [
        "Every row runs the library's defaults with the one change its variant names "
        f"(previous defaults: {', '.join(f'`{k}={v}`' for k, v in _previous(ablation).items())}).",
        "",
        "| model | variant | seed | Dis paper | Dis margin | max overlap | stopped | steps run "
        "| best step | seconds |",
        "|" + " --- |" * 10,
    ]
    for row in ablation:
        last, run = row["curve"][-1], row["run"]
        lines.append(
            f"| {row['model']} | {row['variant']} | {row['seed']} | {last['paper']:.4f} | "
            f"{last['margin']:.4f} | {last['overlap']:.4f} | {run['stopped']} | "
            f"{run['steps_run']} | {run['best_step']} | {row['seconds']} |"
        )
    return lines


def rate_and_data_tables(rows: list[dict[str, Any]]) -> list[str]:
    """Q5's learning curves by rate and seed, and Q6's held-out Dis by data source and size."""
    lines: list[str] = []
    rates = select(rows, question="rate")
    if rates:
        steps = [c["step"] for c in rates[0]["curve"]]
        lines += ["", f"## Q5: learning rate ({rates[0]['model']}, objective `{DEFAULT}`)", ""]
        lines += [
            "| lr | seed | " + " | ".join(str(s) for s in steps) + " | max overlap |",
            "|" + " --- |" * (len(steps) + 3),
        ]
        for row in rates:
            cells = " | ".join(f"{c['paper']:.4f}" for c in row["curve"])
            lines.append(
                f"| {row['lr']} | {row['seed']} | {cells} | {row['curve'][-1]['overlap']:.4f} |"
            )
    sizes = select(rows, question="data")
    if sizes:
        lines += ["", f"## Q6: decomposition data ({sizes[0]['model']}, library defaults)", ""]
        lines += [
            "| source | n | seed | \\|B\\| | Dis paper | max overlap | steps run |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in sizes:
            last = row["curve"][-1]
            lines.append(
                f"| {row['source']} | {row['n']} | {row['seed']} | {row['n_boundary']} | "
                f"{last['paper']:.4f} | {last['overlap']:.4f} | {row['run']['steps_run']} |"
            )
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# STUDY: what LBMask should optimise, for how long, with which aggregator",
        "",
        "Generated by `benchmarks/lbmask_study.py`; no number here is edited by hand. Regenerate:",
        "",
        f"    {results['command']}",
        "",
        f"{provenance(results)} "
        f"Machine: {results['machine']}. Sparsity {SPARSITY}, boundary quantile q = 0.2, "
        f"allocation `{ALLOCATION}` unless the table says otherwise. Masks "
        "are always learned on one split and measured on a disjoint held-out split (below); "
        "`Dis` is the boundary disagreement on the held-out boundary subset B. Seconds count "
        "mask learning only, measured with nothing else running on the machine"
        + (" (this run: under load, see the command line)" if results.get("under_load") else "")
        + ".",
        "",
        "## Models and splits",
        "",
        "| model | classes | units | decomposed on | held out | \\|B\\| | mining (s) | model |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, bench in results["benches"].items():
        lines.append(
            f"| {name} | {bench['classes']} | {bench['units']} | {bench['n_decompose']} | "
            f"{bench['n_held_out']} | {bench['n_boundary']} | {bench['mining_s']} | "
            f"{bench['recipe']} |"
        )
    missing = [name for name in PLANS if name not in results["benches"]]
    if missing:
        lines += [
            "",
            "Not in this run (the study plans them; `--only` left them out): "
            f"{', '.join(missing)}.",
        ]
    text = conclusions(results)
    lines += ["", "## Conclusions", ""]
    lines += [f"**{question}.** {paragraph}\n" for question, paragraph in text.items()]
    lines += ["## Q1 and Q2: final held-out boundary Dis by objective and aggregator", ""]
    lines += summary_rows(results)
    lines += ["", "## Q1 and Q4: learning curves (held-out boundary Dis, paper aggregator)", ""]
    for model in results["benches"]:
        lines += [f"### {model}", "", *objective_table(results, model), ""]
    lines += [f"## Q3: allocation ({OTHER_ALLOCATION}; the tables above use {ALLOCATION})", ""]
    lines += [
        "| model | seed | Dis paper | Dis margin | max overlap | steps |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in select(results["rows"], question="allocation"):
        last = row["curve"][-1]
        lines.append(
            f"| {row['model']} | {row['seed']} | {last['paper']:.4f} | {last['margin']:.4f} | "
            f"{last['overlap']:.4f} | {last['step']} |"
        )
    lines += ["", "## Q4: automatic stopping with the library's defaults", ""]
    lines += [
        "| model | allocation | stopped | steps run | best step | seconds | Dis paper | "
        "Dis margin | max overlap |",
        "|" + " --- |" * 9,
    ]
    for row in select(results["rows"], question="auto"):
        last = row["curve"][-1]
        lines.append(
            f"| {row['model']} | {row['allocation']} ({row['resolved_allocation']}) | "
            f"{row['run']['stopped']} | {row['run']['steps_run']} | {row['run']['best_step']} | "
            f"{row['seconds']} | {last['paper']:.4f} | {last['margin']:.4f} | "
            f"{last['overlap']:.4f} |"
        )
    lines += rate_and_data_tables(results["rows"])
    lines += ablation_table(results["rows"])
    lines += ["", *kept_note(results)]
    lines += [
        "",
        f"Whole run: {results['seconds']:.0f} s. Rows already in the study cache "
        "(`$SAVED_CACHE_DIR/study`, keyed by question, model, full LBMask configuration, seed "
        "and a digest of `saved/` and the study's scripts) are reused rather than recomputed, "
        "so an interrupted study resumes; each row's seconds are those of the run that "
        "computed it.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    study_main(__doc__.split("\n\n")[0], PLANS, "STUDY", "lbmask_study.py", study, markdown)


if __name__ == "__main__":
    main()
