"""Tiny-ImageNet (200 classes, 64x64 RGB JPEGs) from the folder layout of its official zip.

Layout of ``tiny-imagenet-200/`` (from http://cs231n.stanford.edu/tiny-imagenet-200.zip)::

    wnids.txt                       200 WordNet ids, one a line; class index = line number
    train/<wnid>/images/*.JPEG      500 training images per class
    val/images/*.JPEG               10,000 validation images
    val/val_annotations.txt         filename <TAB> wnid <TAB> x0 <TAB> y0 <TAB> x1 <TAB> y1
    test/images/*.JPEG              10,000 test images, unlabelled

The official ``test/`` folder ships without labels, so, as is customary, the labelled ``val/``
split serves as the test set here: train = ``train/`` (100,000 images), test = ``val/``
(10,000 images). There is no automatic download.

Decoding 110,000 JPEGs takes a while, so it runs on a thread pool (Pillow's decoder releases
the GIL) and logs its progress about every 10%.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetNotFoundError, require_data_dir
from .registry import IMAGE_VALID_RANGE, LabelledSplits

__all__ = [
    "FOLDER",
    "IMAGE_SIZE",
    "URL",
    "decode_images",
    "find_root",
    "list_train",
    "list_val",
    "load_tiny_imagenet",
    "read_wnids",
]

log = logging.getLogger("flwr.mixupfl.loaders")  # child of flwr: shown in run logs

NAME = "tiny-imagenet"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"
IMAGE_SIZE = 64
OFFICIAL_NUM_CLASSES = 200
_JPEG_SUFFIXES = (".jpeg", ".jpg")
_MAX_CHUNK = 256  # images per pool task: large enough to amortise scheduling


def _how_to_get() -> str:
    return (
        f"Download {URL} and unzip it into a folder, e.g. `unzip tiny-imagenet-200.zip -d "
        "/abs/path` (which creates /abs/path/tiny-imagenet-200/wnids.txt), then set the run-config "
        'key `data-dir = "/abs/path"` (pointing at the tiny-imagenet-200 folder itself works '
        "too). `download = true` does not apply: Tiny-ImageNet has no automatic download."
    )


def find_root(data_dir: str) -> Path:
    """Locate the ``tiny-imagenet-200`` folder.

    Parameters
    ----------
    data_dir : str
        Either the folder that contains ``tiny-imagenet-200/`` or that folder itself.

    Returns
    -------
    Path
        The folder holding ``wnids.txt``.

    Raises
    ------
    DatasetNotFoundError
        If ``data_dir`` is empty or neither candidate holds ``wnids.txt``.
    """
    base = require_data_dir(data_dir, dataset=NAME, how_to_get=_how_to_get())
    candidates = [base / FOLDER, base]
    for root in candidates:
        if (root / "wnids.txt").is_file():
            return root
    raise DatasetNotFoundError.missing(
        dataset=NAME,
        looked_at=[root / "wnids.txt" for root in candidates],
        how_to_get=_how_to_get(),
        reason="Neither file exists",
    )


def read_wnids(root: Path) -> list[str]:
    """Read ``wnids.txt``: the class index of a wnid is its line number (from 0).

    Parameters
    ----------
    root : Path
        The ``tiny-imagenet-200`` folder.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        If the file is empty or lists a wnid twice.
    """
    path = root / "wnids.txt"
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wnids:
        raise ValueError(f"{path} lists no wnid")
    seen: set[str] = set()
    for i, wnid in enumerate(wnids):
        if wnid in seen:
            raise ValueError(f"{path} lists wnid {wnid!r} twice (again on line {i + 1})")
        seen.add(wnid)
    if len(wnids) != OFFICIAL_NUM_CLASSES:
        # A class subset is a legitimate use; the official set has 200, so say so in the log.
        log.warning("%s lists %d classes, the official set has %d", path, len(wnids), OFFICIAL_NUM_CLASSES)
    return wnids


def _jpegs(folder: Path) -> list[Path]:
    # Sorted by name: directory listing order depends on the file system.
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in _JPEG_SUFFIXES and p.is_file()),
        key=lambda p: p.name,
    )


def list_train(root: Path, wnids: Sequence[str]) -> tuple[list[Path], np.ndarray]:
    """List training images in class order, file names sorted within a class.

    Parameters
    ----------
    root : Path
        The ``tiny-imagenet-200`` folder.
    wnids : sequence of str
        Class order, from :func:`read_wnids`.

    Returns
    -------
    paths : list of Path
    labels : numpy.ndarray
        int64 class index of each path.

    Raises
    ------
    ValueError
        If a class's ``train/<wnid>/images`` folder is missing or holds no JPEG.
    """
    paths: list[Path] = []
    labels: list[np.ndarray] = []
    for idx, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise ValueError(
                f"class folder {folder} is missing (wnid {wnid!r}, line {idx + 1} of "
                f"{root / 'wnids.txt'}): the copy of Tiny-ImageNet is incomplete"
            )
        files = _jpegs(folder)
        if not files:
            raise ValueError(f"class folder {folder} holds no .JPEG file (wnid {wnid!r})")
        paths.extend(files)
        labels.append(np.full(len(files), idx, dtype=np.int64))
    return paths, np.concatenate(labels)


def list_val(root: Path, wnids: Sequence[str]) -> tuple[list[Path], np.ndarray]:
    """List validation images from ``val/val_annotations.txt``, sorted by file name.

    Parameters
    ----------
    root : Path
        The ``tiny-imagenet-200`` folder.
    wnids : sequence of str
        Class order, from :func:`read_wnids`.

    Returns
    -------
    paths : list of Path
    labels : numpy.ndarray
        int64 class index of each path.

    Raises
    ------
    ValueError
        If the annotation file is missing or malformed (not 6 tab-separated fields, box not
        integers, a file named twice), names a wnid absent from ``wnids.txt``, or names an image
        that is not in ``val/images``.
    """
    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise ValueError(f"{ann} is missing: the copy of Tiny-ImageNet is incomplete")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    by_name: dict[str, int] = {}
    for lineno, line in enumerate(ann.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 6:
            raise ValueError(
                f"{ann}, line {lineno}: expected 6 tab-separated fields "
                f"(filename, wnid, x0, y0, x1, y1), got {len(fields)}: {line!r}"
            )
        name, wnid, *box = fields
        try:
            [int(v) for v in box]
        except ValueError:
            raise ValueError(f"{ann}, line {lineno}: box {box} is not four integers") from None
        if wnid not in index:
            raise ValueError(f"{ann}, line {lineno}: wnid {wnid!r} of {name} is not in {root / 'wnids.txt'}")
        if name in by_name:
            raise ValueError(f"{ann}, line {lineno}: {name} is annotated twice")
        by_name[name] = index[wnid]
    if not by_name:
        raise ValueError(f"{ann} annotates no image")
    images = root / "val" / "images"
    names = sorted(by_name)
    paths = [images / n for n in names]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise ValueError(f"{len(absent)} image(s) named in {ann} are not in {images}, e.g. {absent[0]}")
    return paths, np.array([by_name[n] for n in names], dtype=np.int64)


def _decode_chunk(paths: Sequence[Path], out: np.ndarray, start: int) -> int:
    """Decode ``paths`` into ``out[start:start + len(paths)]`` as (3, 64, 64) uint8."""
    from PIL import Image, UnidentifiedImageError

    for offset, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                    raise ValueError(
                        f"{path} is {im.size[0]}x{im.size[1]} pixels; Tiny-ImageNet images are "
                        f"{IMAGE_SIZE}x{IMAGE_SIZE}"
                    )
                # Some official images are grayscale (mode "L"); every image becomes 3 channels.
                rgb = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{path} could not be decoded as an image: {exc}") from exc
        out[start + offset] = rgb.transpose(2, 0, 1)  # HWC -> CHW, copied into the big buffer
    return len(paths)


def decode_images(paths: Sequence[Path], *, desc: str, num_workers: int | None = None) -> np.ndarray:
    """Decode 64x64 JPEGs into one uint8 array of shape (N, 3, 64, 64), in ``paths`` order.

    Parameters
    ----------
    paths : sequence of Path
    desc : str
        What is being decoded, for the progress log lines.
    num_workers : int, optional
        Threads; default ``min(32, cpu_count + 4)`` (the thread pool's own default).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    ValueError
        Naming the first file that is not a decodable 64x64 image.
    """
    n = len(paths)
    # Written in place by the workers: no per-image arrays to gather and stack afterwards.
    out = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    if n == 0:
        return out
    workers = num_workers or min(32, (os.cpu_count() or 1) + 4)
    log.info("%s: decoding %d JPEGs on %d threads", desc, n, workers)
    # At least ~50 tasks, so the ~10% progress lines are not coarser than the tasks.
    chunk = max(1, min(_MAX_CHUNK, math.ceil(n / 50)))
    step = max(1, math.ceil(n / 10))
    next_report = step
    done = 0
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tiny-imagenet")
    try:
        futures = [pool.submit(_decode_chunk, paths[i : i + chunk], out, i) for i in range(0, n, chunk)]
        for fut in as_completed(futures):
            done += fut.result()
            if done >= next_report or done == n:
                log.info("%s: %d/%d images decoded (%d%%)", desc, done, n, 100 * done // n)
                next_report = (done // step + 1) * step
    finally:
        # On an error, drop the chunks not started instead of decoding the rest for nothing.
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def load_tiny_imagenet(
    *, data_dir: str, download: bool = False, num_workers: int | None = None
) -> LabelledSplits:
    """Load Tiny-ImageNet: train = ``train/``, test = the labelled ``val/`` split.

    Parameters
    ----------
    data_dir : str
        Folder containing ``tiny-imagenet-200/``, or that folder itself. Must not be empty.
    download : bool, default False
        Accepted for a uniform interface; Tiny-ImageNet is never downloaded (a missing copy
        raises, with the zip's URL, whatever its value).
    num_workers : int, optional
        Decoding threads, see :func:`decode_images`.

    Returns
    -------
    LabelledSplits
        ``kind == "image"``; inputs uint8 (N, 3, 64, 64), labels int64 indexing the lines of
        ``wnids.txt``; ``num_classes`` = number of wnids (200 for the official set).

    Raises
    ------
    DatasetNotFoundError
        If no ``wnids.txt`` is found (or ``data_dir`` is empty).
    ValueError
        If the copy is incomplete or malformed (see :func:`list_train`, :func:`list_val`,
        :func:`decode_images`); the message names the file.
    """
    del download  # no download source with a checksum to trust; see _how_to_get
    root = find_root(data_dir)
    wnids = read_wnids(root)
    train_paths, train_y = list_train(root, wnids)
    val_paths, val_y = list_val(root, wnids)
    train_x = decode_images(train_paths, desc="tiny-imagenet train", num_workers=num_workers)
    test_x = decode_images(val_paths, desc="tiny-imagenet val", num_workers=num_workers)
    return LabelledSplits(
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(val_y),
        num_classes=len(wnids),
        valid_range=IMAGE_VALID_RANGE,
        name=NAME,
        kind="image",
    )
