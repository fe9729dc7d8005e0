"""Where an FFN neuron's mask acts, and what it costs: masked passes (no autograd) of MiniLM
(all-MiniLM-L6-v2 with a 14-class head, the pretrained weights: the time does not depend on
the fine-tuning) over ``--texts`` topics14-long test texts (128 tokens), 14 components, random
half masks: the work of one ``evaluate`` batch.

* ``before``: masks on the up-projection's output, before the GELU (until e405a24);
* ``copy``: on the down-projection's input, a masked copy beside the activation (e405a24);
* ``in_place``: on the down-projection's input, masked in place (the library now).

All three give the same logits (checked). Rounds alternate the variants; the figures are the
median seconds per pass and the ratios to ``before``. The last line is a JSON object.

    .venv/bin/python benchmarks/mask_site.py [--texts 256] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import time
from unittest import mock

import torch
from models import RECIPES, build, head, text_split
from torch import nn

from saved.baselines import random
from saved.inputs import trim_padding
from saved.masking import hooks, units
from saved.masking.units import UnitSpace


def copied_inputs() -> contextlib.AbstractContextManager[object]:
    """``mask_input_hook`` as at e405a24: always a masked copy, never in place."""

    def copying(unit_mask: torch.Tensor, k: int, dim: int) -> object:
        def hook(module: nn.Module, inputs: tuple[object, ...]) -> tuple[object, ...]:
            return (hooks._masked(inputs[0], unit_mask, k, dim), *inputs[1:])  # type: ignore[arg-type]

        return hook

    return mock.patch.object(units, "mask_input_hook", copying)  # the name masked() calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = build(RECIPES["minilm-topics14-long"]).eval()
    data = head(text_split("topics14-long", "test"), args.texts, seed=0)
    batch = trim_padding(data.batch(torch.arange(args.texts), torch.device("cpu")))
    example = {k: v[:2] for k, v in batch.items()}
    after = UnitSpace.of(model, example)
    before = UnitSpace.of(model, example)
    before.groups = [dataclasses.replace(g, mask_at=()) for g in before.groups]
    masks = random.masks(after, 14, 0.5, seed=0)
    variants = {
        "before": lambda: before.run(model, masks, batch),
        "in_place": lambda: after.run(model, masks, batch),
    }

    def copy() -> torch.Tensor:
        with copied_inputs():
            return after.run(model, masks, batch)

    variants["copy"] = copy
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, run in variants.items():
                started = time.perf_counter()
                outputs[name] = run()
                seconds[name].append(time.perf_counter() - started)
    assert torch.equal(outputs["before"], outputs["in_place"])
    assert torch.equal(outputs["before"], outputs["copy"])
    median = {name: round(statistics.median(values), 3) for name, values in seconds.items()}
    result = {
        "texts": args.texts,
        "tokens": int(batch["input_ids"].shape[1]),
        "seconds": median,
        "copy_over_before": round(median["copy"] / median["before"], 3),
        "in_place_over_before": round(median["in_place"] / median["before"], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
