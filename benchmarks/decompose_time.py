"""How long ``saved.decompose`` takes with default settings, against what it said beforehand.

The run-time target of issue 13: a torchvision mobilenet_v2 on 2,000 Fashion-MNIST images and
MiniLM on 1,000 Debian texts (4 and 14 sections), default settings (automatic stopping), each
under 5 minutes on a 2-core machine, with the estimate printed before the work starts. Also
prints the digits MLP (the demo) for scale. Run it with nothing else on the machine.

    .venv/bin/python benchmarks/decompose_time.py            # all models
    .venv/bin/python benchmarks/decompose_time.py --smoke    # tiny models and data, for CI

The last line printed is a JSON object with one row per model: seconds estimated and taken,
the ratio, and where mask learning stopped.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import torch
from generated import log
from models import head, load_split, trained

import saved
from saved import BoundaryConfig, testing

CASES: dict[str, tuple[str, int]] = {  # model -> (data, samples)
    "mlp-digits": ("digits", 1200),
    "mobilenet-fmnist": ("fmnist", 2000),
    "minilm-debian4": ("debian4", 1000),
    "minilm-debian14": ("debian14", 1000),
}


def case(name: str, smoke: bool) -> tuple[torch.nn.Module, Any, BoundaryConfig | None]:
    data, samples = CASES[name]
    if name == "mlp-digits":
        x, y = testing.digits()
        model = testing.train_classifier(testing.tiny_mlp(hidden=(128, 128), seed=0), x, y)
        return model, x[: samples if not smoke else 64], None
    model, _ = trained(name, is_smoke=smoke, log=log)
    inputs = head(load_split(data, "train"), samples if not smoke else 32, seed=1)
    boundary = BoundaryConfig(norm="2") if data != "fmnist" else None
    return model, inputs.without_labels(), boundary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models and data, for CI")
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated models")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    rows = []
    for name in names:
        model, data, boundary = case(name, args.smoke)
        said: list[float] = []

        def told(estimate: Any, name: str = name, said: list[float] = said) -> None:
            said.append(estimate.total)
            log(f"{name}: decompose says {estimate.describe()}")

        config = saved.LBMaskConfig() if not args.smoke else saved.LBMaskConfig(max_steps=4)
        started = time.perf_counter()
        decomposition = saved.decompose(
            model, data, boundary=boundary, lbmask=config, on_estimate=told, progress=False
        )
        seconds = time.perf_counter() - started
        training = decomposition.metadata["training"]
        rows.append(
            {
                "model": name,
                "samples": len(saved.as_inputs(data)),
                "estimate_s": round(said[0], 3),
                "seconds": round(seconds, 3),
                "ratio": round(seconds / said[0], 2),
                "steps_run": training["steps_run"],
                "stopped": training["stopped"],
                "mask_learning_s": training["seconds"],
            }
        )
        log(f"{name}: took {seconds:.0f} s (estimated {said[0]:.0f} s), {training}")
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
