"""Unstructured masks: every weight of the model's Linear and Conv layers is its own unit.

For comparison with structured masks (the paper's unstructured baselines): supports are sets of
weights, sizes count weights, and there is no surgery (a sparse weight matrix is not a smaller
network). Each group is one weight tensor; binarisation keeps exactly ``round((1 - s) * numel)``
weights of every tensor. The classifier's weights are never masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .._runtime import logits_of
from ..inputs import Batch
from .discovery import layers_run
from .space import MaskSpace

__all__ = ["WeightGroup", "WeightSpace"]


@dataclass(frozen=True)
class WeightGroup:
    """One weight tensor (parameter ``name``) of ``size`` weights."""

    name: str
    shape: torch.Size
    size: int
    norms: Tensor = field(repr=False)  # |w| of each weight

    @property
    def kind(self) -> str:
        """One kind for all weight tensors: ``"kind"`` allocation shares one quota across
        every tensor, ``"group"`` gives each tensor its own."""
        return "weights"


class WeightSpace(MaskSpace[WeightGroup]):
    """The weights of every Linear / Conv layer the forward pass calls, but the classifier.
    Build it with :meth:`of`.

    A layer whose weight its parent reads functionally (the output projection of
    ``nn.MultiheadAttention``) is left out: activation-based scores (Wanda) cannot see its
    inputs, and every method masks the same weights."""

    @classmethod
    def of(
        cls, model: nn.Module, example: Batch, classifier: nn.Module | None = None
    ) -> WeightSpace:
        order = layers_run(model, example)  # one pass: the layers called, the last is the head
        ran = set(order)
        head = classifier if classifier is not None else order[-1]
        groups = [
            WeightGroup(
                f"{name}.weight",
                module.weight.shape,
                module.weight.numel(),
                module.weight.detach().abs().flatten().float().cpu(),
            )
            for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))
            and module is not head
            and module in ran
        ]
        return cls(groups, example)

    def run(self, model: nn.Module, masks: Tensor, batch: Batch) -> Tensor:
        """K passes, one per component, each with its masked weights (``functional_call``)."""
        params = dict(model.named_parameters())
        outputs = []
        for row in masks:
            masked = {
                group.name: params[group.name]
                * row[columns].view(group.shape).to(params[group.name].dtype)
                for group, columns in self.group_slices()
            }
            if isinstance(batch, dict):
                out = functional_call(model, masked, args=(), kwargs=batch, strict=False)
            else:
                out = functional_call(model, masked, (batch,), strict=False)
            outputs.append(logits_of(out))
        return torch.cat(outputs)
