"""Dimension surgery: removing units physically, with Torch-Pruning's pruning functions and
dependency graph (coupled residual channels) and, for attention heads, the head counts."""

from __future__ import annotations

import traceback
import warnings
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from .._runtime import forward_logits
from ..inputs import Batch

__all__ = ["graph_for", "remove_heads"]


def graph_for(model: nn.Module, example: Batch) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (traced with gradients on, flags restored).

    Raises:
        ValueError: when Torch-Pruning cannot trace the model, with its error: structured
            units need the graph (channel shuffles and splits, as in ShuffleNet, are a known
            gap of Torch-Pruning's index mapping).
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(True)
    try:
        with torch.enable_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example, forward_fn=lambda m, x: forward_logits(m, x)
            )
    except (ArithmeticError, IndexError, KeyError, RuntimeError, ValueError) as error:
        where = _failing_frame(error)
        raise ValueError(
            f"model: Torch-Pruning cannot trace its channel dependencies ({type(error).__name__}"
            f": {error} in {where}); a view or split of the channel dimension (for example "
            "ShuffleNet's channel shuffle) is the usual cause. Structured methods need that "
            "graph; per-weight methods (wanda, lbmask-unstructured) do not"
        ) from error
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
    _check_shape_inference(caught)
    return graph


_GAVE_UP = "Maximum recursive depth reached"


def _check_shape_inference(caught: list[warnings.WarningMessage]) -> None:
    """Re-issue Torch-Pruning's warnings, but refuse a graph whose shape inference gave up:
    enumerating its channel groups then expands reshapes index by index without bound
    (torchvision's swin_t: more than 20 GB, and the process is killed)."""
    for warning in caught:
        if _GAVE_UP not in str(warning.message):
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    if any(_GAVE_UP in str(w.message) for w in caught):
        raise ValueError(
            "model: Torch-Pruning's shape inference gave up on it (\"Maximum recursive depth "
            'reached!", for example on the window reshapes of a Swin Transformer), and '
            "enumerating its channel groups would exhaust memory. Structured methods need "
            "them; per-weight methods (wanda, lbmask-unstructured) do not"
        )


def _failing_frame(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    last = frames[-1] if frames else None
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}" if last else "?"


def remove_heads(
    modules: dict[str, nn.Module], info: dict[str, Any], heads: list[int], size: int
) -> None:
    rows = [h * size + i for h in heads for i in range(size)]
    for key in ("q", "k", "v"):
        tp.prune_linear_out_channels(modules[info[key]], rows)
    tp.prune_linear_in_channels(modules[info["o"]], rows)
    # the attention module reshapes with its own head count: keep it (and BERT's total size)
    # in step with the sliced projections
    owner: Any = modules[info["owner"]]
    remaining = int(owner.num_attention_heads) - len(heads)
    owner.num_attention_heads = remaining
    if hasattr(owner, "all_head_size"):
        owner.all_head_size = remaining * size
