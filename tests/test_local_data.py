"""A party's own data read from its own disk: image folders, npz archives; what does not fit
the run's contract (unknown class, wrong shape) is refused with the problem named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from loaders.local import DataContract, LocalDataError, load_local_data

CLASSES = ("cat", "dog", "owl")
CONTRACT = DataContract(classes=CLASSES, num_classes=3, kind="image", shape=(3, 8, 8))


def _image_folder(root, counts: dict[str, int], *, side: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        written[name] = []
        for i in range(count):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
            written[name].append(pixels.transpose(2, 0, 1))
    return written


def test_an_image_folder_reads_pixel_exact_with_the_runs_class_order(tmp_path):
    written = _image_folder(tmp_path / "data", {"owl": 3, "cat": 2})
    data = load_local_data(tmp_path / "data", data_format="image-folder", contract=CONTRACT)
    assert data.x.dtype == torch.uint8 and tuple(data.x.shape) == (5, 3, 8, 8)
    # Folders are read in name order; labels follow the run's class list, not the folder order.
    assert data.y.tolist() == [0, 0, 2, 2, 2]
    assert torch.equal(data.x[2], torch.from_numpy(written["owl"][0])) and data.dropped == 0


def test_a_class_the_run_does_not_name_is_refused_or_dropped_as_the_run_says(tmp_path):
    _image_folder(tmp_path / "data", {"cat": 3, "dog": 2, "zebra": 4})
    with pytest.raises(LocalDataError, match="zebra are not among the run's classes"):
        load_local_data(tmp_path / "data", data_format="image-folder", contract=CONTRACT)
    dropping = DataContract(classes=CLASSES, num_classes=3, kind="image", shape=(3, 8, 8), unknown_classes="drop")
    data = load_local_data(tmp_path / "data", data_format="image-folder", contract=dropping)
    assert data.y.tolist() == [0, 0, 0, 1, 1] and data.dropped == 4


def test_a_wrong_image_shape_is_named(tmp_path):
    _image_folder(tmp_path / "data", {"cat": 2}, side=10)
    with pytest.raises(LocalDataError, match=r"shape \(3, 10, 10\), the run expects \(3, 8, 8\)"):
        load_local_data(tmp_path / "data", data_format="image-folder", contract=CONTRACT)


def test_an_npz_with_class_names_or_indices(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "named.npz", x=x, y=np.array(["dog", "cat", "owl", "dog", "cat", "owl"]))
    data = load_local_data(tmp_path / "named.npz", data_format="npz", contract=CONTRACT)
    assert data.y.tolist() == [1, 0, 2, 1, 0, 2] and torch.equal(data.x, torch.from_numpy(x))
    vectors = DataContract(classes=(), num_classes=10, kind="vector", shape=(64,))
    np.savez(tmp_path / "rows.npz", x=rng.random((5, 64)).astype(np.float32), y=np.array([0, 9, 3, 3, 1]))
    rows = load_local_data(tmp_path / "rows.npz", data_format="npz", contract=vectors)
    assert rows.x.dtype == torch.float32 and rows.y.tolist() == [0, 9, 3, 3, 1]
    np.savez(tmp_path / "bad.npz", x=rng.random((5, 63)).astype(np.float32), y=np.zeros(5, dtype=int))
    with pytest.raises(LocalDataError, match=r"shape \(63,\), the run expects \(64,\)"):
        load_local_data(tmp_path / "bad.npz", data_format="npz", contract=vectors)
    with pytest.raises(LocalDataError, match="does not exist on this node"):
        load_local_data(tmp_path / "none.npz", data_format="npz", contract=vectors)
