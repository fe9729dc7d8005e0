"""Real data sets that work offline: Debian package descriptions (text topics) and
Fashion-MNIST (images, from Debian's ``dataset-fashion-mnist`` package).

The Debian set is built once from the package archive's index (``apt-cache dumpavail``) by
``benchmarks/data/build_debian.py`` (the builder is not part of the package) and committed as
``saved/data/debian_sections.jsonl.gz``, so results do not drift with the archive. Each
record: ``package``, ``section``, ``text`` (the short description) and ``split`` (``train`` /
``test``).

* ``debian14``: 14 topic sections, the analogue of DBPedia-14;
* ``debian4``: 4 of them, the analogue of AG News.

The long-description sets (:data:`DEBIAN_LONG_SETS`: the short description and the package's
long description, about 50 words, the length of a DBPedia abstract) are the paper's text
regime. They are built by the same builder (``--long``) and committed in the repository's
``benchmarks/data/``, not shipped in the package; :func:`read_text_set` reads them.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "DEBIAN_LONG_SETS",
    "DEBIAN_SETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "TextSet",
    "load_debian",
    "load_fashion_mnist",
    "read_text_set",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
DEBIAN_FILE = DATA_DIR / "debian_sections.jsonl.gz"

# Topic-like sections with enough texts; language-ecosystem sections (python, perl, libs, doc,
# ...) describe packaging rather than topic and are left out.
DEBIAN_SETS: dict[str, tuple[str, ...]] = {
    "debian14": (
        "admin",
        "database",
        "editors",
        "games",
        "graphics",
        "mail",
        "math",
        "net",
        "science",
        "sound",
        "text",
        "utils",
        "web",
        "x11",
    ),
    "debian4": ("games", "net", "science", "sound"),
}

# Chosen from how learnable the labels are, before any decomposition (issue 36): today's 14
# sections overlap by nature (utils, admin, net and x11 describe the same kind of package), so
# the long-description 14-way set takes the topical sections instead.
DEBIAN_LONG_SETS: dict[str, tuple[str, ...]] = {
    "topics14-long": (
        "database",
        "editors",
        "electronics",
        "fonts",
        "games",
        "graphics",
        "hamradio",
        "localization",
        "mail",
        "math",
        "science",
        "sound",
        "video",
        "web",
    ),
    "debian4-long": DEBIAN_SETS["debian4"],
}


@dataclass(frozen=True)
class TextSet:
    """Texts with integer labels; ``classes[label]`` is the section name."""

    texts: list[str]
    labels: list[int]
    classes: tuple[str, ...]


def load_debian(
    name: Literal["debian14", "debian4"] = "debian4",
    split: Literal["train", "test", "all"] = "train",
) -> TextSet:
    """The committed Debian topic set ``name``, one split of it."""
    if name not in DEBIAN_SETS:
        raise ValueError(f"name: expected one of {sorted(DEBIAN_SETS)}, got {name!r}")
    return read_text_set(DEBIAN_FILE, DEBIAN_SETS[name], split)


def read_text_set(
    path: str | Path,
    classes: tuple[str, ...],
    split: Literal["train", "test", "all"] = "train",
) -> TextSet:
    """The records of a gzipped JSONL text set (``section``, ``text``, ``split`` per line) whose
    section is one of ``classes``, labelled by their place in it."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split: expected 'train', 'test' or 'all', got {split!r}")
    index = {section: i for i, section in enumerate(classes)}
    texts: list[str] = []
    labels: list[int] = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["section"] in index and split in ("all", record["split"]):
                texts.append(record["text"])
                labels.append(index[record["section"]])
    return TextSet(texts, labels, classes)


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path, dims: int) -> np.ndarray:
    """One gzipped IDX file of unsigned bytes (the MNIST format: magic, sizes, data)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + dims:
        raise ValueError(f"{path}: not an IDX file of {dims}-d unsigned bytes (magic {magic:#x})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def load_fashion_mnist(
    split: Literal["train", "test"] = "train",
    root: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images ``[n, 28, 28]`` (uint8) and labels ``[n]`` (int64) of ``split``.

    Reads the gzipped IDX files of Debian's ``dataset-fashion-mnist`` package where they lie
    (``root``, by default ``/usr/share/datasets/fashion-mnist``). Read here rather than with
    ``torchvision.datasets.FashionMNIST``, which wants them gunzipped into a writable folder of
    its own layout: this reads the read-only package files in place, 30 MB, in about a second.
    """
    if split not in _FASHION_FILES:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    images_file, labels_file = (folder / name for name in _FASHION_FILES[split])
    missing = [str(p) for p in (images_file, labels_file) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found ({', '.join(missing)}); install it with "
            "`apt-get install -y dataset-fashion-mnist` (Debian's package, 30 MB) "
            "or pass root= to a folder holding the four *-ubyte.gz files"
        )
    images = _read_idx(images_file, 3)
    labels = _read_idx(labels_file, 1).astype(np.int64)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{folder}: {images.shape[0]} images of {images.shape[1:]} but {labels.shape[0]} labels"
        )
    return images, labels
