"""The ``saved`` command: decomposition checks outside pytest."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from rich.console import Console

__all__ = ["main"]


def _demo(args: argparse.Namespace, console: Console) -> int:
    """Train a small MLP on the real digits data and report its unmasked decomposition."""
    import torch

    from .adapters import as_inputs, predict_logits
    from .components import ClassComponents
    from .contract import Contract
    from .evaluation import assess
    from .testing import digits, tiny_mlp, train_classifier

    started = time.perf_counter()
    x, y = digits()
    model = train_classifier(tiny_mlp(seed=args.seed), x, y, steps=300, seed=args.seed)
    inputs = as_inputs(x, labels=y)
    logits = predict_logits(model, inputs)
    accuracy = float((logits.argmax(1) == y).float().mean())
    console.print(
        f"digits MLP (64-32-32-10), {len(inputs)} real samples, training accuracy {accuracy:.3f}"
    )
    components = ClassComponents(num_classes=10)
    decomposed = components.predict(logits)
    # Unmasked components keep every weight of the model: supports are all parameters.
    n_weights = sum(p.numel() for p in model.parameters())
    supports = torch.ones(components.num_components, n_weights, dtype=torch.bool)
    report = assess(Contract(), logits, decomposed, supports, labels=y, method="unmasked")
    console.print(report)
    console.print(
        "Unmasked components reproduce the model exactly (disagreement 0) but share every "
        "weight, so the structural and reduction axes fail until masks are learned."
    )
    console.print(f"[dim]done in {time.perf_counter() - started:.1f} s[/dim]")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saved", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a digits MLP through the decomposition check")
    demo.add_argument("--seed", type=int, default=0, help="seed for training (default 0)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    try:
        code: int = args.run(args, console)
    except (ValueError, TypeError, OSError) as error:
        if args.debug:
            raise
        print(f"saved: error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
