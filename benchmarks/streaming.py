"""Peak memory of evaluation and decomposition as the data grows (Fashion-MNIST images).

Each measurement runs in a fresh process: a 784-256-256-10 MLP trained briefly on
Fashion-MNIST, a DataLoader that serves ``n`` images lazily (index modulo 60,000; repeats are
mirrored), and one call - ``saved.evaluate`` (all ``n`` samples) or ``saved.decompose``
(LBMask, reading the loader in one pass and keeping ``max_samples``). The figure is the growth of
the process's peak resident memory during that call (``ru_maxrss``), after a warm-up call on
one chunk (four batches, what evaluation reads at a time). For contrast, ``evaluate`` on the
same ``n`` images held in one tensor.

``batches``: that growth in units of one batch's input (256 images = 0.77 MB).

    .venv/bin/python benchmarks/streaming.py [--smoke] [--sizes 256 10000 100000]

The last line is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

BATCH = 256


class Images(Dataset):
    """``n`` Fashion-MNIST training images, flattened, served one at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, n: int) -> None:
        self.images, self.labels, self.n = images, labels, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = i % len(self.images)
        image = self.images[j] if (i // len(self.images)) % 2 == 0 else self.images[j][:, ::-1]
        return torch.from_numpy(image.astype(np.float32) / 255.0).flatten(), int(self.labels[j])


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def child(call: str, n: int) -> dict[str, float]:
    import saved
    from saved import testing
    from saved.datasets import load_fashion_mnist
    from saved.masking.lbmask import LBMaskConfig

    torch.manual_seed(0)
    images, labels = load_fashion_mnist("train")
    x = torch.from_numpy(images[:4096].reshape(4096, -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels[:4096])
    model = testing.train_classifier(
        testing.tiny_mlp(784, 10, hidden=(256, 256)), x, y, steps=100, lr=1e-3
    )
    decomposition = saved.decompose(model, x[:512], method="random", progress=False)
    config = LBMaskConfig(steps=3)

    def run(count: int) -> object:
        loader = DataLoader(Images(images, labels, count), batch_size=BATCH)
        if call == "evaluate":
            return saved.evaluate(model, decomposition, loader)
        if call == "evaluate-tensor":
            held = torch.cat([batch for batch, _ in loader])
            return saved.evaluate(model, decomposition, held)
        return saved.decompose(model, loader, lbmask=config, progress=False, max_samples=4096)

    run(4 * BATCH)  # warm-up on one chunk: imports, thread pools, allocator
    before = peak_mb()
    run(n)
    return {"call": call, "n": n, "peak_growth_mb": round(peak_mb() - before, 2)}


def measure(call: str, n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", call, str(n)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    sizes = args.sizes or ([2_000] if args.smoke else [10_000, 100_000])
    rows = []
    one_batch_mb = BATCH * 784 * 4 / 2**20
    for call in ("evaluate", "decompose", "evaluate-tensor"):
        for n in sizes:
            row = measure(call, n)
            row["batches"] = round(row["peak_growth_mb"] / one_batch_mb, 1)
            rows.append(row)
            print(
                f"{call:16s} n={n:>7,d}  peak growth {row['peak_growth_mb']:8.2f} MB  "
                f"(= {row['batches']:.1f} batches of input)",
                file=sys.stderr,
            )
    print(json.dumps({"batch": BATCH, "one_batch_input_mb": round(one_batch_mb, 2), "rows": rows}))


if __name__ == "__main__":
    main()
