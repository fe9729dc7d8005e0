"""Jaccard overlap of per-weight supports: chunked matmul against pairwise set operations.

Unstructured baselines (Wanda) give supports over every weight, e.g. K = 14 components over the
22.7 M parameters of MiniLM. Prints the figures, then a JSON line with ``speedup`` =
(time of K(K-1)/2 pairwise ``&``/``|`` counts) / (time of ``jaccard_overlap``), both measured in
this run on the same supports, and ``max_abs_diff`` between the two results.

    .venv/bin/python benchmarks/overlap.py [--components 14] [--weights 22700000]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from saved.contract import jaccard_overlap


def pairwise_reference(supports: torch.Tensor) -> torch.Tensor:
    k = supports.shape[0]
    overlap = torch.ones(k, k, dtype=torch.float64)
    for i in range(k):
        for j in range(i + 1, k):
            inter = int((supports[i] & supports[j]).sum())
            union = int((supports[i] | supports[j]).sum())
            overlap[i, j] = overlap[j, i] = inter / union if union else 1.0
    return overlap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--components", type=int, default=14)
    parser.add_argument("--weights", type=int, default=22_700_000)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    supports = torch.rand(args.components, args.weights, generator=generator) < 0.5

    start = time.perf_counter()
    fast = jaccard_overlap(supports)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = pairwise_reference(supports)
    slow_s = time.perf_counter() - start

    print(f"K = {args.components}, N = {args.weights:,} weights per support")
    print(f"jaccard_overlap: {fast_s:.3f} s; pairwise sets: {slow_s:.3f} s")
    result = {
        "components": args.components,
        "weights": args.weights,
        "jaccard_s": round(fast_s, 4),
        "pairwise_s": round(slow_s, 4),
        "speedup": round(slow_s / fast_s, 2),
        "max_abs_diff": float((fast - slow).abs().max()),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
