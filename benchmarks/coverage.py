"""Does it work on my model? Every architecture of the torchvision and transformers zoos that
users bring, against every method -> docs/COVERAGE.md.

Each model is built with random weights (torchvision's builders with ``num_classes=10``;
transformers' small configs: 2 layers, hidden 32 — nothing is downloaded) and trained for a
few steps on real data (Fashion-MNIST images, upsampled and repeated to 3 channels for the
torchvision models; the 4-section Debian texts for the text models), so its logits are not
those of an untrained net. Then, for each method, on a few samples:

* ``decompose`` (LBMask for two steps), then ``evaluate`` on other samples;
* surgery: component 0 and component K-1 as standalone smaller networks
  (``Decomposition.component``) against the masked model, max |logit difference| on the
  evaluation samples (structured methods only: per-weight masks have no surgery);
* the unit space: how many units of which kind (channels, neurons, heads; weights for the
  unstructured methods), and the seconds ``decompose`` took.

A failure is a row with its error, never a crash of the script. One boundary-mining run per
model is shared by the methods that need it (as benchmarks/paper_tables.py does).

    .venv/bin/python benchmarks/coverage.py               # every model -> docs/COVERAGE.md
    .venv/bin/python benchmarks/coverage.py --only resnet18,bert       # a subset
    .venv/bin/python benchmarks/coverage.py --smoke --out /tmp/C.md    # CI: one per family
    .venv/bin/python benchmarks/coverage.py --render docs/COVERAGE.json    # re-render only
"""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from generated import log, provenance, study_main
from models import head, load_split
from torch import nn

import saved
from saved import LBMaskConfig, testing
from saved.boundary import BoundaryConfig, mine_boundary
from saved.inputs import Inputs
from saved.masking.units import UnitSpace

#: every method the engine has (its registry, ``saved.METHODS``), in its order
METHODS = tuple(saved.METHODS)
#: surgery must reproduce the masked model to this (fp32), relative to the largest logit
SURGERY_TOLERANCE = 1e-4
N_DECOMPOSE, N_EVALUATE, TRAIN_STEPS = 32, 32, 20
MESSAGE_CHARS = 160  # of an error's first line kept in a row


@dataclass(frozen=True)
class Spec:
    """One architecture: its family, how to build it, and the data it reads."""

    family: str  # "torchvision" or "transformers"
    build: Callable[[], nn.Module]
    data: str  # "image3-<size>" (3 channels, upsampled), "image1-<size>", or "text"


