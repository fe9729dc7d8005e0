"""A decomposition: class-wise components as masks over one frozen model, and their surgery."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .adapters import (
    DEFAULT_BATCH_SIZE,
    Inputs,
    as_inputs,
    forward_logits,
    frozen_eval,
    on_device,
    repeat_batch,
    resolve_device,
)
from .components import ClassComponents
from .units import UnitSpace

__all__ = ["ComponentCost", "Decomposition"]


@dataclass(frozen=True)
class ComponentCost:
    """Size of a standalone component (after surgery) next to the full model."""

    params: int
    macs: int  # multiply-accumulates of one sample's forward pass
    full_params: int
    full_macs: int


@dataclass
class Decomposition:
    """K components of ``model``: component k keeps the units where ``masks[k]`` is true.

    The model itself is never modified; component networks are either simulated by masking
    hooks (:meth:`component_logits`, all K in one batched pass) or built as standalone smaller
    networks by surgery (:meth:`component`).
    """

    model: nn.Module
    space: UnitSpace
    components: ClassComponents
    masks: Tensor  # [K, N] bool
    method: str = "lbmask"
    sparsity: float = 0.5

    def __post_init__(self) -> None:
        k, n = self.components.num_components, self.space.num_units
        if self.masks.shape != (k, n) or self.masks.dtype != torch.bool:
            raise ValueError(
                f"masks: expected a bool tensor [K={k}, N={n}], got {tuple(self.masks.shape)}"
            )

    @property
    def supports(self) -> Tensor:
        """``[K, N]`` bool: the units each component keeps (the contract's ``S_k``)."""
        return self.masks

    def component_logits(
        self,
        data: object,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``[K, n, C]`` logits of every component, K components per batched forward pass."""
        inputs = data if isinstance(data, Inputs) else as_inputs(data)
        run_on = resolve_device(self.model, device)
        runner = on_device(self.model, run_on)
        k = self.components.num_components
        per_pass = max(1, batch_size // k)
        chunks = []
        with frozen_eval(runner), torch.no_grad(), self.space.masked(runner, self.masks.to(run_on)):
            for batch in inputs.batches(per_pass, run_on):
                out = forward_logits(runner, repeat_batch(batch, k))
                chunks.append(out.view(k, -1, out.shape[-1]).float().cpu())
        return torch.cat(chunks, dim=1)

    def predict(self, data: object, **kwargs: object) -> Tensor:
        """Decomposed predictions ``y_dec`` for every sample of ``data``."""
        return self.components.predict(self.component_logits(data, **kwargs))  # type: ignore[arg-type]

    def component(self, k: int) -> nn.Module:
        """Component ``k`` as a standalone network with its pruned units removed (eval mode).

        It returns the full ``C`` logits of the masked model; the component's binary output is
        ``ClassComponents.outputs`` of them.
        """
        if not 0 <= k < self.components.num_components:
            raise IndexError(f"k: expected 0 <= k < {self.components.num_components}, got {k}")
        with frozen_eval(self.model):
            reduced = self.space.reduce(self.model, self.masks[k].cpu())
        return reduced.eval()

    def cost(self, k: int) -> ComponentCost:
        """Parameters and multiply-accumulates of component ``k`` against the full model."""
        reduced = self.component(k)
        example = self.space.example
        return ComponentCost(
            params=_params(reduced),
            macs=_macs(reduced, example),
            full_params=_params(self.model),
            full_macs=_macs(self.model, example),
        )


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs(model: nn.Module, example: object) -> int:
    """Multiply-accumulates of one sample (PyTorch's FLOP counter halved)."""
    single = {k: v[:1] for k, v in example.items()} if isinstance(example, dict) else example[:1]  # type: ignore[index]
    counter = FlopCounterMode(display=False)
    with frozen_eval(model), torch.no_grad(), counter:
        forward_logits(model, single)
    return counter.get_total_flops() // 2
