"""Parties on image data: inputs in the configured space, the shared feature cache, and the
image-space calibration with its feature-space radius, on a CIFAR-10 copy the test writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from client.party import load_party
from client.release import make_release
from common.config import parse_run_config
from features.pipeline import split_inputs
from loaders import load_dataset
from loaders.format_writers import write_cifar10

PARTIES = 2


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_train=80, n_test=20, seed=1)
    return root


def _cfg(cifar_dir, cache, **extra):
    return parse_run_config({"party-figures": "exact",
        "dataset": "cifar10", "data-dir": str(cifar_dir), "backbone": "resnet18", "backbone-weights": "none",
        "image-size": 32, "feature-pool": "flatten", "feature-cache-dir": str(cache), "radius-sample": 8,
        "min-party-size": 10, "device": "cpu", **extra,
    })


def test_parties_share_one_extraction_and_get_their_own_feature_rows(cifar_dir, tmp_path):
    cfg = _cfg(cifar_dir, tmp_path / "cache")
    load_party.cache_clear()
    parties = [load_party(cfg, pid, PARTIES) for pid in range(PARTIES)]
    files = sorted(p.name for p in (tmp_path / "cache").glob("*.npy"))
    assert len(files) == 1 and files[0].startswith("cifar10-train-resnet18-random-flatten-32px-")
    data = load_dataset("cifar10", data_dir=str(cifar_dir))
    everything = split_inputs(cfg, data, "train", device=torch.device("cpu"))
    assert everything.shape == (80, 512) and everything.dtype == torch.float16
    rows = sum(p.train_x.shape[0] + p.val_x.shape[0] for p in parties)
    assert rows == 80
    for party in parties:
        assert party.train_x.shape[1] == 512 and party.input_bounds is None
        assert party.train_images.dtype == torch.uint8 and party.train_images.shape[1:] == (3, 32, 32)
        assert party.train_images.shape[0] == party.train_x.shape[0]
        # Each feature row is the cached feature of one of the party's own images.
        match = (everything.float()[None] - party.train_x.float()[:, None]).abs().amax(dim=2).min(dim=1).values
        assert float(match.max()) == 0.0


def test_raw_images_are_normalised_rows_with_per_channel_bounds(cifar_dir, tmp_path):
    cfg = parse_run_config({"dataset": "cifar10", "data-dir": str(cifar_dir), "device": "cpu",
                            "min-party-size": 10, "feature-cache-dir": str(tmp_path)})
    load_party.cache_clear()
    party = load_party(cfg, 0, PARTIES)
    assert party.train_x.shape[1] == 3 * 32 * 32 and party.train_images is None
    lo, hi = party.input_bounds
    assert lo.shape == (3072,) and bool((party.train_x >= lo - 1e-5).all()) and bool((party.train_x <= hi + 1e-5).all())
    assert not list(tmp_path.glob("*.npy"))  # no backbone, no extraction


@pytest.mark.parametrize("formula", ["paper", "paper-code"])
def test_release_calibrates_in_image_space_and_mixes_features(cifar_dir, tmp_path, formula):
    load_party.cache_clear()
    out = {}
    for mode in ("strict", "clamped"):
        cfg = _cfg(cifar_dir, tmp_path / "cache", **{"noise-mode": mode, "mf-formula": formula})
        party = load_party(cfg, 0, PARTIES)
        made = make_release(cfg, party, device=torch.device("cpu"))
        m = made.metrics
        assert m["dim"] == 3 * 32 * 32  # Theorem 2's d is the image dimension...
        assert m["input-dim"] == 512  # ...while mixing happens on features
        assert m["radius"] == m["feature-radius"] and m["radius-sample"] == 8
        assert made.train.radius == pytest.approx(m["feature-radius"])
        assert made.train.clamp is None  # features have no valid range
        # Every noise vector in feature space has exactly the mapped radius.
        w = made.train.weights
        x = party.train_x.float()
        noise = (made.train.x - w[:, :1] * x) / w[:, 1:] - x[made.train.partner]
        assert torch.allclose(torch.linalg.vector_norm(noise, dim=1),
                              torch.full((x.shape[0],), m["radius"]), rtol=1e-3)
        out[mode] = m
    assert out["strict"]["image-radius"] == pytest.approx(out["clamped"]["image-radius"])
    assert out["strict"]["feature-radius"] > out["clamped"]["feature-radius"] > 0
    if formula == "paper":
        assert out["strict"]["feature-radius"] > 100 * out["clamped"]["feature-radius"]
    assert np.isfinite([out[k]["snr-pc1"] for k in out]).all()
