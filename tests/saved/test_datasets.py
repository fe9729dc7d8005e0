"""saved/datasets.py: the committed Debian file and the Fashion-MNIST reader (the builder's rules
are tested beside it, in tests/benchmarks/test_build_debian.py)."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from saved.datasets import DEBIAN_SETS, FASHION_MNIST_DIR, load_debian, load_fashion_mnist


@pytest.mark.parametrize("name", sorted(DEBIAN_SETS))
def test_committed_debian_sets_are_clean(name: str) -> None:
    train, test = load_debian(name, "train"), load_debian(name, "test")  # type: ignore[arg-type]
    classes = DEBIAN_SETS[name]
    assert train.classes == test.classes == classes
    assert set(train.labels) == set(test.labels) == set(range(len(classes)))
    assert not set(train.texts) & set(test.texts)  # no text in both splits
    assert len(set(train.texts)) == len(train.texts)
    share = len(test.texts) / (len(test.texts) + len(train.texts))
    assert 0.19 < share < 0.21
    everything = load_debian(name, "all")  # type: ignore[arg-type]
    assert len(everything.texts) == len(train.texts) + len(test.texts)


def test_debian4_is_a_subset_of_debian14() -> None:
    four, fourteen = load_debian("debian4", "all"), load_debian("debian14", "all")
    by_text = dict(zip(fourteen.texts, fourteen.labels, strict=True))
    for text, label in zip(four.texts, four.labels, strict=True):
        assert fourteen.classes[by_text[text]] == four.classes[label]


@pytest.mark.parametrize(
    ("name", "split", "message"),
    [("debian99", "train", "name: expected"), ("debian4", "dev", "split: expected")],
)
def test_load_debian_rejects_bad_arguments(name: str, split: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_debian(name, split)  # type: ignore[arg-type]


needs_fashion = pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir() and not os.environ.get("CI"),
    reason="Debian's dataset-fashion-mnist is not installed (make test installs it in CI)",
)


@needs_fashion
@pytest.mark.parametrize("split", ["train", "test"])
def test_fashion_mnist_matches_torchvision_reader(split: str, tmp_path: Path) -> None:
    """Two independent readers of the same files agree: ours on the .gz files in place,
    torchvision's on gunzipped copies in its own layout."""
    from torchvision.datasets import FashionMNIST

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for source in FASHION_MNIST_DIR.glob("*-ubyte.gz"):
        with gzip.open(source, "rb") as inp, open(raw / source.name[:-3], "wb") as out:
            shutil.copyfileobj(inp, out)
    reference = FashionMNIST(str(tmp_path), train=split == "train", download=False)
    images, labels = load_fashion_mnist(split)  # type: ignore[arg-type]
    assert images.shape == (60_000 if split == "train" else 10_000, 28, 28)
    assert np.array_equal(images, reference.data.numpy())
    assert np.array_equal(labels, reference.targets.numpy())
    assert np.bincount(labels).tolist() == [len(labels) // 10] * 10


def test_fashion_mnist_missing_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", root=tmp_path)  # type: ignore[arg-type]


def _write_idx(path: Path, magic: int, shape: tuple[int, ...], payload: bytes) -> None:
    header = magic.to_bytes(4, "big") + b"".join(s.to_bytes(4, "big") for s in shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + payload)


def test_fashion_mnist_reader_on_hand_made_files(tmp_path: Path) -> None:
    pixels = bytes(i % 256 for i in range(2 * 28 * 28))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (2, 28, 28), pixels)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (2,), bytes([7, 3]))
    images, labels = load_fashion_mnist("test", root=tmp_path)
    assert images[1, 0, 0] == (28 * 28) % 256 and images[0, 1, 2] == 30
    assert labels.tolist() == [7, 3] and labels.dtype == np.int64
    # a truncated file and a file of the wrong kind are named, not misread
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (2, 28, 28), pixels[:-5])
    with pytest.raises(ValueError, match="expected 1568 values, found 1563"):
        load_fashion_mnist("test", root=tmp_path)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x801, (2, 28, 28), pixels)
    with pytest.raises(ValueError, match="not an IDX file of 3-d"):
        load_fashion_mnist("test", root=tmp_path)
