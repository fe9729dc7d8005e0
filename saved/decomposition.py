"""A decomposition: class-wise components as masks over one frozen model, and their surgery."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ._hashing import model_digest, tensor_digest
from ._runtime import forward_logits, frozen_eval, model_device, on_device, resolve_device
from ._validation import check_in
from .bounds import Contract
from .components import ClassComponents
from .inputs import (
    DEFAULT_BATCH_SIZE,
    Batch,
    Inputs,
    as_inputs,
    batch_to,
    in_data_order,
    match_dtype,
    repeat_batch,
)
from .masking.units import MaskSpace, UnitSpace

__all__ = ["ComponentCost", "Decomposition", "Record", "load"]


@dataclass(frozen=True)
class ComponentCost:
    """Size of a standalone component (after surgery) next to the full model."""

    params: int
    macs: int  # multiply-accumulates of one sample's forward pass
    full_params: int
    full_macs: int


class Record(TypedDict, total=False):
    """What a decomposition records of how it was made (saved with it as JSON): keys checked by
    the type checker, values JSON-ready."""

    seconds: float
    estimate_seconds: float
    data_sha256: str  # the decomposition samples' content hash
    n_samples: int
    contract: dict[str, Any]  # Contract.to_dict(): the thresholds evaluate applies by default
    seed: int
    device: str
    config: dict[str, Any]  # alpha, and the LBMask and mining settings as dicts
    training: dict[str, Any]  # saved.report.Training.to_dict(), learned masks only
    distributed: dict[str, Any]  # the ranks' summary, under torch.distributed


@dataclass
class Decomposition:
    """K components of ``model``: component k keeps the units where ``masks[k]`` is true.

    The model itself is never modified; component networks are either simulated by masking
    hooks (:meth:`component_logits`, all K in one batched pass) or built as standalone smaller
    networks by surgery (:meth:`component`).
    """

    model: nn.Module
    space: MaskSpace
    components: ClassComponents
    masks: Tensor  # [K, N] bool
    method: str = "lbmask"
    sparsity: float | list[float] = 0.5  # one per component with sparsity="auto"
    metadata: Record = field(default_factory=lambda: Record())
    #: ``[K, N]`` learned mask logits (LBMask): every component's units in the order they are
    #: kept; None for scored methods. :meth:`at_sparsity` re-binarises it.
    ranking: Tensor | None = None

    def __post_init__(self) -> None:
        k, n = self.components.num_components, self.space.num_units
        if self.masks.shape != (k, n) or self.masks.dtype != torch.bool:
            raise ValueError(
                f"masks: expected a bool tensor [K={k}, N={n}], got {tuple(self.masks.shape)}"
            )
        if self.ranking is not None and tuple(self.ranking.shape) != (k, n):
            raise ValueError(
                f"ranking: expected [K={k}, N={n}] mask logits, got {tuple(self.ranking.shape)}"
            )

    def judged_by(self, contract: Contract) -> Decomposition:
        """A copy recording ``contract`` (the thresholds :func:`saved.evaluate` applies when
        given none); this decomposition, perhaps a cached record, is left as it is."""
        return dataclasses.replace(self, metadata={**self.metadata, "contract": contract.to_dict()})

    def at_sparsity(self, sparsity: float | Sequence[float]) -> Decomposition:
        """The same learned ranking binarised at another ``sparsity`` (one value, or one per
        component), with nothing learned again: what ``sparsity="auto"`` and
        benchmarks/sparsity_sweep.py do. Only LBMask decompositions keep a ranking."""
        if self.ranking is None:
            raise ValueError(
                f"at_sparsity: a {self.method!r} decomposition keeps no learned ranking; "
                "decompose again at the new sparsity"
            )
        values = [sparsity] if isinstance(sparsity, (int, float)) else list(sparsity)
        rates = [check_in("sparsity", value, "(0, 1)") for value in values]
        if len(rates) not in (1, self.components.num_components):
            raise ValueError(
                f"sparsity: expected one value or one per component "
                f"({self.components.num_components}), got {len(rates)}"
            )
        allocation = self.metadata.get("config", {}).get("lbmask", {}).get("allocation", "group")
        masks = self.space.binarise(self.ranking, rates if len(rates) > 1 else rates[0], allocation)
        return dataclasses.replace(
            self, masks=masks, sparsity=rates if len(rates) > 1 else rates[0]
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
        runner: nn.Module | None = None,
    ) -> Tensor:
        """``[K, n, C]`` logits of every component, K components per batched forward pass.

        ``runner``: the model already copied to ``device`` (lets a caller that works in
        chunks pay for the copy once); by default the model itself, or a copy when
        ``device`` differs from the model's.
        """
        inputs = match_dtype(data if isinstance(data, Inputs) else as_inputs(data), self.model)
        run_on = resolve_device(self.model, device)
        runner = runner if runner is not None else on_device(self.model, run_on)
        k = self.components.num_components
        per_pass = max(1, batch_size // k)
        chunks = []
        masks = self.masks.to(run_on)
        order, batches = inputs.batches_by_length(per_pass, run_on)  # texts: less padding
        with frozen_eval(runner), torch.no_grad():
            for batch in batches:
                out = self.space.run(runner, masks, batch)
                chunks.append(out.view(k, -1, out.shape[-1]).float().cpu())
        return in_data_order(torch.cat(chunks, dim=1), order, dim=1)

    @contextlib.contextmanager
    def joint_predictor(self) -> Iterator[Callable[[Batch], tuple[Tensor, Tensor]]]:
        """Inside the block: ``point -> (reference logits [n, C], decomposed predictions [n])``
        for a batch (a tensor, or a dict of tensors such as ``inputs_embeds`` with its
        attention mask), the model and its K components in *one* forward pass (for many small
        calls: a search, a fuzzer).

        The model is frozen in eval mode and gradients are off for the block; for structured
        masks the hooks are registered once for the block (row 0 an all-kept mask, the model
        itself; rows 1..K the components). Per-weight masks run the two predictions apart.
        """
        model = self.model
        with contextlib.ExitStack() as stack:
            stack.enter_context(frozen_eval(model))
            stack.enter_context(torch.no_grad())
            if not isinstance(self.space, UnitSpace):

                def apart(point: Batch) -> tuple[Tensor, Tensor]:
                    logits = forward_logits(model, batch_to(point, model_device(model)))
                    return logits.float().cpu(), self.predict(point)

                yield apart
                return
            k = self.components.num_components
            everything = torch.ones(1, self.space.num_units, dtype=torch.bool)
            rows = torch.cat([everything, self.masks.cpu()]).to(model_device(model))
            stack.enter_context(self.space.masked(model, rows))

            def joint(point: Batch) -> tuple[Tensor, Tensor]:
                n = (next(iter(point.values())) if isinstance(point, dict) else point).shape[0]
                batch = repeat_batch(batch_to(point, model_device(model)), k + 1)
                out = forward_logits(model, batch).float().cpu().view(k + 1, n, -1)
                return out[0], self.components.predict(out[1:])

            yield joint

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
        if not isinstance(self.space, UnitSpace):
            raise TypeError(
                f"component: {self.method} masks single weights; only structured masks can be "
                "turned into smaller networks"
            )
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

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write the masks and the example batch as safetensors, the rest as JSON metadata in
        the same file (never pickle). Returns the path written."""
        from safetensors.torch import save

        from ._version import __version__

        path = Path(path)
        tensors = {"masks": self.masks.to(torch.uint8).contiguous()}
        if self.ranking is not None:
            tensors["ranking"] = self.ranking.detach().float().cpu().contiguous()
        example = self.space.example
        fields = example if isinstance(example, dict) else {"x": example}
        tensors.update({f"example.{k}": v.detach().cpu().contiguous() for k, v in fields.items()})
        meta = {
            "format": FORMAT_VERSION,
            "saved_version": __version__,
            "torch_version": torch.__version__,
            "method": self.method,
            "sparsity": self.sparsity,
            "space": "weights" if not isinstance(self.space, UnitSpace) else "units",
            "groups": [[g.name, g.size] for g in self.space.groups],
            "example_is_mapping": isinstance(example, dict),
            "num_classes": self.components.num_classes,
            "positive_sets": [list(group) for group in self.components.sets],
            "aggregator": self.components.aggregator,
            "model_sha256": model_digest(self.model),
            "tensors_sha256": _tensors_digest(tensors),
            **self.metadata,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic: written to a unique file beside the target, then renamed over it, so a reader
        # never sees half a file; the temporary file goes on any exit (KeyboardInterrupt too).
        # The bytes are written by an ordinary exclusive open, so the file gets the permissions
        # of any file the user writes (the umask), not the owner-only 0600 that mkstemp and
        # safetensors' own save_file give.
        temporary = str(path.parent / f".{path.name}.{uuid.uuid4().hex}.partial")
        try:
            with open(temporary, "xb") as handle:
                handle.write(save(tensors, metadata={"saved": json.dumps(meta)}))
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        return path


#: 2 added ``tensors_sha256``: a file whose bytes changed is refused, not misread.
FORMAT_VERSION = 2


def _tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor_digest(tensor).encode())
    return digest.hexdigest()


