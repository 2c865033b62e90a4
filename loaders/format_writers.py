"""Write files in the real on-disk formats of MNIST, CIFAR-10/100 and Tiny-ImageNet.

The pixels are **random (seeded), never real data**: these files exist so that tests, and GPU
benchmarks on machines without internet, can exercise the real loading code on inputs of the
real format and size (e.g. CIFAR-10's 50,000 + 10,000 images). Labels cover every class
(round-robin, then shuffled), so class counts are known exactly.

Each writer returns a :class:`WrittenSplits` holding what it wrote in the layout
``loaders.load_dataset`` returns (uint8 (N, C, H, W) pixels, int64 labels, in loading order),
so a test can compare the loaded tensors against it: bit for bit for the idx and pickle
formats, approximately for JPEG (lossy).
"""

from __future__ import annotations

import os
import pickle
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

__all__ = [
    "CIFAR10_LABEL_NAMES",
    "WrittenSplits",
    "write_cifar10",
    "write_cifar100",
    "write_mnist",
    "write_tiny_imagenet",
]

# The real CIFAR-10 class names (metadata only; the pixels written are random).
CIFAR10_LABEL_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclass(frozen=True)
class WrittenSplits:
    """What a writer put on disk, in the order and layout the loader returns it.

    Attributes
    ----------
    data_dir : Path
        The folder to pass as ``data_dir`` to ``load_dataset``.
    train_x, test_x : numpy.ndarray
        uint8 (N, C, H, W). For JPEG these are the pixels *before* encoding; decoded images
        differ slightly (lossy compression).
    train_y, test_y : numpy.ndarray
        int64 (N,) class indices.
    class_names : tuple of str
        Names in class-index order (CIFAR label names, Tiny-ImageNet wnids).
    """

    data_dir: Path
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...]


def _balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    # Round-robin gives every class floor(n / k) or ceil(n / k) samples; shuffling removes the
    # period so that no loader can pass by reading labels positionally.
    y = np.arange(n, dtype=np.int64) % num_classes
    rng.shuffle(y)
    return y


