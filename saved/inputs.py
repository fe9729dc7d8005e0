"""The forms user inputs take, as one type: :class:`Inputs`, and the batches a model is called with.

Everything else in :mod:`saved` sees an :class:`Inputs` (a set of samples with optional labels);
nothing else inspects tensors vs. dicts vs. loaders. Running the model is
:mod:`saved._runtime`; the continuous form boundary mining perturbs is :mod:`saved.embedding`.

Accepted input forms:

* a tensor ``[n, ...]`` (float features, images, or token ids);
* a :class:`~torch.utils.data.TensorDataset` of ``(x,)`` or ``(x, y)``;
* a :class:`~torch.utils.data.DataLoader` yielding tensors, ``(x, y)`` pairs, or dicts;
* a transformers batch: a dict / ``BatchEncoding`` of tensors (``input_ids``, ``attention_mask``,
  ``pixel_values``, ``inputs_embeds`` ...). A ``labels`` (or ``label``) entry is taken as labels.

Decision (recorded in docs/DECISIONS.md): :func:`as_inputs` reads a DataLoader into host memory;
evaluation reads any form in chunks instead (:func:`iter_inputs`), so its memory does not grow
with the data, and decomposition keeps a seeded sample of at most ``max_samples``
(:func:`sample_inputs`). The model itself always runs batch by batch on the device.

About 500 lines on purpose: :class:`Inputs` and the readers that build it from each accepted
form (tensors, datasets, loaders, mappings; in memory, streamed, sampled) share the private
helpers that tell the forms apart; split across modules, those helpers would become public.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ._validation import check_count

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "TENSOR_FIELD",
    "Batch",
    "Inputs",
    "as_inputs",
    "batch_to",
    "in_data_order",
    "iter_inputs",
    "match_dtype",
    "model_dtype",
    "repeat_batch",
    "sample_inputs",
    "sample_with_positions",
    "trim_padding",
]

#: What a model is called with: a tensor (``model(x)``) or a dict (``model(**x)``).
Batch: TypeAlias = Tensor | dict[str, Tensor]

#: The field name of a plain tensor input (one tensor, handed to the model positionally).
TENSOR_FIELD = "x"
_LABEL_KEYS = ("labels", "label")
DEFAULT_BATCH_SIZE = 256


@dataclass(frozen=True)
class Inputs:
    """A set of ``n`` samples in one input form, held on the CPU, with optional labels.

    Build it with :func:`as_inputs`, which also rejects non-finite values; the constructor
    checks only the structure, so internal copies (subsets, perturbed fields) stay cheap.

    ``fields`` maps names to tensors sharing their first dimension ``n``. A plain tensor input
    is stored under one key and handed to the model positionally; a mapping input is handed to
    the model as keyword arguments.
    """

    fields: dict[str, Tensor]
    is_mapping: bool
    labels: Tensor | None = None

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValueError("data: no input tensors were given")
        sizes = {name: int(t.shape[0]) if t.dim() else -1 for name, t in self.fields.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"data: the input tensors disagree on the number of samples: {sizes}")
        n = next(iter(sizes.values()))
        if n <= 0:
            raise ValueError("data: empty data (0 samples); give at least one sample")
        if self.labels is not None:
            if self.labels.dim() != 1:
                raise ValueError(
                    f"labels: expected a 1-D tensor of class indices, got shape "
                    f"{tuple(self.labels.shape)}"
                )
            if self.labels.shape[0] != n:
                raise ValueError(f"labels: {self.labels.shape[0]} labels for {n} samples")
            if self.labels.is_floating_point() or self.labels.is_complex():
                raise TypeError(f"labels: expected integer class indices, got {self.labels.dtype}")

    def __len__(self) -> int:
        return int(next(iter(self.fields.values())).shape[0])

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.fields)

    @property
    def tensor(self) -> Tensor:
        """The samples of a plain tensor input (features, images) as one ``[n, ...]`` tensor.

        Raises:
            TypeError: for a mapping input (a transformers batch), which has several fields.
        """
        if self.is_mapping:
            raise TypeError(f"data: a mapping input ({', '.join(self.keys)}) is not one tensor")
        return self.fields[TENSOR_FIELD]

    def batch(self, index: Tensor | slice, device: torch.device | str | None = None) -> Batch:
        """The samples at ``index`` in the form the model is called with, on ``device``."""
        return self.as_batch(self.fields_at(index, device))

    def batches(
        self, batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str | None = None
    ) -> Iterator[Batch]:
        """Consecutive batches of at most ``batch_size`` samples, in order, on ``device``."""
        _check_batch_size(batch_size)
        for start in range(0, len(self), batch_size):
            yield self.batch(slice(start, start + batch_size), device)

    def length_order(self) -> Tensor | None:
        """The sample indices ordered by sequence length (the last attended position; stable),
        or None when the samples have no 2-D ``attention_mask`` (no padding to save).

        Batches cut from this order hold texts of similar length, so :func:`trim_padding`
        drops most of their padding: Debian descriptions average 11 tokens padded to 30, and a
        batch of 256 drawn in data order almost always holds one text of nearly full length."""
        mask = self.fields.get("attention_mask") if self.is_mapping else None
        if mask is None or mask.dim() != 2:
            return None
        positions = torch.arange(1, mask.shape[1] + 1)
        lengths = ((mask != 0) * positions).amax(dim=1)
        return torch.sort(lengths, stable=True).indices

    def batches_by_length(
        self, batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str | None = None
    ) -> tuple[Tensor, Iterator[Batch]]:
        """Batches of at most ``batch_size`` samples in :meth:`length_order`, each without the
        padding all its rows share (:func:`trim_padding`), and that order: row ``i`` of the
        concatenated results is sample ``order[i]`` (:func:`in_data_order` puts them back).
        Samples without an attention mask come in data order, as :meth:`batches` gives them."""
        _check_batch_size(batch_size)
        order = self.length_order()
        if order is None:
            return torch.arange(len(self)), self.batches(batch_size, device)
        starts = range(0, len(self), batch_size)
        chunks = (order[start : start + batch_size] for start in starts)
        return order, (trim_padding(self.batch(chunk, device)) for chunk in chunks)

    def select(self, index: Tensor | Sequence[int]) -> Inputs:
        """The subset at ``index`` (any order, repeats allowed), labels included."""
        index = torch.as_tensor(index, dtype=torch.long)
        if index.dim() != 1 or index.numel() == 0:
            raise ValueError("index: expected a non-empty 1-D sequence of sample indices")
        if int(index.min()) < -len(self) or int(index.max()) >= len(self):
            raise IndexError(f"index: out of range for {len(self)} samples")
        labels = self.labels[index] if self.labels is not None else None
        return Inputs({k: v[index] for k, v in self.fields.items()}, self.is_mapping, labels)

    def concat(self, other: Inputs) -> Inputs:
        """These samples followed by ``other``'s, which must have the same form and fields."""
        if self.is_mapping != other.is_mapping or self.keys != other.keys:
            raise ValueError(
                f"concat: input forms differ ({self.keys} vs {other.keys}); both sides must have "
                "the same fields"
            )
        for name in self.keys:
            a, b = self.fields[name], other.fields[name]
            if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
                raise ValueError(
                    f"concat: field {name!r} differs: {tuple(a.shape[1:])}/{a.dtype} vs "
                    f"{tuple(b.shape[1:])}/{b.dtype}"
                )
        if (self.labels is None) != (other.labels is None):
            raise ValueError("concat: one side has labels and the other does not")
        labels = (
            torch.cat([self.labels, other.labels])
            if self.labels is not None and other.labels is not None
            else None
        )
        fields = {k: torch.cat([self.fields[k], other.fields[k]]) for k in self.keys}
        return Inputs(fields, self.is_mapping, labels)

    def without_labels(self) -> Inputs:
        return Inputs(self.fields, self.is_mapping, None)

    def replace(self, name: str, tensor: Tensor) -> Inputs:
        """The same samples with field ``name`` replaced by ``tensor`` (same first dimension)."""
        if name not in self.fields:
            raise KeyError(f"no input field {name!r} (fields: {self.keys})")
        return Inputs({**self.fields, name: tensor}, self.is_mapping, self.labels)

    def fields_at(
        self, index: Tensor | slice, device: torch.device | str | None = None
    ) -> dict[str, Tensor]:
        """Every field's rows at ``index``, on ``device`` (where they are if ``None``)."""
        return {
            k: v[index] if device is None else v[index].to(device) for k, v in self.fields.items()
        }

    def as_batch(self, fields: dict[str, Tensor]) -> Batch:
        """Fields of this form (e.g. from :meth:`fields_at`) as the model is called with them."""
        return fields if self.is_mapping else fields[TENSOR_FIELD]


