"""Boundary mining (PGD + bisection): how well and how cheaply it reaches the boundary.

For a digits MLP and the small residual CNN (both trained here on scikit-learn's real digits)
and, unless ``--smoke``, a tiny BERT trained on real Debian package descriptions, prints
``flip_rate`` (attacked samples that flip), ``refined_rate`` (flipped pairs reaching gap < tol),
``median_gap``, ``margin_ratio`` (median logit margin of boundary points / of the data) and
``cost_ratio`` = wall time of mining / ((PGD + bisection iterations run) x time of one plain
forward + backward of the same model on one full mining batch), and ``cost_ratio_frozen``, the
same against the cheaper input-gradient-only pass of the frozen model (the work of one PGD
step), all measured in this run. The last line is a JSON object with every figure.

    .venv/bin/python benchmarks/boundary.py [--smoke] [--batch-size 1024] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from saved import testing
from saved._runtime import forward_logits, frozen_eval, predict_logits
from saved.boundary import BoundaryConfig, mine_boundary
from saved.contract import logit_margins
from saved.embedding import continuous_form
from saved.inputs import as_inputs


def forward_backward_seconds(
    model: nn.Module, data: object, batch_size: int, repeats: int, *, frozen: bool
) -> float:
    """Median time of one forward + backward of ``model`` on one full batch.

    ``frozen=False`` is a plain forward+backward (the model's weights get gradients, as in a
    training step without the optimiser); ``frozen=True`` is the cheaper input-gradient-only
    pass of a frozen model, the very work of one PGD step.
    """
    form = continuous_form(model, as_inputs(data))
    fields = form.inputs.fields_at(slice(0, batch_size))
    times = []
    with frozen_eval(model):
        if not frozen:
            for param in model.parameters():
                param.requires_grad_(True)
        for _ in range(repeats):
            start = time.perf_counter()
            point = fields[form.field].detach().requires_grad_(frozen)
            logits = forward_logits(model, form.inputs.as_batch({**fields, form.field: point}))
            loss = nn.functional.cross_entropy(logits, logits.argmax(1), reduction="sum")
            if frozen:
                torch.autograd.grad(loss, point)
            else:
                loss.backward()
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def measure(
    name: str, model: nn.Module, data: object, config: BoundaryConfig, batch_size: int, rounds: int
) -> dict:
    """Rounds alternate one mining run with bursts of reference steps, so that both see the
    same machine load; each ratio is the median over rounds."""
    for frozen in (False, True):  # warm-up
        forward_backward_seconds(model, data, batch_size, repeats=3, frozen=frozen)
    mine_boundary(model, data, config, batch_size=batch_size)
    walls, plain, frozen_steps = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        boundary = mine_boundary(model, data, config, batch_size=batch_size)
        walls.append(time.perf_counter() - start)
        plain.append(forward_backward_seconds(model, data, batch_size, 15, frozen=False))
        frozen_steps.append(forward_backward_seconds(model, data, batch_size, 15, frozen=True))
    iterations = boundary.pgd_steps_run + boundary.bisection_steps_run
    ratios = [w / (iterations * p) for w, p in zip(walls, plain, strict=True)]
    frozen_ratios = [w / (iterations * f) for w, f in zip(walls, frozen_steps, strict=True)]
    data_margin = float(logit_margins(predict_logits(model, as_inputs(data))).median())
    boundary_margin = float(boundary.margins[boundary.refined].flatten().median())
    result = {
        "model": name,
        "samples": len(boundary),
        "batch_size": batch_size,
        "flip_rate": round(boundary.flip_rate, 4),
        "refined_rate": round(boundary.refined_rate, 4),
        "third_class_rate": round(float(boundary.third_class.double().mean()), 4),
        "median_gap": float(boundary.gaps[boundary.flipped].median()),
        "margin_ratio": boundary_margin / data_margin,
        "pgd_iterations": boundary.pgd_steps_run,
        "bisection_iterations": boundary.bisection_steps_run,
        "wall_s": round(statistics.median(walls), 4),
        "forward_backward_s": statistics.median(plain),
        "frozen_forward_backward_s": statistics.median(frozen_steps),
        "cost_ratio": round(statistics.median(ratios), 3),
        "cost_ratio_frozen": round(statistics.median(frozen_ratios), 3),
    }
    print(
        f"{name:5s} flip {result['flip_rate']:.3f}  refined {result['refined_rate']:.3f}  "
        f"median gap {result['median_gap']:.2e}  margin ratio {result['margin_ratio']:.2e}  "
        f"iterations {boundary.pgd_steps_run}+{boundary.bisection_steps_run}  "
        f"wall {result['wall_s']:.3f} s  f+b {result['forward_backward_s'] * 1e3:.3f} ms  "
        f"cost ratio {result['cost_ratio']:.3f} (vs input-gradient-only pass "
        f"{result['cost_ratio_frozen']:.3f})"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, vision models only")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = testing.digits()
    images = x.reshape(-1, 1, 8, 8)
    steps = 100 if args.smoke else 300
    limit = 256 if args.smoke else len(y)
    mlp = testing.train_classifier(testing.tiny_mlp(seed=0), x, y, steps=steps)
    cnn = testing.train_classifier(testing.tiny_resnet(seed=0), images, y, steps=steps // 2)
    config = BoundaryConfig()
    results = [
        measure("mlp", mlp, x[:limit], config, args.batch_size, args.rounds),
        measure("cnn", cnn, images[:limit], config, args.batch_size, args.rounds),
    ]
    if not args.smoke:
        from saved.datasets import load_debian

        texts = load_debian("debian4", "train")
        batch = testing.text_batch(texts.texts)
        bert = testing.train_classifier(
            testing.tiny_bert(num_labels=4),
            batch,
            torch.tensor(texts.labels),
            steps=100,
            lr=3e-3,
            batch_size=64,
        )
        sample = {k: v[:1024] for k, v in batch.items()}
        results.append(
            measure("bert", bert, sample, BoundaryConfig(norm="2"), args.batch_size, args.rounds)
        )
    print(json.dumps({"torch_threads": torch.get_num_threads(), "results": results}))


if __name__ == "__main__":
    main()
