"""What the modularity regularisers cost per training step (issue 38).

For each model: one training step with cross-entropy (forward, backward, Adam) against the same
step with ``saved.ModularityPenalty`` added (its hooks read unit activity during the same
forward), and against the plain step followed by ``saved.BlockWiring.shrink`` (the proximal
step on the weights between class blocks; MLPs and CNNs only), on the same batch, measured in
this run: the median over rounds that alternate them. Models: the digits MLP 64-128-128-10
(batch 128), torchvision's resnet18 on Fashion-MNIST images (random init, batch 32, 28x28
resized to 64x64, 3 channels) and a 2-layer BERT on Debian short descriptions (batch 32, 32
tokens). Run it with nothing else on the machine.

    .venv/bin/python benchmarks/modularity.py [--smoke] [--rounds 5]

The last line is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

import torch
import torchvision
from lbmask import seconds
from torch import nn

from saved import BlockWiring, ModularityPenalty, testing
from saved._runtime import forward_logits
from saved.datasets import load_debian, load_fashion_mnist


def step(model: nn.Module, batch: Any, labels: torch.Tensor, penalty: Any) -> Callable[[], None]:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run() -> None:
        if penalty is None:
            loss = nn.functional.cross_entropy(forward_logits(model, batch), labels)
        else:
            logits, modular = penalty(batch, labels)
            loss = nn.functional.cross_entropy(logits, labels) + modular
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return run


def ratio(name: str, model: nn.Module, batch: Any, labels: torch.Tensor, rounds: int) -> dict:
    model.train()
    example = {k: v[:2] for k, v in batch.items()} if isinstance(batch, dict) else batch[:2]
    penalty = ModularityPenalty(model, example)
    plain, regularised = step(model, batch, labels, None), step(model, batch, labels, penalty)
    try:
        wiring: BlockWiring | None = BlockWiring(model, example)
    except ValueError:  # heads and FFN neurons: nothing to wire (saved/wiring.py)
        wiring = None

    def wired() -> None:
        plain()
        if wiring is not None:
            wiring.shrink(1e-3)

    plain(), regularised(), wired()  # warm-up
    plain_s, regularised_s, wired_s = [], [], []
    for _ in range(rounds):
        plain_s.append(seconds(plain, 3))
        regularised_s.append(seconds(regularised, 3))
        if wiring is not None:
            wired_s.append(seconds(wired, 3))
    a, b = statistics.median(plain_s), statistics.median(regularised_s)
    c = statistics.median(wired_s) if wired_s else None
    shrink = f", with the wiring step {c * 1e3:.1f} ms: ratio {c / a:.2f}" if c else ""
    print(
        f"{name:9s} units {penalty.space.num_units:6d}: plain step {a * 1e3:.1f} ms, with the "
        f"penalty {b * 1e3:.1f} ms: ratio {b / a:.2f}{shrink}"
    )
    return {
        "model": name,
        "units": penalty.space.num_units,
        "plain_s": a,
        "regularised_s": b,
        "ratio": round(b / a, 3),
        "wiring_s": c,
        "wiring_ratio": round(c / a, 3) if c else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = testing.digits()
    rows = [ratio("mlp", testing.tiny_mlp(hidden=(128, 128)), x[:128], y[:128], args.rounds)]

    images, labels = load_fashion_mnist("test")
    n, side = (4, 32) if args.smoke else (32, 64)
    photos = torch.tensor(images[:n]).float().div(255).unsqueeze(1)
    photos = nn.functional.interpolate(photos, size=side).expand(-1, 3, -1, -1).contiguous()
    resnet = torchvision.models.resnet18(num_classes=10)
    rows.append(ratio("resnet18", resnet, photos, torch.tensor(labels[:n]), args.rounds))

    texts = load_debian("debian4", "train")
    n = 4 if args.smoke else 32
    batch = testing.text_batch(list(texts.texts[:n]), max_length=32)
    bert = testing.tiny_bert(num_labels=4)
    rows.append(ratio("bert", bert, batch, torch.tensor(texts.labels[:n]), args.rounds))
    print(json.dumps({"machine": f"{torch.get_num_threads()} threads", "rows": rows}))


if __name__ == "__main__":
    main()