def _check_batch_size(batch_size: int) -> None:
    check_count("batch_size", batch_size)


def _as_label_tensor(labels: Any) -> Tensor:
    tensor = torch.as_tensor(labels)
    if tensor.is_floating_point():
        if not bool(torch.all(tensor == tensor.round())):
            raise TypeError("labels: expected integer class indices, got non-integral floats")
        tensor = tensor.long()
    return tensor.detach().cpu()


def _split_mapping(batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor | None]:
    fields: dict[str, Tensor] = {}
    labels: Tensor | None = None
    for key, value in batch.items():
        if key in _LABEL_KEYS:
            labels = _as_label_tensor(value)
        elif isinstance(value, Tensor):
            fields[key] = _host(value, f"data[{key!r}]")
        else:
            raise TypeError(f"data[{key!r}]: expected a tensor, got {type(value).__name__}")
    return fields, labels


def _loader_item(item: Any) -> tuple[dict[str, Tensor], bool, Tensor | None]:
    """One DataLoader batch as ``(fields, is_mapping, labels)``."""
    if isinstance(item, Tensor):
        return {TENSOR_FIELD: _host(item, "data")}, False, None
    if isinstance(item, Mapping):
        fields, labels = _split_mapping(item)
        return fields, True, labels
    if isinstance(item, Sequence) and len(item) in (1, 2) and isinstance(item[0], Tensor):
        labels = _as_label_tensor(item[1]) if len(item) == 2 else None
        return {TENSOR_FIELD: _host(item[0], "data")}, False, labels
    raise TypeError(
        "data: a DataLoader must yield tensors, (x, y) pairs or dicts of tensors, "
        f"got {type(item).__name__}"
    )


