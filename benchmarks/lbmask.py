"""LBMask cost and surgery speed-ups.

* ``step_ratio``: one LBMask training step for all K components / (K x one forward +
  input-gradient backward of the frozen model on the same batch), both measured in this run,
  median over rounds that alternate the two, for each model. Also the step time when the K
  components are trained in chunks (``component_chunk``), which decides joint vs chunked.
* ``surgery_speedup_resnet18`` / ``surgery_speedup_bert``: forward time of the masked full
  model / forward time of the surgically reduced component, at s = 0.5.

The last line is a JSON object with every figure.

    .venv/bin/python benchmarks/lbmask.py [--smoke] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from saved import ClassComponents, as_inputs, testing
from saved._runtime import forward_logits, frozen_eval
from saved.baselines import random
from saved.inputs import Batch
from saved.masking.lbmask import LBMaskConfig, MaskTrainer
from saved.masking.units import UnitSpace


def seconds(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def frozen_forward_backward(model: nn.Module, batch: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        point = batch.detach().requires_grad_(True)
        logits = forward_logits(model, point)
        return torch.autograd.grad(logits.logsumexp(1).sum(), point)

    return run


def step_ratio(
    name: str, model: nn.Module, x: torch.Tensor, k: int, batch: int, rounds: int
) -> dict:
    space = UnitSpace.of(model, x[:2])
    data = as_inputs(x)
    result: dict[str, object] = {"model": name, "components": k, "batch_size": batch}
    for chunk in (None, k, max(1, k // 2), 1):
        config = LBMaskConfig(batch_size=batch, component_chunk=chunk)
        trainer = MaskTrainer(model, data, ClassComponents(k), space, config)
        ratios, steps = [], []
        with trainer:
            reference = frozen_forward_backward(trainer.model, x[:batch])
            trainer.step()
            reference()
            for _ in range(rounds):
                step = seconds(trainer.step, 3)
                plain = seconds(reference, 3)
                steps.append(step)
                ratios.append(step / (k * plain))
        label = "auto" if chunk is None else ("joint" if chunk == k else f"chunk{chunk}")
        if chunk is None:
            result["auto_chunk"] = trainer.chunk
        result[f"step_s_{label}"] = statistics.median(steps)
        result[f"step_ratio_{label}"] = round(statistics.median(ratios), 3)
    result["step_ratio"] = result["step_ratio_auto"]
    print(
        f"{name:9s} K={k} B={batch}: step ratio (default, chunks of {result['auto_chunk']}) "
        f"{result['step_ratio_auto']}; joint {result['step_ratio_joint']}, "
        f"chunks of {max(1, k // 2)} {result[f'step_ratio_chunk{max(1, k // 2)}']}, "
        f"one at a time {result['step_ratio_chunk1']}"
    )
    return result


def surgery_speedup(name: str, model: nn.Module, batch: Batch, rounds: int) -> dict:
    model.eval()
    example = {k: v[:2] for k, v in batch.items()} if isinstance(batch, dict) else batch[:2]
    space = UnitSpace.of(model, example)
    mask = random.masks(space, 1, 0.5, seed=0)
    reduced = space.reduce(model, mask[0]).eval()
    masked_times, reduced_times = [], []
    with frozen_eval(model), torch.no_grad():
        with space.masked(model, mask):
            forward_logits(model, batch)
            masked_times.append(seconds(lambda: forward_logits(model, batch), rounds))
        forward_logits(reduced, batch)
        reduced_times.append(seconds(lambda: forward_logits(reduced, batch), rounds))
        with space.masked(model, mask):
            masked_times.append(seconds(lambda: forward_logits(model, batch), rounds))
        reduced_times.append(seconds(lambda: forward_logits(reduced, batch), rounds))
    masked_s, reduced_s = statistics.median(masked_times), statistics.median(reduced_times)
    params = (
        sum(p.numel() for p in reduced.parameters()),
        sum(p.numel() for p in model.parameters()),
    )
    print(
        f"{name:9s} masked {masked_s * 1e3:.1f} ms, reduced {reduced_s * 1e3:.1f} ms: "
        f"speed-up {masked_s / reduced_s:.2f}x; parameters {params[0]:,} of {params[1]:,}"
    )
    return {
        "model": name,
        "masked_s": masked_s,
        "reduced_s": reduced_s,
        "speedup": round(masked_s / reduced_s, 3),
        "params": params[0],
        "full_params": params[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = testing.digits()
    images = x.reshape(-1, 1, 8, 8)
    mlp = testing.train_classifier(testing.tiny_mlp(hidden=(128, 128)), x, y, steps=50)
    cnn = testing.train_classifier(testing.tiny_resnet(width=16), images, y, steps=20)
    steps = [
        step_ratio("mlp", mlp, x, 10, 128, args.rounds),
        step_ratio("cnn", cnn, images, 10, 64, args.rounds),
    ]
    side, batch = (32, 4) if args.smoke else (64, 32)
    photos = torch.randn(batch, 3, side, side)
    resnet = surgery_speedup(
        "resnet18", torchvision.models.resnet18(num_classes=10), photos, args.rounds
    )
    config = BertConfig(  # MiniLM-L6's shape with random weights
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=2 if args.smoke else 6,
        num_attention_heads=12,
        intermediate_size=1536,
        num_labels=14,
    )
    ids = torch.randint(1000, 30000, (batch, 32))
    bert = surgery_speedup(
        "bert",
        BertForSequenceClassification(config),
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
        args.rounds,
    )
    print(
        json.dumps(
            {
                "torch_threads": torch.get_num_threads(),
                "step_ratio": max(float(s["step_ratio"]) for s in steps),  # type: ignore[arg-type]
                "surgery_speedup_resnet18": resnet["speedup"],
                "surgery_speedup_bert": bert["speedup"],
                "steps": steps,
                "surgery": [resnet, bert],
            }
        )
    )


if __name__ == "__main__":
    main()
