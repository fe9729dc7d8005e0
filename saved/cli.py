"""The ``saved`` command: decomposition checks outside pytest.

    saved demo                      a digits MLP through the whole SAVED pipeline
    saved check module:function     decompose and check your model; the function returns
                                    (model, data), (model, data, labels) or
                                    (model, data, labels, calibration)
    saved decompose module:function --save masks.safetensors
                                    decompose only (on the calibration data when the
                                    function returns one), and store the masks
    saved report FILE.json          render a stored report
    saved plan --eps 0.1 --expected-dis 0.02
                                    how many samples a contract needs to be able to pass

``check`` and ``report`` exit with 0 when the contract holds and 1 when it fails; errors print
one line and exit with 2 (``--debug`` shows the traceback).

Under ``torchrun --nproc-per-node N -m saved check|decompose ...`` the components are split
across the N processes (:mod:`saved.distributed`); rank 0 alone prints and writes files.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["main"]


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line."""


def _contract_from(args: argparse.Namespace) -> Any:
    from .contract import Contract

    return Contract(
        eps=args.eps,
        kappa=args.kappa,
        gamma=args.gamma,
        eta=args.eta,
        delta=args.delta,
        kappa_margin=args.kappa_margin,
        bound=args.bound,
    )


def _write_outputs(report: Any, args: argparse.Namespace, console: Console) -> None:
    if args.json:
        Path(args.json).write_text(report.to_json(indent=2))
        console.print(f"report written to {args.json}")
    if args.html:
        from ._version import __version__
        from .report import html_page  # the page pytest --decompose-report writes

        name = getattr(args, "target", None) or getattr(args, "file", None) or "saved demo"
        page = html_page([(name, report)], about=f"written by saved {__version__}")
        Path(args.html).write_text(page, encoding="utf-8")
        console.print(f"HTML written to {args.html}")


def _under_torchrun() -> bool:
    """Launched by torchrun with more than one process: decompose across them."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _leader() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``decompose`` (and ``check``) the options ask for."""
    from .inputs import DEFAULT_BATCH_SIZE

    lbmask, sparsity = _lbmask_from(args)
    return {
        "method": args.method,
        "contract": _contract_from(args),
        "sparsity": sparsity,
        "lbmask": lbmask,
        "device": args.device,
        "seed": args.seed,
        "progress": not args.quiet,
        "distributed": True if _under_torchrun() else None,
        "batch_size": DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size,
    }


def _lbmask_from(args: argparse.Namespace) -> tuple[Any, Any]:
    """The LBMask settings the options ask for and the sparsity argument of ``decompose``
    (only ``"auto"`` goes there; a number is part of the settings)."""
    from .masking.lbmask import LBMaskConfig

    sparsity = _sparsity(args.sparsity)
    settings: dict[str, Any] = {} if args.alpha is None else {"alpha": args.alpha}
    if sparsity != "auto":
        settings["sparsity"] = sparsity
    if args.steps is not None:
        settings["steps"] = args.steps
    if args.component_chunk is not None:
        settings["component_chunk"] = args.component_chunk
    return LBMaskConfig(**settings), "auto" if sparsity == "auto" else None


def _run_check(
    model: Any,
    data: Any,
    labels: Any,
    args: argparse.Namespace,
    console: Console,
    calibration: Any = None,
) -> Any:
    from .pipeline import check
    from .report import render_report

    options = _engine_options(args)
    started = time.perf_counter()
    report = check(
        model,
        data,
        labels=labels,
        calibration=calibration,
        evaluation_fraction=args.evaluation_fraction,
        same_samples=args.same_samples,
        **options,
    )
    console.print(render_report(report))
    advice = report.next_step()
    if advice is not None:
        console.print(advice)
    _write_outputs(report, args, console)
    console.print(f"[dim]decomposed and checked in {time.perf_counter() - started:.1f} s[/dim]")
    return report