def _loader_chunks(
    loader: DataLoader[Any], chunk_size: int
) -> Iterator[tuple[dict[str, Tensor], bool, Tensor | None]]:
    """Consecutive runs of the loader's batches holding at least ``chunk_size`` samples (the
    last may hold fewer), each concatenated; checks the batches agree in form as it goes."""
    parts: list[dict[str, Tensor]] = []
    label_parts: list[Tensor] = []
    first: tuple[bool, tuple[str, ...], bool] | None = None  # is_mapping, keys, has labels
    held = 0

    def flush() -> tuple[dict[str, Tensor], bool, Tensor | None]:
        assert first is not None
        fields = {k: torch.cat([p[k] for p in parts]) for k in first[1]}
        labels = torch.cat(label_parts) if first[2] else None
        parts.clear()
        label_parts.clear()
        return fields, first[0], labels

    for item in loader:
        fields, mapping, labels = _loader_item(item)
        if first is None:
            first = (mapping, tuple(fields), labels is not None)
        elif mapping != first[0]:
            raise TypeError("data: the DataLoader mixes dict and tensor batches")
        elif tuple(fields) != first[1]:
            raise ValueError("data: DataLoader batches have different fields")
        elif (labels is not None) != first[2]:
            raise ValueError("data: some DataLoader batches carry labels and others do not")
        parts.append(fields)
        if labels is not None:
            label_parts.append(labels)
        held += _batch_len(next(iter(fields.values())))
        if held >= chunk_size:
            held = 0
            yield flush()
    if first is None:
        raise ValueError("data: the DataLoader yielded no batches (empty data)")
    if parts:
        yield flush()


def _read_loader(loader: DataLoader[Any]) -> tuple[dict[str, Tensor], bool, Tensor | None]:
    return next(_loader_chunks(loader, chunk_size=sys.maxsize))  # one chunk: everything


#: Samples per chunk when data is read in pieces, in batches (see :func:`iter_inputs`).
STREAM_BATCHES = 4


def iter_inputs(
    data: Any,
    labels: Any = None,
    *,
    chunk_size: int = STREAM_BATCHES * DEFAULT_BATCH_SIZE,
    keep: Tensor | None = None,
) -> Iterator[Inputs]:
    """``data`` as consecutive :class:`Inputs` of about ``chunk_size`` samples, in order.

    A DataLoader is read lazily, one chunk at a time, so memory stays at a chunk however much
    it yields; other forms are already in memory and are sliced. Explicit ``labels`` are cut
    to match the chunks. Each chunk is checked for non-finite values like :func:`as_inputs`.
    ``keep``: a boolean mask over the sample positions; only those samples are yielded.
    """
    if keep is not None:
        yield from _kept(iter_inputs(data, labels, chunk_size=chunk_size), keep)
        return
    _check_batch_size(chunk_size)
    explicit = _as_label_tensor(labels) if labels is not None else None
    if isinstance(data, DataLoader):
        offset = 0
        for fields, is_mapping, found in _loader_chunks(data, chunk_size):
            n = _batch_len(next(iter(fields.values())))
            chosen = found
            if explicit is not None:
                if explicit.shape[0] < offset + n:
                    raise ValueError(
                        f"labels: {explicit.shape[0]} labels for at least {offset + n} samples"
                    )
                chosen = explicit[offset : offset + n]
            chunk = Inputs(fields, is_mapping, chosen)
            _check_finite(chunk)
            offset += n
            yield chunk
        if explicit is not None and explicit.shape[0] != offset:
            raise ValueError(f"labels: {explicit.shape[0]} labels for {offset} samples")
        return
    inputs = as_inputs(data, labels)
    for start in range(0, len(inputs), chunk_size):
        part = slice(start, start + chunk_size)
        chunk_labels = inputs.labels[part] if inputs.labels is not None else None
        yield Inputs(inputs.fields_at(part), inputs.is_mapping, chunk_labels)


