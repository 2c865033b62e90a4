"""MNIST, CIFAR-10 and CIFAR-100 read through ``torchvision.datasets``, as uint8 image tensors.

The files are torchvision's on-disk layout under ``data_dir``:

- MNIST: ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (idx files);
- CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (pickles);
- CIFAR-100: ``cifar-100-python/{train,test,meta}`` (pickles).

Parsing is torchvision's own code. Its CIFAR classes also check the md5 sum of every file,
which would refuse a local copy in the right format but with other pixels (the random files
of :mod:`loaders.format_writers` that tests and GPU benchmarks use). Local reading therefore
goes through subclasses whose check is "every expected file exists", while ``download=True``
still goes through torchvision's real classes: the archive's and every extracted file's md5
sums are verified there.

The official train/test splits are used as they are; images are neither resized nor
normalised here (``common.preprocess`` does that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torchvision import datasets as tvd

from .errors import DatasetNotFoundError, require_data_dir
from .registry import IMAGE_VALID_RANGE, LabelledSplits

__all__ = ["TORCHVISION_SETS", "load_torchvision_set", "missing_files"]


class _PresenceCheckedCIFAR10(tvd.CIFAR10):
    """CIFAR-10 reader that accepts any file present under the expected name.

    torchvision's ``check_integrity(path, None)`` is a plain existence test, so clearing the
    md5 entries turns every check (batches and ``batches.meta``) into one; the parsing code
    stays torchvision's.
    """

    train_list: ClassVar[list[list[Any]]] = [[name, None] for name, _ in tvd.CIFAR10.train_list]
    test_list: ClassVar[list[list[Any]]] = [[name, None] for name, _ in tvd.CIFAR10.test_list]
    meta: ClassVar[dict[str, Any]] = {**tvd.CIFAR10.meta, "md5": None}


class _PresenceCheckedCIFAR100(tvd.CIFAR100):
    """CIFAR-100 reader that accepts any file present under the expected name (see CIFAR-10)."""

    train_list: ClassVar[list[list[Any]]] = [[name, None] for name, _ in tvd.CIFAR100.train_list]
    test_list: ClassVar[list[list[Any]]] = [[name, None] for name, _ in tvd.CIFAR100.test_list]
    meta: ClassVar[dict[str, Any]] = {**tvd.CIFAR100.meta, "md5": None}


@dataclass(frozen=True)
class _Spec:
    """Where one torchvision data set lives and which classes read and fetch it."""

    folder: str  # relative to data_dir
    files: tuple[str, ...]  # every file the reader needs, relative to folder
    num_classes: int
    official: type[tvd.VisionDataset]  # downloads and verifies md5 sums
    local: type[tvd.VisionDataset]  # reads local files, checks presence only

    def how_to_get(self) -> str:
        cls = self.official.__name__
        top = self.folder.split("/")[0]
        return (
            f'Set the run-config key `data-dir = "/abs/path"` to a folder that holds `{top}/` in '
            f'torchvision\'s layout (what `torchvision.datasets.{cls}(root="/abs/path", '
            "download=True)` leaves there), or set `download = true` together with `data-dir` on "
            "a machine with internet access to fetch it there."
        )


def _cifar_spec(official: type[tvd.CIFAR10], local: type[tvd.CIFAR10], num_classes: int) -> _Spec:
    names = [name for name, _ in official.train_list + official.test_list]
    return _Spec(
        folder=official.base_folder,
        files=(*names, official.meta["filename"]),
        num_classes=num_classes,
        official=official,
        local=local,
    )


TORCHVISION_SETS: dict[str, _Spec] = {
    # MNIST's reader never checks md5 sums of the extracted files (only downloads are checked),
    # so torchvision's own class reads local copies as they are.
    "mnist": _Spec(
        folder="MNIST/raw",
        files=tuple(Path(url).stem for url, _ in tvd.MNIST.resources),  # names without .gz
        num_classes=10,
        official=tvd.MNIST,
        local=tvd.MNIST,
    ),
    "cifar10": _cifar_spec(tvd.CIFAR10, _PresenceCheckedCIFAR10, 10),
    "cifar100": _cifar_spec(tvd.CIFAR100, _PresenceCheckedCIFAR100, 100),
}


def missing_files(name: str, *, root: Path) -> list[str]:
    """List the files of data set ``name`` that are absent under ``root``.

    Parameters
    ----------
    name : {"mnist", "cifar10", "cifar100"}
    root : Path
        The data directory (the folder that holds ``MNIST/`` or ``cifar-*``).

    Returns
    -------
    list of str
        Missing file names, relative to the data set's folder; empty when all are there.
    """
    spec = TORCHVISION_SETS[name]
    folder = root / spec.folder
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if missing and name == "mnist":
        # torchvision still reads the tensors that versions before 0.9 cached in MNIST/processed.
        processed = root / "MNIST" / "processed"
        legacy = (tvd.MNIST.training_file, tvd.MNIST.test_file)
        if all((processed / f).is_file() for f in legacy):
            return []
    return missing


def _to_images(data: np.ndarray | torch.Tensor, *, nhwc: bool) -> torch.Tensor:
    """Turn a reader's ``.data`` into a contiguous uint8 (N, C, H, W) tensor."""
    x = torch.as_tensor(data)
    x = x.permute(0, 3, 1, 2) if nhwc else x.unsqueeze(1)  # CIFAR is NHWC; MNIST is (N, H, W)
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 pixels, got {x.dtype}")
    return x.contiguous()