def _tv(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(num_classes=10, **kwargs)

    return build


_SMALL = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _hf(kind: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers as tf

        text = dict(vocab_size=30522, hidden_size=32, num_labels=4, **_SMALL)
        image = dict(hidden_size=32, num_labels=10, image_size=28, patch_size=7, num_channels=1)
        configs: dict[str, Any] = {
            "bert": (tf.BertConfig, text, tf.BertForSequenceClassification),
            "distilbert": (
                tf.DistilBertConfig,
                dict(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=4),
                tf.DistilBertForSequenceClassification,
            ),
            "roberta": (
                tf.RobertaConfig,
                {**text, "max_position_embeddings": 80, "pad_token_id": 0},
                tf.RobertaForSequenceClassification,
            ),
            "albert": (
                tf.AlbertConfig,
                {**text, "embedding_size": 16},
                tf.AlbertForSequenceClassification,
            ),
            "electra": (
                tf.ElectraConfig,
                {**text, "embedding_size": 16},
                tf.ElectraForSequenceClassification,
            ),
            "deberta-v2": (tf.DebertaV2Config, text, tf.DebertaV2ForSequenceClassification),
            "vit": (tf.ViTConfig, {**image, **_SMALL}, tf.ViTForImageClassification),
            "deit": (tf.DeiTConfig, {**image, **_SMALL}, tf.DeiTForImageClassification),
            "hf-convnext": (
                tf.ConvNextConfig,
                dict(
                    num_channels=1,
                    hidden_sizes=[8, 16, 32, 64],
                    depths=[1, 1, 1, 1],
                    num_labels=10,
                    image_size=32,
                ),
                tf.ConvNextForImageClassification,
            ),
        }
        if kind == "mobilevit":
            return testing.tiny_mobilevit()
        config_class, values, model_class = configs[kind]
        return model_class(config_class(**values))

    return build


MODELS: dict[str, Spec] = {
    "resnet18": Spec("torchvision", _tv("resnet18"), "image3-32"),
    "resnet50": Spec("torchvision", _tv("resnet50"), "image3-32"),
    "mobilenet_v2": Spec("torchvision", _tv("mobilenet_v2"), "image3-32"),
    "mobilenet_v3_small": Spec("torchvision", _tv("mobilenet_v3_small"), "image3-32"),
    "efficientnet_b0": Spec("torchvision", _tv("efficientnet_b0"), "image3-32"),
    "convnext_tiny": Spec("torchvision", _tv("convnext_tiny"), "image3-32"),
    "regnet_y_400mf": Spec("torchvision", _tv("regnet_y_400mf"), "image3-32"),
    "shufflenet_v2_x0_5": Spec("torchvision", _tv("shufflenet_v2_x0_5"), "image3-32"),
    "squeezenet1_1": Spec("torchvision", _tv("squeezenet1_1"), "image3-64"),
    "densenet121": Spec("torchvision", _tv("densenet121"), "image3-32"),
    "vit_b_16": Spec("torchvision", _tv("vit_b_16", image_size=32), "image3-32"),
    "swin_t": Spec("torchvision", _tv("swin_t"), "image3-32"),
    "bert": Spec("transformers", _hf("bert"), "text"),
    "distilbert": Spec("transformers", _hf("distilbert"), "text"),
    "roberta": Spec("transformers", _hf("roberta"), "text"),
    "albert": Spec("transformers", _hf("albert"), "text"),
    "electra": Spec("transformers", _hf("electra"), "text"),
    "deberta-v2": Spec("transformers", _hf("deberta-v2"), "text"),
    "vit": Spec("transformers", _hf("vit"), "image1-28"),
    "deit": Spec("transformers", _hf("deit"), "image1-28"),
    "hf-convnext": Spec("transformers", _hf("hf-convnext"), "image1-32"),
    "mobilevit": Spec("transformers", _hf("mobilevit"), "image1-32"),
}
#: one model per family of blocks, for CI — plain residual, inverted residual (depthwise),
#: BERT-like text, ViT-like image transformer — with the methods that run in seconds there
#: (per-weight LBMask on resnet18's 11 M weights takes about a minute)
SMOKE: dict[str, tuple[str, ...]] = {
    "resnet18": ("lbmask", "wanda", "random"),
    "mobilenet_v2": ("lbmask", "wanda", "wanda-structured", "random"),
    "bert": METHODS,
    "vit": METHODS,
}


def _data(kind: str, n: int) -> Inputs:
    """``n`` seeded real samples of the test split, in the form the model reads."""
    if kind == "text":
        return head(load_split("debian4", "test"), n, seed=0)
    images = head(load_split("fmnist", "test"), n, seed=0)
    channels, size = int(kind[5]), int(kind.split("-")[1])
    x = images.tensor
    if size != x.shape[-1]:
        x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return saved.as_inputs(x.repeat(1, channels, 1, 1), images.labels)


def _trained(spec: Spec, train: Inputs, steps: int) -> nn.Module:
    """The model built seeded and trained ``steps`` Adam steps on ``train`` (eval mode)."""
    torch.manual_seed(0)
    model = spec.build()
    assert train.labels is not None
    batch = train.batch(slice(0, len(train)))
    return testing.train_classifier(model, batch, train.labels, steps=steps, lr=1e-3, batch_size=16)


def _units(space: Any) -> str:
    if isinstance(space, UnitSpace):
        kinds = Counter[str]()
        for group in space.groups:
            kinds[group.kind] += group.size
        text = ", ".join(f"{count:,} {kind}" for kind, count in sorted(kinds.items()))
        if space.excluded:  # channel groups a LayerNorm / GroupNorm normalises together
            left = sum(e.size for e in space.excluded)
            groups = f"{len(space.excluded)} group" + ("s" if len(space.excluded) > 1 else "")
            text += f"; left out: {groups} of {left:,} channels"
        return text
    return f"{space.num_units:,} weights"


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _surgery(decomposition: saved.Decomposition, data: Inputs) -> dict[str, float]:
    """Max |logit difference| of components 0 and K-1 as standalone networks against the
    masked model, the largest |logit| of the masked model (the scale of that difference), and
    the share of the model's parameters component 0 keeps."""
    masked = decomposition.component_logits(data)
    worst, kept = 0.0, 1.0
    for k in sorted({0, masked.shape[0] - 1}):
        standalone = decomposition.component(k)
        worst = max(worst, float((saved.predict_logits(standalone, data) - masked[k]).abs().max()))
        if k == 0:
            kept = _params(standalone) / _params(decomposition.model)
    return {"surgery": worst, "scale": float(masked.abs().max()), "kept_params": kept}


def _error(error: BaseException) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1]
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    place = f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno}"
    return f"{type(error).__name__}: {message[:MESSAGE_CHARS]} ({place})"


