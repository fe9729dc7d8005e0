"""The continuous form of inputs that boundary mining perturbs: token ids become word
embeddings (text), other inputs stay as they are (features, images)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .inputs import TENSOR_FIELD, Inputs, match_dtype

__all__ = [
    "ContinuousForm",
    "broadcast_mask",
    "continuous_form",
    "embed_inputs",
    "word_embeddings",
]


def broadcast_mask(mask: Tensor | None, like: Tensor) -> Tensor | None:
    """A ``[rows, positions]`` mask viewed to broadcast against ``like`` (``[rows, positions,
    ...]``), in its dtype and device."""
    if mask is None:
        return None
    mask = mask.to(like.device, like.dtype)
    return mask.view(*mask.shape, *([1] * (like.dim() - mask.dim())))


def word_embeddings(model: nn.Module) -> nn.Embedding:
    """The word (token) embedding table of a transformers model."""
    getter = getattr(model, "get_input_embeddings", None)
    table = getter() if callable(getter) else None
    if not isinstance(table, nn.Embedding):
        raise TypeError(
            f"model: {type(model).__name__} has no word embedding table "
            "(expected a transformers model with get_input_embeddings())"
        )
    return table


#: Continuous fields a perturbation may move, by preference, for mapping inputs.
_CONTINUOUS_FIELDS = ("inputs_embeds", "pixel_values", "input_values", TENSOR_FIELD)


@dataclass(frozen=True)
class ContinuousForm:
    """Inputs in a form with one continuous field that boundary mining may move.

    ``position_mask``, when set, is a ``[n, positions]`` 0/1 tensor of the positions the
    perturbation may touch (the attention mask of a text batch: padding stays untouched).
    ``embedded`` says the field lives in embedding space (no natural box domain).
    """

    inputs: Inputs
    field: str
    position_mask: Tensor | None
    embedded: bool

    @property
    def values(self) -> Tensor:
        """The continuous field, ``[n, ...]``."""
        return self.inputs.fields[self.field]

    def movable_values(self) -> Tensor:
        """The field's values at the positions a perturbation may touch, flattened."""
        keep = broadcast_mask(self.position_mask, self.values)
        if keep is None:
            return self.values.flatten()
        return self.values.masked_select(keep.expand_as(self.values).bool())

    def pinned(self, delta: Tensor, rows: slice) -> Tensor:
        """``delta`` (``[len(rows), ...]``, a perturbation of those rows) with the positions
        that must not move (padding) set to 0."""
        row_mask = self.position_mask[rows] if self.position_mask is not None else None
        keep = broadcast_mask(row_mask, delta)
        return delta if keep is None else delta * keep


def continuous_form(model: nn.Module, inputs: Inputs) -> ContinuousForm:
    """The form to perturb: token ids become word embeddings, other inputs stay as they are;
    floating fields take the model's dtype (:func:`saved.inputs.match_dtype`).

    Raises:
        TypeError: when no continuous field exists (e.g. a plain tensor of token ids).
    """
    inputs = match_dtype(inputs, model)
    if inputs.is_mapping and "input_ids" in inputs.fields:
        inputs = embed_inputs(model, inputs)
    if not inputs.is_mapping:
        name = TENSOR_FIELD
    else:
        name = next((k for k in _CONTINUOUS_FIELDS if k in inputs.fields), "")
    if not name or not inputs.fields[name].is_floating_point():
        raise TypeError(
            "data: no continuous input to perturb; pass float features or images, or a "
            "transformers batch (dict with input_ids) for text models"
        )
    embedded = name == "inputs_embeds"
    mask = inputs.fields.get("attention_mask") if embedded else None
    return ContinuousForm(inputs, name, mask, embedded)


def embed_inputs(model: nn.Module, inputs: Inputs, *, batch_size: int = 1024) -> Inputs:
    """The same samples with ``input_ids`` replaced by their word embeddings ``inputs_embeds``.

    Only the word embeddings are looked up: a transformers model adds position and token-type
    embeddings itself when called with ``inputs_embeds``, so ``model(**embedded)`` equals
    ``model(**original)``. The attention mask and other fields are kept as they are.
    """
    if not inputs.is_mapping or "input_ids" not in inputs.fields:
        raise ValueError("data: embedding needs a transformers batch with 'input_ids'")
    table = word_embeddings(model)
    ids = inputs.fields["input_ids"]
    with torch.no_grad():
        embedded = torch.cat(
            [
                table(ids[start : start + batch_size].to(table.weight.device)).detach().cpu()
                for start in range(0, ids.shape[0], batch_size)
            ]
        )
    fields = {k: v for k, v in inputs.fields.items() if k != "input_ids"}
    return Inputs({"inputs_embeds": embedded, **fields}, True, inputs.labels)
