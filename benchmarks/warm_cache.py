"""Warm over cold: the cost of re-running the example suite once decompositions are cached.

Runs ``pytest examples`` against a fresh cache directory and Hypothesis example database (so
the first run trains the example models, learns every mask and searches every counterexample),
then again warm, and prints both wall times, their ratio, and the cache
counters the plugin reports. The last line is a JSON object.

    .venv/bin/python benchmarks/warm_cache.py [--runs 2] [--smoke]

``--smoke`` runs only the digits example (for CI: the script keeps working).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cache: Path, target: str = "examples") -> tuple[float, str]:
    # a fresh pytest cache (models, masks) and a fresh Hypothesis example database
    env = {**os.environ, "HYPOTHESIS_STORAGE_DIRECTORY": str(cache / "hypothesis")}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", target, "-q", "-o", f"cache_dir={cache}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    elapsed = time.perf_counter() - start
    counters = re.search(r"cache: (\d+) hits, (\d+) decompositions computed", result.stdout)
    return elapsed, counters.group(0) if counters else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2, help="warm runs after the cold one")
    parser.add_argument("--smoke", action="store_true", help="only the digits example")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs: expected at least 1, got {args.runs}")
    target = "examples/test_digits_mlp.py" if args.smoke else "examples"
    with tempfile.TemporaryDirectory() as directory:
        cache = Path(directory) / "cache"
        cold, cold_cache = run(cache, target)
        warm = [run(cache, target) for _ in range(args.runs)]
    warm_times = sorted(t for t, _ in warm)
    median = warm_times[len(warm_times) // 2]
    print(f"cold {cold:.1f} s ({cold_cache}); warm {', '.join(f'{t:.1f}' for t in warm_times)} s")
    print(f"warm / cold = {median / cold:.3f}")
    print(
        json.dumps(
            {
                "cold_s": round(cold, 2),
                "warm_s": [round(t, 2) for t in warm_times],
                "ratio": round(median / cold, 3),
                "cold_cache": cold_cache,
                "warm_cache": warm[-1][1],
            }
        )
    )


if __name__ == "__main__":
    main()