def cell(
    model: nn.Module, method: str, data: Inputs, held: Inputs, mined: Any, steps: int
) -> dict[str, Any]:
    """One model x method: decompose, evaluate, surgery; the error (and where) on failure."""
    row: dict[str, Any] = {"method": method, "stage": "decompose"}
    started = time.perf_counter()
    try:
        config = LBMaskConfig(steps=steps, batch_size=4) if method.startswith("lbmask") else None
        decomposition = saved.decompose(
            model,
            data,
            method=method,
            lbmask=config,
            mined=mined,  # shared; the methods without a calibration set ignore it
            progress=False,
        )
        row["seconds"] = time.perf_counter() - started
        row["units"] = _units(decomposition.space)
        row["stage"] = "evaluate"
        report = saved.evaluate(model, decomposition, held)
        row["prune"] = report.min_prune
        row["global_dis"] = report.global_disagreement
        if isinstance(decomposition.space, UnitSpace):
            row["stage"] = "surgery"
            row.update(_surgery(decomposition, held))
        row["stage"] = "done"
        row["ok"] = row.get("surgery", 0.0) <= SURGERY_TOLERANCE * max(1.0, row.get("scale", 1.0))
    except Exception as error:  # a row, never a crash: the matrix records what fails
        row.update(ok=False, error=_error(error), seconds=time.perf_counter() - started)
    return row


def study(names: list[str], smoke: bool) -> dict[str, Any]:
    if smoke:
        names = [n for n in names if n in SMOKE] or names[:1]
    steps = 1 if smoke else 2
    rows: list[dict[str, Any]] = []
    for name in names:
        spec = MODELS[name]
        n_train = 16 if smoke else 64
        samples = _data(spec.data, n_train + N_DECOMPOSE + N_EVALUATE)
        train = samples.select(torch.arange(n_train))
        data = samples.select(torch.arange(n_train, n_train + N_DECOMPOSE)).without_labels()
        held = samples.select(torch.arange(n_train + N_DECOMPOSE, len(samples))).without_labels()
        base: dict[str, Any] = {"model": name, "family": spec.family, "data": spec.data}
        started = time.perf_counter()
        try:
            model = _trained(spec, train, 2 if smoke else TRAIN_STEPS)
        except Exception as error:
            rows.append({**base, "method": "(build)", "ok": False, "error": _error(error)})
            log(f"{name}: build/train failed: {_error(error)}")
            continue
        base["params"] = _params(model)
        base["train_seconds"] = time.perf_counter() - started
        try:
            mined: Any = mine_boundary(
                model, data, BoundaryConfig(steps=3 if smoke else 10), progress=False
            )
        except Exception as error:
            mined = None
            rows.append({**base, "method": "(mining)", "ok": False, "error": _error(error)})
        for method in SMOKE.get(name, METHODS[:1]) if smoke else METHODS:
            row = {**base, **cell(model, method, data, held, mined, steps)}
            rows.append(row)
            state = "ok" if row["ok"] else row.get("error", f"surgery {row.get('surgery')}")
            log(f"{name} {method}: {state} ({row['seconds']:.1f} s)")
    return {"rows": rows, "tolerance": SURGERY_TOLERANCE}


# --------------------------------------------------------------------------- markdown


#: the engine's deliberate refusals (docs/DECISIONS.md, "Architectures beyond the first six"):
#: an error that starts with one of these is a documented limit, any other a failure
REFUSALS = {
    "surgery: the channels of": "uneven grouped conv",
    "model: Torch-Pruning cannot trace": "untraceable",
    "model: Torch-Pruning's shape inference gave up": "untraceable",
    "lbmask: learning": "memory",
}


def refusal(row: dict[str, Any]) -> str | None:
    """The kind of deliberate refusal a failed row is, or None (a failure, or no error)."""
    message = row.get("error", "").split(": ", 1)[-1]
    return next((kind for start, kind in REFUSALS.items() if message.startswith(start)), None)


