"""Running the model: calls, devices, eval mode with frozen weights, batched logits.

Private: the engine's own plumbing. :func:`predict_logits` is public as ``saved.predict_logits``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .inputs import (
    DEFAULT_BATCH_SIZE,
    Batch,
    Inputs,
    _batch_len,
    _describe,
    in_data_order,
    match_dtype,
)

__all__ = [
    "Reference",
    "available_memory",
    "forward_logits",
    "frozen_eval",
    "logits_of",
    "model_device",
    "on_device",
    "predict_logits",
    "resolve_device",
]


@dataclass(frozen=True)
class Reference:
    """The reference model's logits of some samples (``[n, C]``, in their order) and the seconds
    per sample they took: computed once (by :func:`saved.holdout`) and handed to every later
    step, so that no step runs the model on a sample again, and the time estimate still knows
    what a forward costs."""

    logits: Tensor
    seconds_per_sample: float

    def select(self, keep: Tensor | None) -> Reference:
        """The rows where the boolean ``keep`` is true (all rows when ``None``)."""
        if keep is None:
            return self
        if keep.shape != (len(self.logits),) or keep.dtype != torch.bool:
            raise ValueError(f"keep: expected a boolean mask over the {len(self.logits)} rows")
        return Reference(self.logits[keep], self.seconds_per_sample)


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output: a tensor, the first item of a tuple, or ``.logits``."""
    if isinstance(output, Tensor):
        logits = output
    elif hasattr(output, "logits") and isinstance(output.logits, Tensor):
        logits = output.logits
    elif isinstance(output, Mapping) and isinstance(output.get("logits"), Tensor):
        logits = output["logits"]
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        logits = output[0]
    else:
        raise TypeError(
            "model output: expected a logits tensor, a tuple starting with one, or an object "
            f"with .logits, got {type(output).__name__}"
        )
    if logits.dim() != 2:
        raise ValueError(
            f"model output: expected logits of shape [batch, classes], got {tuple(logits.shape)}"
        )
    return logits


def forward_logits(model: nn.Module, batch: Batch) -> Tensor:
    """Call ``model`` on one batch (positionally for a tensor, by keyword for a dict)."""
    output = model(**batch) if isinstance(batch, dict) else model(batch)
    return logits_of(output)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_meta:
            raise ValueError("model: its parameters are on the meta device (not materialised)")
        return tensor.device
    return torch.device("cpu")


def resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """The device the engine runs on: ``device`` if given, else the model's own."""
    if device is None:
        return model_device(model)
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} was requested but CUDA is not available here")
    return resolved


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``: the CUDA allocator's free memory, or
    the kernel's ``MemAvailable`` on Linux for the CPU; None where it cannot be known."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself if it already lives on ``device``, else a copy moved there.

    ``Module.to`` moves a model in place; the engine must never move the user's model, so a
    different device costs one copy.
    """
    if model_device(model) == device:
        return model
    return copy.deepcopy(model).to(device)


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with every parameter frozen, then restore it exactly.

    Every submodule's ``training`` flag and every parameter's ``requires_grad`` flag are put
    back on exit, also on error, so a caller's mixed train/eval setup survives.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    try:
        model.eval()
        for param, _ in flags:
            param.requires_grad_(False)
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)


def predict_logits(
    model: nn.Module,
    inputs: Inputs,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
) -> Tensor:
    """Logits ``[n, C]`` of every sample, computed in eval mode batch by batch, on the CPU.

    Raises:
        ValueError: when the model returns a wrong shape or non-finite logits.
    """
    run_on = resolve_device(model, device)
    runner = on_device(model, run_on)
    inputs = match_dtype(inputs, runner)
    chunks: list[Tensor] = []
    order, batches = inputs.batches_by_length(batch_size, run_on)  # texts: less padding
    with frozen_eval(runner), torch.no_grad():
        for batch in batches:
            try:
                logits = forward_logits(runner, batch)
            except RuntimeError as error:  # shape/dtype mismatches deep inside the model
                raise ValueError(
                    f"model: calling it on the data ({_describe(batch)}) failed: "
                    f"{str(error).splitlines()[0]}"
                ) from error
            expected = _batch_len(batch)
            if logits.shape[0] != expected:
                raise ValueError(
                    f"model output: {logits.shape[0]} rows of logits for a batch of {expected}"
                )
            chunks.append(logits.detach().float().cpu())
    logits = in_data_order(torch.cat(chunks), order)
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise ValueError(f"model output: non-finite logits (NaN/Inf) for {bad} samples")
    return logits