def _sparsity(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise UsageError(
            f"--sparsity: expected a number in (0, 1) or 'auto', got {text!r}"
        ) from None


#: The demo's three disjoint parts of the 1,797 digits (a seeded permutation, decided before any
#: run): the model trains on the first, the decomposition learns on the second, the contract is
#: certified on the third, which neither the model nor the decomposition saw.
DEMO_PARTS = (599, 599, 599)


def _demo(args: argparse.Namespace, console: Console) -> int:
    """Train an MLP on one part of the real digits data, decompose it on a second and certify
    on a third: a certificate on samples the model never trained on either."""
    import torch

    from ._runtime import predict_logits
    from .inputs import as_inputs
    from .testing import digits, tiny_mlp, train_classifier

    started = time.perf_counter()
    x, y = digits()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, decompose, certify = torch.split(order, list(DEMO_PARTS))
    model = train_classifier(
        tiny_mlp(hidden=(128, 128), seed=args.seed), x[train], y[train], steps=300
    )
    predicted = predict_logits(model, as_inputs(x[certify])).argmax(1)
    accuracy = float((predicted == y[certify]).float().mean())
    console.print(
        f"digits MLP 64-128-128-10 trained on {len(train)} real scikit-learn digits "
        f"(accuracy {accuracy:.3f} on {len(certify)} it never saw, "
        f"{time.perf_counter() - started:.1f} s); decomposing with {args.method} at sparsity "
        f"{args.sparsity} on {len(decompose)} other digits"
    )
    _run_check(model, x[certify], y[certify], args, console, x[decompose])
    console.print(
        f"samples: the model trained on {len(train)} digits, the decomposition learned on "
        f"{len(decompose)} others, the contract certified on the {len(certify)} that neither "
        "saw (three disjoint parts of a seeded permutation)"
    )
    console.print(f"[dim]demo done in {time.perf_counter() - started:.1f} s[/dim]")
    return 0  # a demonstration: the verdict is the output, not the exit status


def _load_target(target: str) -> tuple[Any, Any, Any, Any]:
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        raise UsageError(f"expected module:function, got {target!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(f"cannot import {module_name!r}: {error}") from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UsageError(f"{module_name!r} has no function {function_name!r}")
    result = function()
    if not isinstance(result, tuple) or len(result) not in (2, 3, 4):
        raise UsageError(
            f"{target} must return (model, data), (model, data, labels) or "
            "(model, data, labels, calibration)"
        )
    model, data, *rest = result
    rest += [None] * (2 - len(rest))
    return model, data, rest[0], rest[1]


def _check(args: argparse.Namespace, console: Console) -> int:
    _contract_from(args)  # validate thresholds before any import of the user's code
    model, data, labels, calibration = _load_target(args.target)
    report = _run_check(model, data, labels, args, console, calibration)
    return 0 if report.holds else 1


def _decompose(args: argparse.Namespace, console: Console) -> int:
    """Decompose the function's model and store the masks (no certificate: ``check`` does
    that on held-out samples)."""
    from .pipeline import decompose

    options = _engine_options(args)  # checks the options before the user's code runs
    model, data, labels, calibration = _load_target(args.target)
    if calibration is not None:
        data, labels = calibration, None
    started = time.perf_counter()
    decomposition = decompose(model, data, labels=labels, **options)
    if _leader():
        decomposition.save(args.save)
    ranks = decomposition.metadata.get("distributed", {}).get("ranks", 1)
    console.print(
        f"{args.method}: {decomposition.components.num_components} components at sparsity "
        f"{decomposition.sparsity} in {time.perf_counter() - started:.1f} s on {ranks} "
        f"process{'es' if ranks > 1 else ''}; masks written to {args.save}"
    )
    return 0


def _report(args: argparse.Namespace, console: Console) -> int:
    from .report import ContractReport, render_report

    path = Path(args.file)
    try:
        report = ContractReport.from_json(path.read_text())
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UsageError(f"{path}: not a readable report ({error})") from error
    console.print(render_report(report))
    _write_outputs(report, args, console)
    return 0 if report.holds else 1


def _plan(args: argparse.Namespace, console: Console) -> int:
    """Samples a contract needs, under the chosen bound and the other one."""
    from .contract import BOUNDS, plan_samples

    contract = _contract_from(args)
    console.print(
        f"to pass eps = {contract.eps:g} at delta = {contract.delta:g} when the true boundary "
        f"disagreement is {args.expected_dis:g} (kappa = {contract.kappa:g}):"
    )
    for name in sorted(BOUNDS, key=lambda b: b != contract.bound):
        plan = plan_samples(
            replace(contract, bound=name),
            args.expected_dis,
            evaluation_fraction=args.evaluation_fraction,
        )
        chosen = " (chosen)" if name == contract.bound else ""
        console.print(
            f"  {name}{chosen}: |B| >= {plan.n_boundary}, {plan.n_samples} evaluated samples, "
            f"{plan.n_with_holdout} in all with {args.evaluation_fraction:g} held out"
        )
    return 0


def _add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--html", metavar="PATH", help="also write the report as HTML")


def _add_contract(parser: argparse.ArgumentParser) -> None:
    from .pipeline import METHODS

    group = parser.add_argument_group("contract and method")
    group.add_argument("--eps", type=float, default=0.1, help="Dis + h bound (default 0.1)")
    group.add_argument("--kappa", type=float, default=0.2, help="boundary quantile (default 0.2)")
    group.add_argument("--kappa-margin", type=float, default=None, help="absolute margin instead")
    group.add_argument("--gamma", type=float, default=0.5, help="max overlap (default 0.5)")
    group.add_argument("--eta", type=float, default=0.3, help="min prune (default 0.3)")
    group.add_argument("--delta", type=float, default=0.05, help="bound's delta (default 0.05)")
    group.add_argument(
        "--bound",
        choices=("binomial", "hoeffding"),
        default="binomial",
        help="upper confidence bound of Dis: exact Clopper-Pearson (default) or Dis + h",
    )
    group.add_argument(
        "--evaluation-fraction",
        type=float,
        default=0.5,
        help="share of the data held out to certify (default 0.5)",
    )
    group.add_argument("--method", choices=sorted(METHODS), default="lbmask")
    group.add_argument(
        "--sparsity", default="0.5", help="target sparsity in (0, 1), or auto (default 0.5)"
    )
    group.add_argument(
        "--same-samples",
        action="store_true",
        help="the paper's Algorithm 1: decompose and certify on the same samples (the bound "
        "is then not valid)",
    )
    group.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="LBMask init: 0 uniform .. 1 the prior alone (default 1, the Taylor prior)",
    )
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: the model's)"
    )
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    group.add_argument(
        "--batch-size", type=int, default=None, help="samples per forward pass (default 256)"
    )
    group.add_argument(
        "--steps", type=int, default=None, help="LBMask steps (default: automatic stopping)"
    )
    group.add_argument(
        "--component-chunk",
        type=int,
        default=None,
        help="components per masked pass (default: by activation size); under torchrun, "
        "chunks are what the processes share",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saved", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a digits MLP through the whole pipeline")
    _add_contract(demo)
    _add_outputs(demo)
    demo.set_defaults(run=_demo)
    check = sub.add_parser("check", help="decompose and check module:function's model")
    check.add_argument("target", help="module:function returning (model, data[, labels])")
    _add_contract(check)
    _add_outputs(check)
    check.set_defaults(run=_check)
    decompose = sub.add_parser("decompose", help="decompose module:function's model, save masks")
    decompose.add_argument("target", help="module:function returning (model, data[, labels])")
    decompose.add_argument(
        "--save", required=True, metavar="PATH", help="where the masks go (.safetensors)"
    )
    _add_contract(decompose)
    decompose.set_defaults(run=_decompose)
    plan = sub.add_parser("plan", help="samples a contract needs to be able to pass")
    plan.add_argument("--eps", type=float, default=0.1)
    plan.add_argument("--kappa", type=float, default=0.2)
    plan.add_argument("--kappa-margin", type=float, default=None)
    plan.add_argument("--delta", type=float, default=0.05)
    plan.add_argument("--gamma", type=float, default=0.5)
    plan.add_argument("--eta", type=float, default=0.3)
    plan.add_argument("--bound", choices=("binomial", "hoeffding"), default="binomial")
    plan.add_argument(
        "--expected-dis", type=float, default=0.0, help="expected boundary disagreement"
    )
    plan.add_argument("--evaluation-fraction", type=float, default=0.5)
    plan.set_defaults(run=_plan)
    report = sub.add_parser("report", help="render a stored JSON report")
    report.add_argument("file")
    _add_outputs(report)
    report.set_defaults(run=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=False, quiet=not _leader())  # one voice under torchrun
    try:
        code: int = args.run(args, console)
    except (UsageError, ValueError, TypeError, OSError, RuntimeError, MemoryError) as error:
        if args.debug:
            raise
        print(f"saved: error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