def load(path: str | Path, model: nn.Module) -> Decomposition:
    """Read a decomposition written by :meth:`Decomposition.save` for ``model``.

    Raises:
        ValueError: when the file is not a saved decomposition of this version, or ``model``
            is not the model it was made for (its weights' hash differs).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})["saved"])
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises several types for a broken file
        raise ValueError(f"{path}: not a readable saved decomposition ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: format {found!r} is not {FORMAT_VERSION}")
    try:
        return _from_stored(path, meta, tensors, model)
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError(
            f"{path}: incomplete metadata ({type(error).__name__}: {error})"
        ) from error


def _from_stored(
    path: Path, meta: dict[str, Any], tensors: dict[str, Tensor], model: nn.Module
) -> Decomposition:
    from .masking.weights import WeightSpace

    if _tensors_digest(tensors) != meta["tensors_sha256"]:
        raise ValueError(f"{path}: its tensors do not match their recorded sha256 (corrupted)")
    digest = model_digest(model)
    if meta["model_sha256"] != digest:
        raise ValueError(
            f"{path}: made for another model (weights sha256 {meta['model_sha256'][:12]}..., "
            f"this model {digest[:12]}...)"
        )
    fields = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("example.")}
    example: Any = fields if meta["example_is_mapping"] else fields["x"]
    builder = WeightSpace if meta["space"] == "weights" else UnitSpace
    space = builder.of(model, example)
    if [[g.name, g.size] for g in space.groups] != meta["groups"]:
        raise ValueError(f"{path}: the model's units differ from the ones the masks were made for")
    components = ClassComponents(
        meta["num_classes"], tuple(tuple(g) for g in meta["positive_sets"]), meta["aggregator"]
    )
    masks = tensors["masks"]
    expected = (components.num_components, sum(g.size for g in space.groups))
    if tuple(masks.shape) != expected:
        raise ValueError(f"{path}: masks of shape {tuple(masks.shape)}, expected {expected}")
    known = {
        "format",
        "saved_version",
        "torch_version",
        "method",
        "sparsity",
        "space",
        "groups",
        "example_is_mapping",
        "num_classes",
        "positive_sets",
        "aggregator",
        "model_sha256",
        "tensors_sha256",
    }
    return Decomposition(
        model=model,
        space=space,
        components=components,
        masks=masks.bool(),
        method=meta["method"],
        sparsity=meta["sparsity"],
        metadata=cast(Record, {k: v for k, v in meta.items() if k not in known}),
        ranking=tensors.get("ranking"),
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
