"""Decomposing across processes with ``torch.distributed`` (launched by ``torchrun``).

Components are independent given the frozen model, except through the loss (the default
objective compares a sample's scores *across* components). So every rank keeps the full
``[K, N]`` mask logits and the same Adam state, and draws the same batches from the same
seeded generator; a rank computes the masked passes of only its share of the component chunks
(chunk ``i`` belongs to rank ``i % world``). Each step, the ranks sum (``all_reduce``) two
tensors in which every element is non-zero on at most one rank — the chunks' logits, so every
rank sees the full ``[K, B, C]`` and computes the same loss, and the logits' gradients, each
row from its owner — and then take the same optimiser step. Adding zeros is exact, so the
masks are bit-identical to a single process's with the same settings, and every rank returns
the same :class:`saved.Decomposition`; nothing is gathered at the end.

Boundary mining deals out its batches (batch ``i`` to rank ``i % world``; each batch seeds its
own random starts, so the points do not depend on who mined them) and gathers the results.
Evaluation deals out its batches the same way, and the reference logits and decomposed
predictions are summed into full tensors on every rank, which then computes the identical
report. Score-based baselines and the adaptive-sparsity search run whole on every rank.

gloo on the CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._hashing import model_digest

__all__ = ["ENV", "Ranks", "ranks_for"]

#: The variables torchrun sets that ``distributed=True`` needs.
ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world``; collectives go through
    tensors on ``device`` (the CPU for gloo, this rank's GPU for nccl)."""

    rank: int
    world: int
    device: torch.device
    #: seconds spent in the step's collectives (sending plus waiting for the slowest rank)
    #: and how many there were: what benchmarks/scale.py reports as the communication share
    spent: dict[str, float] = field(
        default_factory=lambda: {"seconds": 0.0, "calls": 0}, compare=False, repr=False
    )

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether chunk ``index`` (of components or of data) is this rank's."""
        return index % self.world == self.rank

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        """One collective: its seconds and its count go into :attr:`spent`."""
        started = time.perf_counter()
        yield
        self.spent["seconds"] += time.perf_counter() - started
        self.spent["calls"] += 1

    def combine(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the ranks, in place; each element must be non-zero on at most
        one rank, so the sum is exact (the owner's value)."""
        with self._counted():
            moved = tensor if tensor.device == self.device else tensor.to(self.device)
            dist.all_reduce(moved, op=dist.ReduceOp.SUM)
            if moved is not tensor:
                tensor.copy_(moved)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a stop decision all ranks share)."""
        with self._counted():
            value = torch.tensor([1.0 if flag else 0.0], device=self.device)
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank (picklable objects: mining's
        per-batch results, whose sizes differ)."""
        with self._counted():
            every: list[Any] = [None] * self.world
            dist.all_gather_object(every, value)
        return every

    def summary(self) -> dict[str, float]:
        """What the decomposition's metadata records of the group's work."""
        spent = self.spent
        return {
            "ranks": self.world,
            "collective_seconds": round(spent["seconds"], 3),
            "collective_calls": int(spent["calls"]),
        }

    def from_leader(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (picklable objects: metadata, timings)."""
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def check_same(self, model: nn.Module, data_digest: str) -> None:
        """Refuse to go on when the ranks do not hold the same weights and data (the data's
        :func:`saved.fingerprint`): the sums above would silently mix two models."""
        mine = (model_digest(model), data_digest)
        every = self.gather(mine)
        for rank, (weights, data) in enumerate(every):
            if weights != mine[0]:
                raise ValueError(
                    f"distributed: rank {rank}'s model weights differ from rank {self.rank}'s; "
                    "load the same weights on every rank (seed the model's initialisation, "
                    "or load a checkpoint)"
                )
            if data != mine[1]:
                raise ValueError(
                    f"distributed: rank {rank}'s data differ from rank {self.rank}'s; give "
                    "every rank the same samples in the same order (no DistributedSampler: the "
                    "engine shards the work itself)"
                )


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def ranks_for(distributed: bool | None, device: torch.device) -> tuple[Ranks | None, torch.device]:
    """The group to decompose in, and the device this rank runs on.

    ``distributed``: ``None`` uses torch.distributed when it is initialised with more than one
    rank (and runs alone otherwise); ``True`` also initialises it from torchrun's environment
    (an error outside torchrun); ``False`` runs alone even inside a group.
    """
    if distributed is False:
        return None, device
    if not dist.is_available():
        if distributed:
            raise RuntimeError("distributed: this build of torch has no torch.distributed")
        return None, device
    if not dist.is_initialized():
        if not distributed:
            return None, device
        missing = [name for name in ENV if name not in os.environ]
        if missing:
            raise ValueError(
                "distributed=True: torch.distributed is not initialised and "
                f"{', '.join(missing)} are not set; launch with torchrun "
                "(torchrun --nproc-per-node 2 -m saved decompose ...)"
            )
        if device.type == "cuda":
            device = _local_cuda(device)
            torch.cuda.set_device(device)
        dist.init_process_group(_backend(device))
    world = dist.get_world_size()
    if world == 1:
        return None, device
    if device.type == "cuda":
        device = _local_cuda(device)
    backend = dist.get_backend()
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(
            "distributed: the process group uses nccl, which needs CUDA tensors; run on "
            "device='cuda' or initialise the group with backend 'gloo'"
        )
    comm = device if backend == "nccl" else torch.device("cpu")
    return Ranks(dist.get_rank(), world, comm), device


def _local_cuda(device: torch.device) -> torch.device:
    """``cuda`` without an index means this rank's own GPU, ``cuda:LOCAL_RANK``."""
    if device.index is not None:
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
