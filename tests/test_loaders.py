"""Data set loaders on files in the real on-disk formats (random pixels, written by
``loaders.format_writers``): shapes, dtypes, exact pixels and labels, class mapping, and the
errors a user sees when a data set is missing or malformed. No test touches the network."""

from __future__ import annotations

import pickle
import shutil
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from loaders import DATASET_NAMES, DatasetNotFoundError, LabelledSplits, load_dataset
from loaders.format_writers import write_cifar10, write_cifar100, write_mnist, write_tiny_imagenet

IMAGE_SETS = ("mnist", "cifar10", "cifar100", "tiny-imagenet")


@pytest.fixture(autouse=True)
def _fresh_cache():
    # load_dataset is lru_cached per process; every test starts clean and leaves no arrays behind.
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


@pytest.fixture
def no_network(monkeypatch):
    """Make every urlopen fail as on a machine without internet, and count the attempts."""
    calls: list[str] = []

    def refuse(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


def _assert_image_splits(data: LabelledSplits, *, shape: tuple[int, ...], n_train: int, n_test: int):
    assert data.kind == "image"
    assert data.valid_range == (0.0, 1.0)
    assert data.train_x.dtype == torch.uint8 and data.test_x.dtype == torch.uint8
    assert data.train_y.dtype == torch.int64 and data.test_y.dtype == torch.int64
    assert tuple(data.train_x.shape) == (n_train, *shape)
    assert tuple(data.test_x.shape) == (n_test, *shape)
    assert tuple(data.train_y.shape) == (n_train,) and tuple(data.test_y.shape) == (n_test,)
    assert data.train_x.is_contiguous() and data.test_x.is_contiguous()
    assert data.input_dim == int(np.prod(shape))


def _class_counts(y: torch.Tensor, k: int) -> list[int]:
    return torch.bincount(y, minlength=k).tolist()


# ------------------------------------------------------------------------------- digits


def test_digits_is_unchanged():
    data = load_dataset("digits")
    assert data.kind == "vector" and data.name == "digits"
    assert data.train_x.shape == (1438, 64) and data.test_x.shape == (359, 64)
    assert data.train_x.dtype == torch.float32
    assert data.num_classes == 10 and data.input_dim == 64
    assert 0.0 <= float(data.train_x.min()) and float(data.train_x.max()) <= 1.0


def test_unknown_name_lists_the_available_data_sets():
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet-1k")
    for name in DATASET_NAMES:
        assert repr(name) in str(info.value)
    assert set(DATASET_NAMES) == {"digits", *IMAGE_SETS}


# -------------------------------------------------------------------------------- MNIST


def test_mnist_idx_files_load_bit_exact(tmp_path):
    written = write_mnist(tmp_path, n_train=50, n_test=20, seed=1)
    raw = tmp_path / "MNIST" / "raw"
    # The idx headers as the format defines them (magic 2051 for images, 2049 for labels).
    assert (raw / "train-images-idx3-ubyte").read_bytes()[:16] == struct.pack(">IIII", 2051, 50, 28, 28)
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes()[:8] == struct.pack(">II", 2049, 20)

    data = load_dataset("mnist", data_dir=str(tmp_path))
    _assert_image_splits(data, shape=(1, 28, 28), n_train=50, n_test=20)
    assert data.num_classes == 10 and data.name == "mnist"
    assert torch.equal(data.train_x, torch.from_numpy(written.train_x))
    assert torch.equal(data.test_x, torch.from_numpy(written.test_x))
    assert torch.equal(data.train_y, torch.from_numpy(written.train_y))
    assert torch.equal(data.test_y, torch.from_numpy(written.test_y))
    assert _class_counts(data.train_y, 10) == [5] * 10
    assert _class_counts(data.test_y, 10) == [2] * 10
    assert len(torch.unique(data.train_x)) > 200  # random pixels, not a constant


# -------------------------------------------------------------------------------- CIFAR


def test_cifar10_batches_are_the_real_pickle_format(tmp_path):
    written = write_cifar10(tmp_path, n_train=53, n_test=20, seed=2)
    folder = tmp_path / "cifar-10-batches-py"
    sizes = []
    for k in range(1, 6):
        with open(folder / f"data_batch_{k}", "rb") as f:
            batch = pickle.load(f, encoding="bytes")  # the CIFAR web page's way: bytes keys
        assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
        assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
        sizes.append(batch[b"data"].shape[0])
    assert sum(sizes) == 53 and max(sizes) - min(sizes) <= 1
    with open(folder / "test_batch", "rb") as f:
        test = pickle.load(f, encoding="latin1")  # torchvision's way: str keys
    assert isinstance(test["labels"], list) and test["labels"] == written.test_y.tolist()
    # One row per image: red plane, then green, then blue, each row-major (CHW flattened).
    assert np.array_equal(test["data"][3].reshape(3, 32, 32), written.test_x[3])
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert meta["label_names"][0] == "airplane" and len(meta["label_names"]) == 10


def test_cifar10_loads_bit_exact_although_md5_sums_differ(tmp_path):
    import torchvision

    written = write_cifar10(tmp_path, n_train=53, n_test=20, seed=3)
    # torchvision's own class refuses these files (their md5 sums are not the real ones) ...
    with pytest.raises(RuntimeError):
        torchvision.datasets.CIFAR10(root=str(tmp_path), train=True)
    # ... while the loader, which only checks that every file exists, reads them.
    data = load_dataset("cifar10", data_dir=str(tmp_path))
    _assert_image_splits(data, shape=(3, 32, 32), n_train=53, n_test=20)
    assert data.num_classes == 10 and data.name == "cifar10"
    assert torch.equal(data.train_x, torch.from_numpy(written.train_x))
    assert torch.equal(data.test_x, torch.from_numpy(written.test_x))
    assert torch.equal(data.train_y, torch.from_numpy(written.train_y))
    assert torch.equal(data.test_y, torch.from_numpy(written.test_y))
    assert sorted(_class_counts(data.train_y, 10)) == [5] * 7 + [6] * 3
    assert _class_counts(data.test_y, 10) == [2] * 10


def test_cifar100_loads_fine_labels_bit_exact(tmp_path):
    written = write_cifar100(tmp_path, n_train=200, n_test=100, seed=4)
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert raw["coarse_labels"] == (np.asarray(raw["fine_labels"]) // 5).tolist()
    data = load_dataset("cifar100", data_dir=str(tmp_path))
    _assert_image_splits(data, shape=(3, 32, 32), n_train=200, n_test=100)
    assert data.num_classes == 100 and data.name == "cifar100"
    assert torch.equal(data.train_x, torch.from_numpy(written.train_x))
    assert torch.equal(data.test_x, torch.from_numpy(written.test_x))
    assert torch.equal(data.train_y, torch.from_numpy(written.train_y))
    assert _class_counts(data.train_y, 100) == [2] * 100
    assert _class_counts(data.test_y, 100) == [1] * 100


def test_a_missing_cifar_file_is_named(tmp_path):
    write_cifar10(tmp_path, n_train=10, n_test=10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=str(tmp_path))


# ------------------------------------------------------------------------ Tiny-ImageNet


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 5-class Tiny-ImageNet of flat-coloured JPEGs; 12 train images per class so that
    file names sort as strings (``_10`` before ``_2``), every 4th one grayscale."""
    root = tmp_path_factory.mktemp("tiny")
    written = write_tiny_imagenet(
        root, per_class_train=12, per_class_val=3, num_classes=5, seed=5, pattern="flat", grayscale_every=4
    )
    return written


def _copy_tiny(written, dest: Path) -> Path:
    shutil.copytree(written.data_dir / "tiny-imagenet-200", dest / "tiny-imagenet-200")
    return dest / "tiny-imagenet-200"


def test_tiny_imagenet_loads_pixels_and_labels(tiny):
    data = load_dataset("tiny-imagenet", data_dir=str(tiny.data_dir))
    _assert_image_splits(data, shape=(3, 64, 64), n_train=60, n_test=15)
    assert data.num_classes == 5 and data.name == "tiny-imagenet"
    assert torch.equal(data.train_y, torch.from_numpy(tiny.train_y))
    assert torch.equal(data.test_y, torch.from_numpy(tiny.test_y))
    assert _class_counts(data.train_y, 5) == [12] * 5
    assert _class_counts(data.test_y, 5) == [3] * 5
    # JPEG is lossy, but flat colours come back within a couple of levels.
    for got, want in ((data.train_x, tiny.train_x), (data.test_x, tiny.test_x)):
        err = (got.to(torch.int16) - torch.from_numpy(want).to(torch.int16)).abs()
        assert float(err.float().mean()) < 1.0 and int(err.max()) <= 4
    # Grayscale files come back as three equal channels.
    grey = data.train_x[3]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_tiny_imagenet_data_dir_may_be_the_folder_itself(tiny):
    via_parent = load_dataset("tiny-imagenet", data_dir=str(tiny.data_dir))
    direct = load_dataset("tiny-imagenet", data_dir=str(tiny.data_dir / "tiny-imagenet-200"))
    assert direct is not via_parent  # two cache entries, really loaded twice
    assert torch.equal(direct.train_x, via_parent.train_x) and torch.equal(direct.test_y, via_parent.test_y)


def test_tiny_imagenet_class_index_is_the_line_of_wnids_txt(tiny, tmp_path):
    wnids = list(tiny.class_names)
    assert wnids != sorted(wnids)  # the file's order, not alphabetical, defines the classes
    # Image 0 of each class is in colour (grayscale ones are every 4th, from index 3).
    colour_of = {w: tiny.train_x[tiny.train_y == k][0, :, 0, 0].astype(int) for k, w in enumerate(wnids)}
    root = _copy_tiny(tiny, tmp_path)
    reordered = [wnids[i] for i in (3, 0, 4, 1, 2)]
    (root / "wnids.txt").write_text("\n".join(reordered) + "\n")

    data = load_dataset("tiny-imagenet", data_dir=str(tmp_path))
    for j, wnid in enumerate(reordered):
        imgs = data.train_x[data.train_y == j]
        assert imgs.shape[0] == 12
        # Grayscale images hold the luma, not the class colour: compare the others.
        colourful = [im for im in imgs if not (torch.equal(im[0], im[1]) and torch.equal(im[1], im[2]))]
        assert colourful
        for im in colourful:
            assert np.abs(im[:, 32, 32].numpy().astype(int) - colour_of[wnid]).max() <= 4
    # Training images come class by class in wnids.txt order.
    assert torch.equal(data.train_y, torch.arange(5).repeat_interleave(12))
    # Validation labels follow the same mapping through val_annotations.txt.
    old_to_new = torch.tensor([reordered.index(w) for w in wnids])
    assert torch.equal(data.test_y, old_to_new[torch.from_numpy(tiny.test_y)])


def test_tiny_imagenet_unknown_wnid_in_val_annotations(tiny, tmp_path):
    root = _copy_tiny(tiny, tmp_path)
    ann = root / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    name = lines[2].split("\t")[0]
    lines[2] = f"{name}\tn99999999\t0\t0\t63\t63"
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="n99999999") as info:
        load_dataset("tiny-imagenet", data_dir=str(tmp_path))
    assert name in str(info.value) and "val_annotations.txt" in str(info.value)


def test_tiny_imagenet_missing_class_folder(tiny, tmp_path):
    root = _copy_tiny(tiny, tmp_path)
    wnid = tiny.class_names[2]
    shutil.rmtree(root / "train" / wnid)
    with pytest.raises(ValueError, match=wnid) as info:
        load_dataset("tiny-imagenet", data_dir=str(tmp_path))
    assert str(root / "train" / wnid / "images") in str(info.value)


def test_tiny_imagenet_wrong_image_size_names_the_file(tiny, tmp_path):
    from PIL import Image

    root = _copy_tiny(tiny, tmp_path)
    bad = sorted((root / "train" / tiny.class_names[1] / "images").iterdir())[5]
    Image.new("RGB", (32, 48), (10, 20, 30)).save(bad, format="JPEG")
    with pytest.raises(ValueError, match="32x48") as info:
        load_dataset("tiny-imagenet", data_dir=str(tmp_path))
    assert str(bad) in str(info.value)


def test_tiny_imagenet_download_flag_does_not_download(tmp_path, no_network):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("tiny-imagenet", data_dir=str(tmp_path), download=True)
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in str(info.value)
    assert no_network == []


# ------------------------------------------------------------------------------ missing data


@pytest.mark.parametrize("name", IMAGE_SETS)
def test_missing_data_set_says_where_and_how(name, tmp_path):
    where = tmp_path / "nothing-here"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, data_dir=str(where))
    err = info.value
    assert isinstance(err, FileNotFoundError)
    msg = str(err)
    assert str(where) in msg and "data-dir" in msg and "download" in msg
    assert "\n" not in msg  # one paragraph
    assert err.dataset == name and err.paths and all(p.startswith(str(where)) for p in err.paths)
    # Survives pickling (Ray and Flower move exceptions between processes).
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == msg and again.paths == err.paths


@pytest.mark.parametrize("name", IMAGE_SETS)
@pytest.mark.parametrize("download", [False, True])
def test_empty_data_dir_is_an_error_not_the_current_directory(
    name, download, tmp_path, monkeypatch, no_network
):
    # Even with a valid copy in the working directory, an empty data-dir is refused.
    write_cifar10(tmp_path, n_train=5, n_test=5)
    write_mnist(tmp_path, n_train=5, n_test=5)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, data_dir="", download=download)
    msg = str(info.value)
    assert "data-dir" in msg and "download" in msg and "empty" in msg
    assert no_network == []


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_download_without_internet_raises_dataset_not_found(name, tmp_path, no_network):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, data_dir=str(tmp_path), download=True)
    msg = str(info.value)
    assert no_network, "torchvision's download path was not taken"
    assert "failed" in msg and "no network in tests" in msg
    assert str(tmp_path) in msg and "data-dir" in msg and "download" in msg
    assert isinstance(info.value.__cause__, (OSError, RuntimeError))


def test_download_is_skipped_when_files_are_present(tmp_path, no_network):
    written = write_cifar10(tmp_path, n_train=10, n_test=10)
    data = load_dataset("cifar10", data_dir=str(tmp_path), download=True)
    assert no_network == []
    assert torch.equal(data.train_x, torch.from_numpy(written.train_x))


def test_results_are_cached_per_arguments(tmp_path):
    write_mnist(tmp_path, n_train=10, n_test=10)
    first = load_dataset("mnist", data_dir=str(tmp_path))
    assert load_dataset("mnist", data_dir=str(tmp_path)) is first


def test_generated_cifar10_class_patterns_are_learnable_and_load_exactly(tmp_path):
    from loaders.format_writers import write_cifar10

    written = write_cifar10(tmp_path, n_train=1000, n_test=300, seed=3, pixels="class-patterns")
    data = load_dataset("cifar10", data_dir=str(tmp_path), test_fraction=0.2, download=False)
    assert torch.equal(data.train_x, torch.from_numpy(written.train_x))
    assert torch.equal(data.test_y, torch.from_numpy(written.test_y))

    def nearest_mean_accuracy(w) -> float:
        x = w.train_x.reshape(len(w.train_x), -1).astype(np.float64)
        means = np.stack([x[w.train_y == c].mean(0) for c in range(10)])
        t = w.test_x.reshape(len(w.test_x), -1).astype(np.float64)
        pred = ((t[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
        return float((pred == w.test_y).mean())

    # Class patterns carry the label (far above chance); uniform pixels do not.
    assert nearest_mean_accuracy(written) > 0.5
    random = write_cifar10(tmp_path / "random", n_train=1000, n_test=300, seed=3)
    assert nearest_mean_accuracy(random) < 0.2
    with pytest.raises(ValueError, match="pixels"):
        write_cifar10(tmp_path / "bad", n_train=10, n_test=10, pixels="noise")