def _kept(chunks: Iterator[Inputs], keep: Tensor) -> Iterator[Inputs]:
    """The samples of ``chunks`` whose position is true in ``keep`` (one entry per sample)."""
    if keep.dim() != 1 or keep.dtype != torch.bool:
        raise ValueError("keep: expected a 1-D boolean mask over the samples")
    offset = 0
    for chunk in chunks:
        n = len(chunk)
        if offset + n > keep.numel():
            raise ValueError(f"keep: a mask over {keep.numel()} samples, the data has more")
        chosen = torch.nonzero(keep[offset : offset + n]).flatten()
        offset += n
        if chosen.numel():
            yield chunk.select(chosen)
    if offset != keep.numel():
        raise ValueError(f"keep: a mask over {keep.numel()} samples, the data has {offset}")


def sample_inputs(
    data: Any,
    labels: Any = None,
    *,
    max_samples: int,
    seed: int = 0,
    keep: Tensor | None = None,
) -> Inputs:
    """All of ``data`` if it holds at most ``max_samples`` samples, else a seeded uniform
    sample of exactly ``max_samples`` of them, in their original order.

    A DataLoader is read in one pass and never held whole: every sample draws a random key
    and the ``max_samples`` smallest keys are kept (bottom-k sampling), so memory stays at
    ``max_samples`` plus one chunk. ``keep``: only the samples where this boolean mask over
    the positions is true.
    """
    return sample_with_positions(data, labels, max_samples=max_samples, seed=seed, keep=keep)[0]


def sample_with_positions(
    data: Any,
    labels: Any = None,
    *,
    max_samples: int,
    seed: int = 0,
    keep: Tensor | None = None,
) -> tuple[Inputs, Tensor, int]:
    """:func:`sample_inputs`, with where the chosen samples stood: ``(inputs, positions,
    total)``, ``positions`` indexing the ``total`` samples ``keep`` selects (all of them
    without ``keep``), so that rows computed on those samples earlier can be picked out."""
    _check_batch_size(max_samples)
    generator = torch.Generator().manual_seed(seed)
    if not isinstance(data, DataLoader):
        inputs = as_inputs(data, labels)
        if keep is not None:
            if keep.shape != (len(inputs),) or keep.dtype != torch.bool:
                raise ValueError(f"keep: expected a boolean mask over the {len(inputs)} samples")
            inputs = inputs.select(torch.nonzero(keep).flatten())
        total = len(inputs)
        if total <= max_samples:
            return inputs, torch.arange(total), total
        keys = torch.rand(total, generator=generator)
        chosen = keys.topk(max_samples, largest=False).indices.sort().values
        return inputs.select(chosen), chosen, total
    kept: Inputs | None = None
    kept_keys, kept_order = torch.empty(0), torch.empty(0, dtype=torch.long)
    offset = 0
    for chunk in iter_inputs(data, labels, keep=keep):
        n = len(chunk)
        pool = chunk if kept is None else kept.concat(chunk)
        keys = torch.cat([kept_keys, torch.rand(n, generator=generator)])
        order = torch.cat([kept_order, torch.arange(offset, offset + n)])
        offset += n
        if len(pool) > max_samples:
            chosen = keys.topk(max_samples, largest=False).indices
            chosen = chosen[order[chosen].argsort()]  # keep the data order
            pool, keys, order = pool.select(chosen), keys[chosen], order[chosen]
        kept, kept_keys, kept_order = pool, keys, order
    assert kept is not None  # iter_inputs raises on empty data
    return kept, kept_order, offset