def _labels(targets: list[int] | torch.Tensor, *, num_classes: int, source: Path) -> torch.Tensor:
    y = torch.as_tensor(targets, dtype=torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels in {source} lie in [{int(y.min())}, {int(y.max())}], outside "
            f"[0, {num_classes - 1}]: the files are not this data set"
        )
    return y


def load_torchvision_set(name: str, *, data_dir: str, download: bool = False) -> LabelledSplits:
    """Load MNIST, CIFAR-10 or CIFAR-100 from torchvision's on-disk layout.

    Parameters
    ----------
    name : {"mnist", "cifar10", "cifar100"}
    data_dir : str
        Folder holding ``MNIST/``, ``cifar-10-batches-py/`` or ``cifar-100-python/``. Must not
        be empty: the current directory is never searched.
    download : bool, default False
        When files are missing, fetch them with torchvision (md5-verified) into ``data_dir``.
        Local files are always looked for first.

    Returns
    -------
    LabelledSplits
        ``kind == "image"``; inputs uint8 (N, C, H, W) with C = 1 for MNIST and 3 for CIFAR,
        labels int64, official train/test splits.

    Raises
    ------
    DatasetNotFoundError
        If ``data_dir`` is empty, files are missing and ``download`` is off, or the download
        fails (no internet, checksum mismatch).
    ValueError
        If the files parse but hold labels outside the data set's classes.
    """
    if name not in TORCHVISION_SETS:
        raise ValueError(f"not a torchvision data set: {name!r}; known: {sorted(TORCHVISION_SETS)}")
    spec = TORCHVISION_SETS[name]
    root = require_data_dir(data_dir, dataset=name, how_to_get=spec.how_to_get())
    folder = root / spec.folder

    missing = missing_files(name, root=root)
    if missing and download:
        try:
            # The test split is the cheapest to instantiate; constructing it runs torchvision's
            # whole download path: archive md5, extraction, and the md5 of every extracted file.
            spec.official(root=str(root), train=False, download=True)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; md5 failures are RuntimeError
            raise DatasetNotFoundError.missing(
                dataset=name,
                looked_at=[folder],
                how_to_get=spec.how_to_get(),
                reason=f"Downloading it into {root} failed ({type(exc).__name__}: {exc})",
            ) from exc
        missing = missing_files(name, root=root)
    if missing:
        raise DatasetNotFoundError.missing(
            dataset=name,
            looked_at=[folder],
            how_to_get=spec.how_to_get(),
            reason=f"Missing there: {', '.join(missing)}",
        )

    nhwc = name != "mnist"
    splits = {}
    for part, train in (("train", True), ("test", False)):
        ds = spec.local(root=str(root), train=train, download=False)
        splits[f"{part}_x"] = _to_images(ds.data, nhwc=nhwc)
        splits[f"{part}_y"] = _labels(ds.targets, num_classes=spec.num_classes, source=folder)
    return LabelledSplits(
        **splits,
        num_classes=spec.num_classes,
        valid_range=IMAGE_VALID_RANGE,
        name=name,
        kind="image",
    )
