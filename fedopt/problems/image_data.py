"""Offline image classification sets: keyed synthetic images and Debian's Fashion-MNIST.

``synthetic_images``: ten classes of ``size x size`` grey images made from a keyed
random generator (:func:`fedopt.rng.numpy_seed`; no global seed). Each class has a
template, the sum of three Gaussian blobs with random centres, widths and amplitudes
(keyed by ``(seed, "synthetic_images", class)``); a sample is its class's template
shifted by up to one pixel in each direction (cyclically), plus Gaussian pixel noise of
standard deviation ``noise``, clipped to ``[0, 1]``. Training and test samples come
from separate keys, so the test set never overlaps the training draws. Small and
fast: the default 8 x 8 images have the digits' 64 features, so every digits model runs
on them.

``load_fashion_mnist``: Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; 60,000 training
and 10,000 test images, 28 x 28, ten classes, 6,000 training images per class) read from
the files the Debian package ``dataset-fashion-mnist`` installs in
``/usr/share/datasets/fashion-mnist``: ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz`` (uncompressed copies without ``.gz`` are read too). The
files are in the IDX format of LeCun's MNIST: a big-endian header ``0x00 0x00 type
ndim``, ``ndim`` big-endian int32 sizes, then the values (type ``0x08``: unsigned
bytes). Pixels are divided by 255. Whether the files exist is checked when a problem
asks for them (:func:`require_fashion_mnist`): absent, the error names the package.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedopt import rng
from fedopt.errors import ConfigError

NUM_CLASSES = 10
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_TYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# ------------------------------------------------------------------------- IDX files


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzip-compressed when its name ends in ``.gz``).

    Raises
    ------
    ValueError
        For a file that is not IDX (bad magic number, unknown type code, or a size that
        does not match its header).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">i4"))
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: the header announces {shape} values of {dtype} but the file holds "
            f"{len(raw) - header} bytes after it"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an unsigned-byte array as an IDX file (gzip when ``path`` ends in ``.gz``)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + np.asarray(a.shape, dtype=">i4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(head + a.tobytes())


# ---------------------------------------------------------------------- Fashion-MNIST


def fashion_mnist_paths(root: str | Path = FASHION_DIR) -> dict[str, Path] | None:
    """The four files under ``root`` (``.gz`` or not), or None when one is missing."""
    out = {}
    for key, stem in FASHION_FILES.items():
        for name in (stem + ".gz", stem):
            p = Path(root) / name
            if p.is_file():
                out[key] = p
                break
        else:
            return None
    return out


def require_fashion_mnist(root: str | Path = FASHION_DIR) -> dict[str, Path]:
    """The files, or a ConfigError naming the Debian package that provides them."""
    paths = fashion_mnist_paths(root)
    if paths is None:
        missing = [s for s in FASHION_FILES.values() if not any(Path(root).glob(s + "*"))]
        raise ConfigError(
            f"problem.dataset: 'fashion_mnist' reads the Fashion-MNIST files from {root}, "
            f"but {', '.join(missing) or 'some of them'} are not there; install Debian's "
            f"package {FASHION_PACKAGE!r} (apt-get install {FASHION_PACKAGE}) or set "
            "problem.data_dir to a folder holding train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
            "t10k-labels-idx1-ubyte.gz"
        )
    return paths


@lru_cache(maxsize=2)
def load_fashion_mnist(
    root: str = FASHION_DIR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train [60000, 784], y_train, X_test [10000, 784], y_test)``, pixels in [0, 1]."""
    paths = require_fashion_mnist(root)
    out = []
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"])
        labels = read_idx(paths[f"{split}_labels"]).astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise ConfigError(
                f"problem.data_dir: {paths[f'{split}_images']} holds {images.shape} images "
                f"for {len(labels)} labels; expected [count, 28, 28] and as many labels"
            )
        X = (images.reshape(len(images), -1).astype(np.float32) / 255.0).astype(np.float32)
        X.flags.writeable = False
        labels.flags.writeable = False
        out += [X, labels]
    return out[0], out[1], out[2], out[3]


# ------------------------------------------------------------------- synthetic images


def _templates(seed: int, size: int) -> np.ndarray:
    """``[10, size, size]`` class templates (three Gaussian blobs each, max 1)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.zeros((NUM_CLASSES, size, size))
    for c in range(NUM_CLASSES):
        g = np.random.default_rng(rng.numpy_seed(seed, "synthetic_images", c))
        for _ in range(3):
            cy, cx = g.uniform(0, size - 1, size=2)
            width = g.uniform(0.1, 0.25) * size
            amp = g.uniform(0.5, 1.0)
            out[c] += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
        out[c] /= out[c].max()
    return out


def _draw(
    templates: np.ndarray, per_class: int, noise: float, g: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    size = templates.shape[-1]
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), per_class)
    shifts = g.integers(-1, 2, size=(len(labels), 2))
    images = np.empty((len(labels), size, size))
    for s, (c, (dy, dx)) in enumerate(zip(labels, shifts, strict=True)):
        images[s] = np.roll(templates[c], (int(dy), int(dx)), axis=(0, 1))
    images += noise * g.standard_normal(images.shape)
    X = np.clip(images, 0.0, 1.0).reshape(len(labels), -1).astype(np.float32)
    order = g.permutation(len(labels))
    return X[order], labels[order]


@lru_cache(maxsize=4)
def synthetic_images(
    seed: int, size: int = 8, per_class: int = 100, test_per_class: int = 30, noise: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train [10 per_class, size^2], y_train, X_test [10 test_per_class, size^2], y_test)``.

    Deterministic in its arguments (keyed by ``seed``; see the module doc).
    """
    templates = _templates(seed, size)
    train = np.random.default_rng(rng.numpy_seed(seed, "synthetic_images_train"))
    test = np.random.default_rng(rng.numpy_seed(seed, "synthetic_images_test"))
    Xtr, ytr = _draw(templates, per_class, noise, train)
    Xte, yte = _draw(templates, test_per_class, noise, test)
    for a in (Xtr, ytr, Xte, yte):
        a.flags.writeable = False
    return Xtr, ytr, Xte, yte
