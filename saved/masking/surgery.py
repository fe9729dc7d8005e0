"""Dimension surgery: removing units physically, with Torch-Pruning's pruning functions and
dependency graph (coupled residual channels) and, for attention heads, the head counts."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from .._runtime import forward_logits
from ..inputs import Batch

__all__ = ["graph_for", "remove_heads"]


def graph_for(model: nn.Module, example: Batch) -> tp.DependencyGraph:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(True)
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, forward_fn=lambda m, x: forward_logits(m, x)
            )
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


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