def _clipped(error: str) -> str:
    """The recorded error, marked where :func:`_error` cut its message."""
    head, _, tail = error.partition(": ")
    message, _, place = tail.rpartition(" (")
    return f"{head}: {message}… ({place}" if len(message) >= MESSAGE_CHARS else error


def _cell_text(row: dict[str, Any]) -> str:
    if not row["ok"]:
        kind = refusal(row)
        if kind is not None and row["stage"] == "surgery":
            return f"works; surgery refused ({kind})"
        if kind is not None:
            return f"refused ({kind})"
        if "error" in row:
            return f"**FAILS** at {row['stage']}"
        return f"**surgery off by {row['surgery']:.1e}**"
    if "surgery" in row:
        return f"ok ({row['surgery']:.0e}, {row['kept_params']:.2f})"
    return "ok"


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    by = {(r["model"], r["method"]): r for r in rows}
    lines = [
        "# COVERAGE: which architectures each method decomposes",
        "",
        f"Generated by `benchmarks/coverage.py`; no figure is edited by hand. Command: "
        f"`{results.get('command', '')}`. {provenance(results)} "
        f"Machine: {results.get('machine', '')}"
        + (
            " — **taken while another heavy job shared the machine: the seconds are "
            "indicative only**."
            if results.get("under_load")
            else "."
        ),
        "",
        f"Every model has random weights trained for {TRAIN_STEPS} Adam steps on real data "
        f"(Fashion-MNIST images; the 4-section Debian texts for text models); each method "
        f"decomposes {N_DECOMPOSE} samples (LBMask: 2 steps) and is evaluated on "
        f"{N_EVALUATE} others. `ok (d, p)`: decompose, evaluate and surgery ran, and components "
        f"0 and K-1 as standalone smaller networks reproduce the masked model's logits to "
        f"`d` (max |diff|, fp32; must be <= {results['tolerance']:g} x max(1, largest "
        "|logit|)), and component 0 keeps the share `p` of the model's parameters; `ok` "
        "without figures: per-weight masks, which have no surgery.",
        "",
        "## The matrix",
        "",
        "| model | family | params | " + " | ".join(methods) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    for model in models:
        first = next(r for r in rows if r["model"] == model)
        cells = [_cell_text(by[(model, m)]) if (model, m) in by else "" for m in methods]
        params = f"{first['params'] / 1e6:.2f} M" if "params" in first else "-"
        lines.append(f"| {model} | {first['family']} | {params} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Unit spaces and time",
        "",
        "| model | units (structured methods) | weights (unstructured) | decompose seconds "
        "(lbmask / wanda / random) |",
        "| --- | --- | --- | --- |",
    ]
    for model in models:
        structured = by.get((model, "random"), {}).get("units", "-")
        unstructured = by.get((model, "wanda"), {}).get("units", "-")
        seconds = " / ".join(
            f"{by[(model, m)]['seconds']:.1f}" if (model, m) in by else "-"
            for m in ("lbmask", "wanda", "random")
        )
        lines.append(f"| {model} | {structured} | {unstructured} | {seconds} |")
    refused = [r for r in rows if not r["ok"] and refusal(r) is not None]
    failures = [r for r in rows if not r["ok"] and refusal(r) is None]
    lines += ["", "## Refusals (deliberate, with their one-line error)", ""]
    if not refused:
        lines.append("None.")
    seen: set[tuple[str, str]] = set()
    for r in refused:
        key = (r["model"], r["error"])
        if key in seen:
            continue
        seen.add(key)
        methods = ", ".join(x["method"] for x in refused if (x["model"], x["error"]) == key)
        lines.append(f"- **{r['model']}** ({methods}; at {r['stage']}): `{_clipped(r['error'])}`")
    lines += ["", "## Failures", ""]
    if not failures:
        lines.append("None: every cell above works or is a deliberate refusal.")
    for r in failures:
        detail = r.get("error") or f"surgery off by {r['surgery']:.2e} (scale {r['scale']:.2e})"
        lines.append(f"- **{r['model']} / {r['method']}** ({r.get('stage', '-')}): `{detail}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    study_main(__doc__.split("\n\n")[0], MODELS, "COVERAGE", "coverage.py", study, markdown)


if __name__ == "__main__":
    main()
