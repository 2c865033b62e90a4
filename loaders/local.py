"""A party's own data, read from its own disk (a deployed SuperNode's ``data-path``).

Formats (``data-format``):

* ``image-folder``: one subfolder per class, named by the class, holding PNG/JPEG/BMP images;
* ``npz``: a NumPy archive with ``x`` (N, ...) and ``y`` (N,) (class indices or class names);
* ``torchvision``: a copy of a data set in torchvision's layout under the folder
  (``MNIST/raw``, ``cifar-10-batches-py``, ...), read by :func:`loaders.load_dataset`; the
  party uses its training split.

What every party must agree on comes from the run config (:class:`DataContract`): the class
names in order (or their number), the input kind and the shape of one sample. A party whose
data does not fit refuses with a message naming the problem (an unknown class, a wrong
shape). Nothing here reads the run seed: a party's rows are its own, not derivable from
the run config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DATA_FORMATS", "DataContract", "LocalData", "LocalDataError", "load_local_data"]

DATA_FORMATS = ("image-folder", "npz", "torchvision")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


class LocalDataError(ValueError):
    """A party's own data does not fit what the run says every party holds."""


@dataclass(frozen=True)
class DataContract:
    """What every party's data must look like, from the run config.

    ``classes``: the class names in order (empty: only ``num_classes`` is known and labels
    are indices); ``kind``: ``"image"`` (uint8 pixels, (C, H, W)) or ``"vector"`` (float rows);
    ``shape``: one sample's shape; ``unknown_classes``: ``"refuse"`` (the party stops) or
    ``"drop"`` (rows of classes the run does not name are left out, and counted).
    """

    classes: tuple[str, ...]
    num_classes: int
    kind: str
    shape: tuple[int, ...]
    unknown_classes: str = "refuse"

    def class_index(self, name: str) -> int | None:
        """The index of a class name (a bare integer also names an index), or None."""
        if name in self.classes:
            return self.classes.index(name)
        if not self.classes and name.isdigit() and int(name) < self.num_classes:
            return int(name)
        return None


@dataclass(frozen=True)
class LocalData:
    """A party's rows: inputs ``x`` (uint8 pixels (N, C, H, W) or float rows), labels ``y``,
    and how many rows of unnamed classes were dropped."""

    x: torch.Tensor
    y: torch.Tensor
    dropped: int = 0
    source: str = ""


def _refuse_or_drop(contract: DataContract, unknown: Sequence[str], where: str) -> None:
    if unknown and contract.unknown_classes == "refuse":
        named = ", ".join(contract.classes) if contract.classes else f"0..{contract.num_classes - 1}"
        raise LocalDataError(f"{where}: class(es) {', '.join(sorted(set(unknown)))} are not among the run's classes "
                             f"({named}); rename them, remove them, or run with unknown-classes = 'drop'")


def _check_shape(x: np.ndarray, contract: DataContract, where: str) -> None:
    if tuple(x.shape[1:]) != tuple(contract.shape):
        raise LocalDataError(f"{where}: samples have shape {tuple(x.shape[1:])}, the run expects "
                             f"{tuple(contract.shape)} (input-shape)")


def _image_folder(path: Path, contract: DataContract) -> LocalData:
    from PIL import Image

    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise LocalDataError(f"{path}: an image-folder needs one subfolder per class; found none")
    unknown = [f.name for f in folders if contract.class_index(f.name) is None]
    _refuse_or_drop(contract, unknown, str(path))
    images, labels, dropped = [], [], 0
    channels = contract.shape[0]
    for folder in folders:
        index = contract.class_index(folder.name)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if index is None:
            dropped += len(files)
            continue
        for file in files:
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
            pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
            if pixels.shape != tuple(contract.shape):
                raise LocalDataError(f"{file}: image of shape {pixels.shape}, the run expects {tuple(contract.shape)} "
                                     "(input-shape, as channels x height x width)")
            images.append(pixels)
            labels.append(index)
    if not images:
        raise LocalDataError(f"{path}: no image of a class the run names")
    return LocalData(x=torch.from_numpy(np.stack(images)), y=torch.tensor(labels, dtype=torch.int64),
                     dropped=dropped, source=f"image-folder {path}")


def _npz(path: Path, contract: DataContract) -> LocalData:
    with np.load(path, allow_pickle=False) as archive:
        missing = {"x", "y"} - set(archive.files)
        if missing:
            raise LocalDataError(f"{path}: an npz needs arrays 'x' and 'y'; missing {', '.join(sorted(missing))}")
        x, y = archive["x"], archive["y"]
    if x.shape[0] != y.shape[0]:
        raise LocalDataError(f"{path}: {x.shape[0]} inputs but {y.shape[0]} labels")
    _check_shape(x, contract, str(path))
    names = [str(v) for v in y.tolist()]
    indices = [contract.class_index(name) for name in names]
    _refuse_or_drop(contract, [n for n, i in zip(names, indices) if i is None], str(path))
    keep = np.array([i is not None for i in indices])
    if contract.kind == "image" and x.dtype != np.uint8:
        raise LocalDataError(f"{path}: image inputs must be uint8 pixels, got {x.dtype}")
    if contract.kind == "vector" and not np.issubdtype(x.dtype, np.floating):
        raise LocalDataError(f"{path}: vector inputs must be floats, got {x.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(x[keep]))
    labels = torch.tensor([i for i in indices if i is not None], dtype=torch.int64)
    return LocalData(x=tensor if contract.kind == "image" else tensor.float(), y=labels,
                     dropped=int((~keep).sum()), source=f"npz {path}")


def _torchvision(path: Path, contract: DataContract, dataset: str, split: str) -> LocalData:
    from loaders import load_dataset

    data = load_dataset(dataset, data_dir=str(path))
    x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
    _check_shape(x.numpy(), contract, str(path))
    if data.num_classes != contract.num_classes:
        raise LocalDataError(f"{path}: {dataset} has {data.num_classes} classes, the run names {contract.num_classes}")
    return LocalData(x=x, y=y, source=f"torchvision {dataset} copy {path} ({split} split)")


def load_local_data(path: str | Path, *, data_format: str, contract: DataContract, dataset: str = "",
                    split: str = "train") -> LocalData:
    """Read a party's data from its own disk and check it against the run's contract.

    ``dataset`` and ``split`` only matter for the ``torchvision`` format: which data set the
    copy holds and which of its splits to read (a party its training split, a server its
    test split).

    Raises
    ------
    LocalDataError
        The path is missing, the format is unknown, or the data does not fit the contract
        (the message names the file and the problem).
    """
    path = Path(path).expanduser()
    if data_format not in DATA_FORMATS:
        raise LocalDataError(f"data-format {data_format!r} is not one of {', '.join(DATA_FORMATS)}")
    if not path.exists():
        raise LocalDataError(f"data-path {path} does not exist on this node")
    if data_format == "image-folder":
        found = _image_folder(path, contract)
    elif data_format == "npz":
        found = _npz(path, contract)
    else:
        found = _torchvision(path, contract, dataset, split)
    if found.y.numel() < 4:
        raise LocalDataError(f"{path}: {found.y.numel()} usable rows; a party needs at least 4")
    return found