def _random_pixels(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _class_pattern_pixels(
    rng: np.random.Generator, labels: np.ndarray, templates: np.ndarray, *, noise: float = 80.0
) -> np.ndarray:
    """``template[label]`` shifted by a random offset of up to 4 pixels, plus Gaussian pixel
    noise, rounded to uint8: generated images whose class can be learnt (unlike uniform
    noise), so that accuracy and its spread over partitions mean something in a benchmark."""
    n = labels.shape[0]
    out = np.empty((n, *templates.shape[1:]), dtype=np.uint8)
    for start in range(0, n, 4096):  # bounded float temporaries
        idx = slice(start, min(n, start + 4096))
        base = templates[labels[idx]]
        shifts = rng.integers(-4, 5, size=(base.shape[0], 2))
        for k, (dy, dx) in enumerate(shifts):
            base[k] = np.roll(base[k], (int(dy), int(dx)), axis=(1, 2))
        noisy = base + rng.normal(0.0, noise, size=base.shape)
        out[idx] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


def _class_templates(rng: np.random.Generator, num_classes: int, channels: int, side: int) -> np.ndarray:
    """One smooth colour pattern per class: a sum of a few low-frequency sinusoids per channel."""
    yy, xx = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    templates = np.empty((num_classes, channels, side, side))
    for c in range(num_classes):
        for ch in range(channels):
            field = np.zeros((side, side))
            for _ in range(3):
                fy, fx = rng.uniform(0.5, 3.0, size=2) * 2 * np.pi / side
                phase = rng.uniform(0, 2 * np.pi)
                field += np.sin(fy * yy + fx * xx + phase)
            templates[c, ch] = 128 + 18 * field
    return templates


# --------------------------------------------------------------------------------------- MNIST


def _write_idx(path: Path, array: np.ndarray) -> None:
    # idx format: magic = 0x00 0x00 <type 0x08 = ubyte> <ndim>, then each dim as big-endian
    # uint32, then the data in row-major order.
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: str | os.PathLike[str], *, n_train: int, n_test: int, seed: int = 0) -> WrittenSplits:
    """Write MNIST-format idx files with random pixels under ``<root>/MNIST/raw/``.

    Random pixels for tests and benchmarks, never real data. Writes the four uncompressed
    files torchvision reads: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``.

    Parameters
    ----------
    root : path-like
        The future ``data_dir``; created if needed.
    n_train, n_test : int
        Images per split (the real set: 60,000 and 10,000).
    seed : int, default 0

    Returns
    -------
    WrittenSplits
        Pixels (N, 1, 28, 28), labels 0..9.
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = _random_pixels(rng, (n, 28, 28))
        y = _balanced_labels(rng, n, 10)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8))
        out[f"{split}_x"], out[f"{split}_y"] = x[:, None], y
    return WrittenSplits(data_dir=Path(root), class_names=tuple(str(d) for d in range(10)), **out)


# --------------------------------------------------------------------------------------- CIFAR


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table is open
    """Pickle as Python 2's cPickle wrote the CIFAR files.

    The real files are Python 2 pickles whose keys and strings are Python 2 ``str``: loaded
    with ``encoding="latin1"`` (torchvision) they give ``"data"``, with ``encoding="bytes"``
    (the CIFAR web page's snippet) ``b"data"``. Python 3 pickles ``bytes`` as an object that
    loads as ``bytes`` whatever the encoding, so here ``bytes`` are written with Python 2's
    ``str`` opcodes instead, and numpy's reconstructor under its numpy 1.x module name.
    """

    dispatch: ClassVar[dict[type, Any]] = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes((n,)) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or ""
        if module.startswith("numpy._core"):
            # numpy 2 moved numpy.core to numpy._core; the old name loads under both.
            qualname = name or obj.__qualname__  # type: ignore[attr-defined]
            legacy = "numpy.core" + module[len("numpy._core") :]
            self.write(pickle.GLOBAL + f"{legacy}\n{qualname}\n".encode("ascii"))
            self.memoize(obj)
            return
        super().save_global(obj, name)  # type: ignore[misc]


def _dump_py2(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        _Python2Pickler(f, protocol=2).dump(obj)


def _cifar_rows(x: np.ndarray) -> np.ndarray:
    # The files store each image as one row of 3072 bytes: 1024 red, 1024 green, 1024 blue,
    # each plane row-major, i.e. exactly (N, 3, 32, 32) flattened.
    return np.ascontiguousarray(x.reshape(x.shape[0], 3 * 32 * 32))


def _filenames(prefix: str, start: int, n: int) -> list[bytes]:
    return [f"{prefix}_s_{i:06d}.png".encode() for i in range(start, start + n)]


def write_cifar10(
    root: str | os.PathLike[str],
    *,
    n_train: int,
    n_test: int,
    seed: int = 0,
    pixels: Literal["random", "class-patterns"] = "random",
) -> WrittenSplits:
    """Write CIFAR-10's python-pickle batches with generated pixels under ``<root>/cifar-10-batches-py/``.

    Generated pixels for tests and benchmarks, never real data: ``pixels = "random"`` draws
    them uniformly (accuracy stays at chance); ``"class-patterns"`` draws each image as its
    class's smooth colour template, shifted by up to 4 pixels, plus Gaussian noise (a
    learnable task of CIFAR-10's shape, for sweeps whose accuracies should differ from
    chance; still not CIFAR-10, and not comparable to the paper's numbers). The layout and pickles are the
    real ones: ``data_batch_1`` .. ``data_batch_5`` (the training images split as evenly as
    possible, in order), ``test_batch``, and ``batches.meta``. Each batch is a dict with keys
    ``batch_label``, ``labels`` (list of int), ``data`` ((n, 3072) uint8, each row the CHW
    image flattened) and ``filenames``; ``batches.meta`` holds ``label_names`` (the key
    torchvision reads), ``num_cases_per_batch`` and ``num_vis``. Vectorised: 60,000 images
    take about a second.

    Parameters
    ----------
    root : path-like
        The future ``data_dir``; created if needed.
    n_train, n_test : int
        Images per split (the real set: 50,000 and 10,000).
    seed : int, default 0
    pixels : {"random", "class-patterns"}, default "random"

    Returns
    -------
    WrittenSplits
        Pixels (N, 3, 32, 32), labels 0..9, training images in batch order.
    """
    if pixels not in ("random", "class-patterns"):
        raise ValueError(f"pixels must be 'random' or 'class-patterns', got {pixels!r}")
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    if pixels == "random":
        train_x = _random_pixels(rng, (n_train, 3, 32, 32))
        train_y = _balanced_labels(rng, n_train, 10)
        test_x = _random_pixels(rng, (n_test, 3, 32, 32))
        test_y = _balanced_labels(rng, n_test, 10)
    else:
        templates = _class_templates(rng, 10, 3, 32)
        train_y = _balanced_labels(rng, n_train, 10)
        test_y = _balanced_labels(rng, n_test, 10)
        train_x = _class_pattern_pixels(rng, train_y, templates)
        test_x = _class_pattern_pixels(rng, test_y, templates)

    bounds = np.linspace(0, n_train, 6).round().astype(int)  # 5 batches, sizes differ by <= 1
    for k in range(5):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        batch = {
            b"batch_label": f"training batch {k + 1} of 5".encode(),
            b"labels": train_y[lo:hi].tolist(),
            b"data": _cifar_rows(train_x[lo:hi]),
            b"filenames": _filenames("random", lo, hi - lo),
        }
        _dump_py2(batch, folder / f"data_batch_{k + 1}")
    _dump_py2(
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": test_y.tolist(),
            b"data": _cifar_rows(test_x),
            b"filenames": _filenames("random_test", 0, n_test),
        },
        folder / "test_batch",
    )
    _dump_py2(
        {
            b"num_cases_per_batch": int(bounds[1] - bounds[0]),
            b"label_names": [name.encode() for name in CIFAR10_LABEL_NAMES],
            b"num_vis": 3072,
        },
        folder / "batches.meta",
    )
    return WrittenSplits(Path(root), train_x, train_y, test_x, test_y, CIFAR10_LABEL_NAMES)


def write_cifar100(
    root: str | os.PathLike[str], *, n_train: int, n_test: int, seed: int = 0
) -> WrittenSplits:
    """Write CIFAR-100's python pickles with random pixels under ``<root>/cifar-100-python/``.

    Random pixels for tests and benchmarks, never real data. Files ``train``, ``test`` (dicts
    with ``filenames``, ``batch_label``, ``fine_labels``, ``coarse_labels``, ``data``) and
    ``meta`` (``fine_label_names``, the key torchvision reads, and ``coarse_label_names``).
    Class names are placeholders (``fine_000`` ..) and the coarse label of fine class ``c`` is
    ``c // 5``; the real names and superclass grouping differ, and no loader here uses them.

    Parameters
    ----------
    root : path-like
        The future ``data_dir``; created if needed.
    n_train, n_test : int
        Images per split (the real set: 50,000 and 10,000).
    seed : int, default 0

    Returns
    -------
    WrittenSplits
        Pixels (N, 3, 32, 32), fine labels 0..99.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fine_names = tuple(f"fine_{i:03d}" for i in range(100))
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = _random_pixels(rng, (n, 3, 32, 32))
        y = _balanced_labels(rng, n, 100)
        label = "training" if split == "train" else "testing"
        _dump_py2(
            {
                b"filenames": _filenames(f"random_{split}", 0, n),
                b"batch_label": f"{label} batch 1 of 1".encode(),
                b"fine_labels": y.tolist(),
                b"coarse_labels": (y // 5).tolist(),
                b"data": _cifar_rows(x),
            },
            folder / split,
        )
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    _dump_py2(
        {
            b"fine_label_names": [name.encode() for name in fine_names],
            b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
        },
        folder / "meta",
    )
    return WrittenSplits(data_dir=Path(root), class_names=fine_names, **out)


# ------------------------------------------------------------------------------- Tiny-ImageNet


def _save_jpeg(path: Path, x: np.ndarray, index: int, grayscale: bool) -> None:
    """Encode ``x[index]`` (3, 64, 64) to ``path``; a grayscale image is replaced in ``x`` by
    the pixels actually encoded."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(x[index].transpose(1, 2, 0)))
    if grayscale:
        # Like the few grayscale files of the real set. What is encoded is PIL's luma, which a
        # loader's convert("RGB") repeats over three channels; record that as the written image.
        im = im.convert("L")
        x[index] = np.asarray(im)[None]
    # Quality 95 without chroma subsampling keeps flat colours within a level or two.
    im.save(path, format="JPEG", quality=95, subsampling=0)


def _encode_all(paths: list[Path], x: np.ndarray, grayscale: list[bool], num_workers: int | None) -> None:
    workers = num_workers or min(32, (os.cpu_count() or 1) + 4)
    # Pillow's encoder releases the GIL, so threads overlap the per-image work; list() re-raises
    # the first error.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda i: _save_jpeg(paths[i], x, i, grayscale[i]), range(len(paths))))


def write_tiny_imagenet(
    root: str | os.PathLike[str],
    *,
    per_class_train: int,
    per_class_val: int,
    num_classes: int = 200,
    seed: int = 0,
    pattern: Literal["noise", "flat"] = "noise",
    grayscale_every: int = 0,
    num_workers: int | None = None,
) -> WrittenSplits:
    """Write Tiny-ImageNet's folder layout with random JPEGs under ``<root>/tiny-imagenet-200/``.

    Random pixels for tests and benchmarks, never real data. Writes ``wnids.txt`` (random,
    distinct, *unsorted* ``nXXXXXXXX`` ids, like the real file whose order is not
    alphabetical; class index = line number), ``words.txt``,
    ``train/<wnid>/images/<wnid>_<i>.JPEG`` with ``train/<wnid>/<wnid>_boxes.txt``,
    ``val/images/val_<i>.JPEG`` and ``val/val_annotations.txt`` (filename, wnid and a box,
    tab-separated). No ``test/`` folder: the loader does not read it.

    Parameters
    ----------
    root : path-like
        The future ``data_dir``; created if needed.
    per_class_train, per_class_val : int
        Images per class (the real set: 500 and 50).
    num_classes : int, default 200
    seed : int, default 0
    pattern : {"noise", "flat"}, default "noise"
        ``"noise"``: uniform random pixels. ``"flat"``: every image of class ``c`` is one
        random colour of that class, which JPEG reproduces almost exactly, so a test can check
        that decoded pixels and class mapping match.
    grayscale_every : int, default 0
        If positive, every ``grayscale_every``-th training image (in loading order) is written
        as a one-channel JPEG, as some real files are.
    num_workers : int, optional
        Encoding threads.

    Returns
    -------
    WrittenSplits
        Pre-compression pixels (N, 3, 64, 64) and labels in loading order: training images by
        class (wnids.txt order), file names sorted within a class; validation images sorted
        by file name. Holds all pixels in memory (1.2 GB for the full-size set).
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "tiny-imagenet-200"
    ids = rng.choice(10**8, size=num_classes, replace=False)  # distinct, in random order
    wnids = tuple(f"n{i:08d}" for i in ids)
    colours = rng.integers(0, 256, size=(num_classes, 3), dtype=np.uint8)

    def pixels(labels: np.ndarray) -> np.ndarray:
        if pattern == "flat":
            return np.broadcast_to(colours[labels][:, :, None, None], (labels.size, 3, 64, 64)).copy()
        if pattern == "noise":
            return _random_pixels(rng, (labels.size, 3, 64, 64))
        raise ValueError(f"pattern must be 'noise' or 'flat', got {pattern!r}")

    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (base / "words.txt").write_text("".join(f"{w}\trandom class {k}\n" for k, w in enumerate(wnids)))

    # Training images in the loader's order: class by class, file names sorted as strings
    # (so n.._10 comes before n.._2, as a sorted directory listing gives).
    train_paths: list[Path] = []
    train_y_list: list[int] = []
    for c, wnid in enumerate(wnids):
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True, exist_ok=True)
        names = sorted(f"{wnid}_{i}.JPEG" for i in range(per_class_train))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(
            "".join(f"{n}\t0\t0\t63\t63\n" for n in names)
        )
        train_paths.extend(images / n for n in names)
        train_y_list.extend([c] * per_class_train)
    train_y = np.array(train_y_list, dtype=np.int64)
    train_x = pixels(train_y)
    grey = [grayscale_every > 0 and (i + 1) % grayscale_every == 0 for i in range(train_y.size)]
    _encode_all(train_paths, train_x, grey, num_workers)

    n_val = per_class_val * num_classes
    val_images = base / "val" / "images"
    val_images.mkdir(parents=True, exist_ok=True)
    val_names = sorted(f"val_{i}.JPEG" for i in range(n_val))
    val_y = _balanced_labels(rng, n_val, num_classes)
    (base / "val" / "val_annotations.txt").write_text(
        "".join(f"{n}\t{wnids[c]}\t0\t0\t63\t63\n" for n, c in zip(val_names, val_y))
    )
    val_x = pixels(val_y)
    _encode_all([val_images / n for n in val_names], val_x, [False] * n_val, num_workers)
    return WrittenSplits(Path(root), train_x, train_y, val_x, val_y, wnids)
