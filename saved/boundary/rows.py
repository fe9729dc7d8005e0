"""The working state of mining's batched loops: the rows still at work, typed.

PGD and bisection run one forward (and for PGD one input-gradient backward) per step over
every row still at work. A loop's state is a :class:`Rows` subclass — one tensor field per
quantity, each with one row per pair or sample still at work — and its outcome a plain
dataclass whose fields are named like the state's fields they collect.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from torch import Tensor, nn

from .._runtime import forward_logits
from ..embedding import ContinuousForm
from ..inputs import trim_padding

__all__ = ["COMPACT_SHARE", "Rows", "call_model", "compact"]

#: finished rows are dropped once they are at least this share of the rows (see compact)
COMPACT_SHARE = 0.5


@dataclass
class Rows:
    """Rows still at work: ``row`` indexes each into the chunk the loop started with, and
    ``others`` holds the model's input fields other than the perturbed one (an attention
    mask, token types), row for row. Subclasses add their own ``[rows, ...]`` tensors; a
    field that is None is not in use by this run (for example the l_2 origin under l_inf)."""

    row: Tensor
    others: dict[str, Tensor]

    def without(self, done: Tensor) -> Self:
        """The rows where ``done`` is False, every tensor field subset alike."""
        keep = ~done
        values: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Tensor):
                value = value[keep]
            elif isinstance(value, dict):
                value = {name: tensor[keep] for name, tensor in value.items()}
            values[item.name] = value
        return type(self)(**values)


R = TypeVar("R", bound=Rows)


def compact(state: R, done: Tensor, outcome: object, *, share: float = 0.0) -> R:
    """Write the finished rows of ``state`` into ``outcome`` (every field of the ``outcome``
    dataclass, at the rows' ``row``) and drop them from ``state``.

    Only done once at least ``share`` of the rows are finished: until then the loops keep
    finished rows frozen in place. Compacting every time a row finishes costs a dozen index
    operations per iteration, which on small models outweighs the forward pass itself
    (measured with benchmarks/boundary.py); at ``share = 0.5`` it happens O(log n) times while
    the model never sees more than twice the rows still at work.
    """
    finished = int(done.sum())
    if finished == 0 or finished < share * done.numel():
        return state
    rows = state.row[done]
    for item in dataclasses.fields(outcome):  # type: ignore[arg-type]
        getattr(outcome, item.name)[rows] = getattr(state, item.name)[done]
    return state.without(done)


def call_model(
    model: nn.Module, form: ContinuousForm, others: dict[str, Tensor], values: Tensor
) -> Tensor:
    """The model's logits with the perturbed field set to ``values`` and the rows' other
    input fields ``others``, without the positions that are padding in every row (the
    chunks of :func:`saved.boundary.mine_boundary` hold texts of similar length)."""
    fields = dict(others)
    fields[form.field] = values
    return forward_logits(model, trim_padding(form.inputs.as_batch(fields)))