def as_inputs(data: Any, labels: Any = None) -> Inputs:
    """Turn any accepted input form into :class:`Inputs`, separating labels.

    Labels found inside ``data`` (a TensorDataset's second tensor, a loader's ``y``, a dict's
    ``labels``) are used unless ``labels`` is given explicitly, which then wins.

    Raises:
        TypeError: for an input form not listed in the module docstring.
        ValueError: for empty data, non-finite float inputs, or labels of the wrong length.
    """
    found: Tensor | None = None
    if isinstance(data, Inputs):
        fields, is_mapping, found = data.fields, data.is_mapping, data.labels
    elif isinstance(data, Tensor):
        fields, is_mapping = {TENSOR_FIELD: _host(data, "data")}, False
    elif isinstance(data, TensorDataset):
        if len(data.tensors) not in (1, 2):
            raise TypeError(
                f"data: a TensorDataset must hold (x,) or (x, y), got {len(data.tensors)} tensors"
            )
        fields, is_mapping = {TENSOR_FIELD: data.tensors[0].detach().cpu()}, False
        found = _as_label_tensor(data.tensors[1]) if len(data.tensors) == 2 else None
    elif isinstance(data, DataLoader):
        fields, is_mapping, found = _read_loader(data)
    elif isinstance(data, Mapping):
        (fields, found), is_mapping = _split_mapping(data), True
    else:
        raise TypeError(
            "data: expected a tensor, TensorDataset, DataLoader or dict of tensors, got "
            f"{type(data).__name__}"
        )
    chosen = _as_label_tensor(labels) if labels is not None else found
    inputs = Inputs(dict(fields), is_mapping, chosen)
    if not isinstance(data, Inputs):  # checked once, where user data enters
        _check_finite(inputs)
    return inputs


def _host(tensor: Tensor, name: str) -> Tensor:
    """``tensor`` detached on the CPU (where :class:`Inputs` keep samples)."""
    if tensor.is_meta:
        raise ValueError(f"{name}: a tensor on the meta device holds no values")
    return tensor.detach().cpu()


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter or buffer (None: none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def match_dtype(inputs: Inputs, model: nn.Module) -> Inputs:
    """``inputs`` with every floating field in the model's floating dtype.

    Decision (docs/DECISIONS.md): float64 features (NumPy, scikit-learn) or float16 images fed
    to a float32 model are cast, as ``model.to(dtype)`` users expect; integer fields (token
    ids, masks) are left alone. The model is never cast.
    """
    dtype = model_dtype(model)
    if dtype is None or all(
        t.dtype == dtype or not t.is_floating_point() for t in inputs.fields.values()
    ):
        return inputs
    fields = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.fields.items()}
    return Inputs(fields, inputs.is_mapping, inputs.labels)


def _describe(batch: Batch) -> str:
    tensors = batch.items() if isinstance(batch, dict) else [(TENSOR_FIELD, batch)]
    return ", ".join(f"{k}: {str(v.dtype)[6:]} {list(v.shape)}" for k, v in tensors)


def _check_finite(inputs: Inputs) -> None:
    for name, tensor in inputs.fields.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"data: input {name!r} holds {bad} non-finite values (NaN/Inf)")


def batch_to(batch: Batch, device: torch.device | str) -> Batch:
    """``batch`` (a tensor or a dict of tensors) on ``device``."""
    if isinstance(batch, dict):
        return {key: value.to(device) for key, value in batch.items()}
    return batch.to(device)


def repeat_batch(batch: Batch, times: int) -> Batch:
    """``times`` copies of ``batch`` stacked along the first dimension (``[times * B, ...]``)."""
    if isinstance(batch, dict):
        return {k: v.repeat(times, *([1] * (v.dim() - 1))) for k, v in batch.items()}
    return batch.repeat(times, *([1] * (batch.dim() - 1)))


def trim_padding(batch: Batch) -> Batch:
    """``batch`` without the trailing sequence positions that are padding in every row.

    Only for a mapping with a 2-D ``attention_mask``: a model that honours the mask computes
    the same logits without positions no row attends to (up to float rounding, as the matrix
    shapes change), at a cost proportional to the length kept. Text batches padded to the
    longest text of a whole data set are mostly padding (Debian descriptions: 11 tokens on
    average, padded to 32). Anything else is returned as it is.
    """
    if not isinstance(batch, dict):
        return batch
    mask = batch.get("attention_mask")
    if mask is None or mask.dim() != 2:
        return batch
    attended = torch.nonzero(mask.any(dim=0)).flatten()
    length = int(attended[-1]) + 1 if attended.numel() else 1
    if length == mask.shape[1]:
        return batch
    return {
        key: value[:, :length] if value.dim() >= 2 and value.shape[1] == mask.shape[1] else value
        for key, value in batch.items()
    }


def in_data_order(values: Tensor, order: Tensor, dim: int = 0) -> Tensor:
    """``values`` computed for the samples ``order`` (along ``dim``) back in data order."""
    return values.index_select(dim, torch.argsort(order).to(values.device))


def _batch_len(batch: Batch) -> int:
    if isinstance(batch, dict):
        return int(next(iter(batch.values())).shape[0])
    return int(batch.shape[0])
