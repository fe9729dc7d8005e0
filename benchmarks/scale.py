"""Time to a verdict across processes: MiniLM on the 14-section set decomposed and checked by
one process and by two gloo ranks (torchrun), and a budget for BERT-small on DBPedia-14.

Three runs of the same work, one after the other (run it with nothing else on the machine):
one process with 2 threads (this machine's two cores), one process with 1 thread, and
``torchrun --nproc-per-node 2`` with 1 thread per rank. Each decomposes on 512 seeded training
texts (mining, then ``--steps`` LBMask steps: a fixed count, so every run does the same work)
and evaluates on the test split (``--test N``: a seeded N of its texts). Printed per run: the
wall seconds of decompose and evaluate, mask learning's seconds, the share of it spent in the
ranks' collectives (sending plus waiting for the slower rank), and a digest of the masks (the
runs must agree).

Then the budget on paper: one LBMask step of a BERT-small (4 layers, hidden 512, 8 heads,
random weights: time does not depend on them) with 14 components x 32 texts of 128 tokens is
measured here, and mask learning at the library's step cap is extrapolated to 1-8 ranks.

    .venv/bin/python benchmarks/scale.py              # the three runs and the budget
    .venv/bin/python benchmarks/scale.py --steps 20 --test 1000   # shorter (~15 min)
    .venv/bin/python benchmarks/scale.py --smoke      # tiny model and data, the 1-thread
                                                      # and 2-rank runs only (CI)

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from generated import log

HERE = Path(__file__).resolve().parent


def worker(args: argparse.Namespace) -> None:
    """One run (of one rank): decompose and evaluate, rank 0 prints its JSON line."""
    torch.set_num_threads(args.threads)
    from models import head, load_split, trained

    import saved
    from saved import BoundaryConfig, LBMaskConfig

    model, _ = trained("minilm-debian14", is_smoke=args.smoke, log=log)
    calib = head(load_split("debian14", "train"), 16 if args.smoke else 512, seed=1)
    test = head(load_split("debian14", "test"), 48 if args.smoke else args.test or None, seed=2)
    grouped = int(os.environ.get("WORLD_SIZE", "1")) > 1
    started = time.perf_counter()
    decomposition = saved.decompose(
        model,
        calib.without_labels(),
        boundary=BoundaryConfig(norm="2"),
        lbmask=LBMaskConfig(steps=args.steps, batch_size=8 if args.smoke else 32),
        progress=False,
        distributed=grouped,
    )
    decomposed = time.perf_counter()
    report = saved.evaluate(model, decomposition, test, labels=test.labels, distributed=grouped)
    evaluated = time.perf_counter()
    if os.environ.get("RANK", "0") != "0":
        return
    spread = decomposition.metadata.get("distributed", {})
    learning = decomposition.metadata["training"]["seconds"]
    masks = decomposition.masks.cpu().numpy().tobytes()
    row = {
        "ranks": spread.get("ranks", 1),
        "threads": args.threads,
        "decompose_s": round(decomposed - started, 1),
        "learning_s": learning,
        "evaluate_s": round(evaluated - decomposed, 1),
        "total_s": round(evaluated - started, 1),
        "collective_s": spread.get("collective_seconds", 0.0),
        "collective_share": round(spread.get("collective_seconds", 0.0) / learning, 3),
        "steps": decomposition.metadata["training"]["steps_run"],
        "masks_sha256": hashlib.sha256(masks).hexdigest(),
        "dis": report.disagreement,
        "n": report.n_samples,
    }
    print(json.dumps(row), flush=True)


def _run(command: list[str], threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    out = subprocess.run(
        command, cwd=HERE.parent, env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    script = [str(HERE / "scale.py"), "--worker", "--steps", str(args.steps)]
    script += ["--test", str(args.test)]
    script += ["--smoke"] if args.smoke else []
    plans = [
        ("1 process, 2 threads", [sys.executable, *script, "--threads", "2"], 2),
        ("1 process, 1 thread", [sys.executable, *script, "--threads", "1"], 1),
        (
            "2 gloo ranks, 1 thread each",
            [*launch, "2", *script, "--threads", "1"],
            1,
        ),
    ]
    if args.smoke:  # CI: the two runs that must agree, not the comparison
        plans = plans[1:]
    rows = []
    for label, command, threads in plans:
        row = {"run": label, **_run(command, threads)}
        log(f"{label}: {row['total_s']} s (learning {row['learning_s']} s)")
        rows.append(row)
    return rows


def budget(smoke: bool) -> dict[str, Any]:
    """One measured LBMask step of BERT-small with 14 components, extrapolated."""
    from transformers import BertConfig, BertForSequenceClassification

    from saved import LBMaskConfig
    from saved.components import ClassComponents
    from saved.estimate import probe_step
    from saved.inputs import as_inputs
    from saved.masking.trainer import MaskTrainer
    from saved.masking.units import UnitSpace

    size = (
        {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
        if smoke
        else {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8}
    )
    config = BertConfig(**size, intermediate_size=4 * size["hidden_size"], num_labels=14)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    rows, tokens = (16, 16) if smoke else (64, 128)
    ids = torch.randint(1000, config.vocab_size, (rows, tokens))
    inputs = as_inputs({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    components = ClassComponents(14)
    space = UnitSpace.of(model, inputs.batch(slice(0, 2)))
    lbmask = LBMaskConfig(batch_size=8 if smoke else 32)
    step = round(probe_step(model, inputs, components, space, lbmask), 3)
    chunk = MaskTrainer(model, inputs, components, space, lbmask).chunk
    chunks = math.ceil(14 / chunk)
    steps = lbmask.max_steps
    by_ranks = {
        ranks: round(step * steps * math.ceil(chunks / ranks) / chunks, 1) for ranks in (1, 2, 4, 8)
    }
    return {
        "model": "BERT-small (L4, H512, A8), 14 components"
        if not smoke
        else "tiny BERT, 14 components",
        "batch": lbmask.batch_size,
        "tokens": tokens,
        "step_s": step,
        "component_chunk": chunk,
        "chunks": chunks,
        "steps": steps,
        "learning_s_by_ranks": by_ranks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model and data, for CI")
    parser.add_argument("--steps", type=int, default=40, help="LBMask steps in every run")
    parser.add_argument(
        "--test", type=int, default=0, help="seeded test texts evaluated (default 0: all)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "benchmarks/scale.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "runs": runs(args),
    }
    *one, alone, two = results["runs"]
    if one:
        results["speedup_vs_2_threads"] = round(one[0]["total_s"] / two["total_s"], 2)
    results["speedup_vs_1_thread"] = round(alone["total_s"] / two["total_s"], 2)
    results["efficiency"] = round(alone["total_s"] / (2 * two["total_s"]), 2)
    results["learning_speedup_vs_1_thread"] = round(alone["learning_s"] / two["learning_s"], 2)
    results["same_masks"] = len({row["masks_sha256"] for row in results["runs"]}) == 1
    results["budget"] = budget(args.smoke)
    for row in results["runs"]:
        print(
            f"{row['run']:<30} total {row['total_s']:>7} s  decompose {row['decompose_s']:>7} s  "
            f"(learning {row['learning_s']:>7} s, collectives {row['collective_share']:.1%})  "
            f"evaluate {row['evaluate_s']:>6} s  masks {row['masks_sha256'][:12]}"
        )
    spent = results["budget"]
    against = results.get("speedup_vs_2_threads", "-")
    print(
        f"speed-up of 2 ranks: {against}x against 1 process with 2 "
        f"threads, {results['speedup_vs_1_thread']}x against 1 thread (efficiency "
        f"{results['efficiency']:.0%}); mask learning alone "
        f"{results['learning_speedup_vs_1_thread']}x; same masks: {results['same_masks']}"
    )
    print(
        f"budget: {spent['model']}, one step ({spent['batch']} x {spent['tokens']} tokens per "
        f"component) {spent['step_s']} s here; {spent['steps']} steps: "
        + ", ".join(f"{r} rank(s) {s} s" for r, s in spent["learning_s_by_ranks"].items())
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
