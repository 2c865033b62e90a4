"""The frontier's leakage measures on real digits partitions (no flwr): the reconstruction
score's centring and prior baseline, the linear attack's gain growing with tau, the
references' stated exposure, membership inference's candidate sets and its cache."""

from __future__ import annotations

import math

import pytest
import torch

from common.model import MixupClassifier
from simulations.studies.frontier_leakage import (
    WEIGHTS_SUFFIX,
    LeakageOptions,
    ReferenceModels,
    leakage_of_run,
    membership_of_run,
    reconstruction_of_run,
    score_reconstruction,
)
from test_frontier import summary_fixture

SMALL = {"central-epochs": 2, "num-rounds": 2}


def test_the_score_is_centred_and_the_prior_scores_zero():
    gen = torch.Generator().manual_seed(0)
    originals = torch.rand(6, 1, 8, 8, generator=gen)
    prior = torch.full((1, 8, 8), 0.3)
    exact = score_reconstruction(originals, originals.clone(), prior, data_range=1.0, ssim_threshold=0.5)
    assert math.isinf(exact["snr_gain_db"]) and exact["recovered_share"] == 1.0
    # A shift shared by the whole batch (what a BatchNorm update cannot see) costs nothing centred.
    shifted = score_reconstruction(originals, originals + 0.4, prior, data_range=1.0, ssim_threshold=0.5)
    assert shifted["snr_gain_db"] > 100 and shifted["raw_snr_gain_db"] < 20  # centred: exact up to rounding
    guess = score_reconstruction(originals, prior.expand_as(originals), prior, data_range=1.0, ssim_threshold=0.5)
    assert guess["snr_gain_db"] == pytest.approx(0.0) and guess["raw_snr_gain_db"] == pytest.approx(0.0)
    assert guess["recovered_share"] == guess["prior_recovered_share"]
    flat = score_reconstruction(originals.reshape(6, -1), originals.reshape(6, -1), prior.reshape(-1),
                                data_range=1.0, ssim_threshold=0.5)
    assert flat["recovered_share"] is None  # no SSIM for feature vectors: said, not invented


def test_the_linear_attack_gains_more_as_tau_grows_and_the_references_are_stated():
    opts = LeakageOptions(linear_steps=100)
    gains = {}
    for tau in (1.0, 5.44):
        summary = summary_fixture(parties=4, tau=tau, config=SMALL)
        gains[tau] = reconstruction_of_run(summary, None, opts=opts)
        assert gains[tau]["attack"] == "linear inversion (appendix F)" and gains[tau]["parties"] == [0]
        assert gains[tau]["releases_attacked"] == 1
    assert gains[5.44]["snr_gain_db"] > gains[1.0]["snr_gain_db"] + 3
    assert gains[5.44]["recovered_share"] > gains[1.0]["recovered_share"]
    pooled = reconstruction_of_run(summary_fixture(parties=4, encoding="pooled", tau=None, config=SMALL), None,
                                   opts=opts)
    assert math.isinf(pooled["snr_gain_db"]) and pooled["recovered_share"] == 1.0 and "total" in pooled["exposure"]
    alone = summary_fixture(strategy="local-only", parties=4, encoding=None, local=(0.5, 0.7, 0.6, 0.8), config=SMALL)
    got = reconstruction_of_run(alone, None, opts=opts)
    assert got["snr_gain_db"] is None and got["recovered_share"] is None and got["na"]


def test_per_epoch_releases_are_averaged_and_attack_more():
    opts = LeakageOptions(linear_steps=100, per_epoch_releases=2)
    once = reconstruction_of_run(summary_fixture(parties=4, tau=3.0, config=SMALL), None, opts=opts)
    twice = reconstruction_of_run(summary_fixture(parties=4, tau=3.0, release="per-epoch", config=SMALL), None,
                                  opts=opts)
    assert twice["releases_attacked"] == 2
    assert twice["snr_gain_db"] > once["snr_gain_db"]  # fresh noise per release averages out


def test_membership_uses_every_party_as_members_and_the_test_split_as_non_members(tmp_path):
    summary = summary_fixture(strategy="fedprox", parties=3, encoding=None, config=SMALL)
    torch.manual_seed(0)
    model = MixupClassifier(in_dim=64, num_classes=10)
    weights = {"selected": model.state_dict(), "initial": model.state_dict(), "norm": "batch", "selected_round": 2}
    refs = ReferenceModels(2)
    got = membership_of_run(summary, weights, refs=refs)
    from client.party import load_party
    from common.config import parse_run_config

    cfg = parse_run_config(summary.config)
    from features.pipeline import load_run_data

    members = sum(int(load_party(cfg, p, 3).train_x.shape[0]) for p in range(3))
    test_rows = int(load_run_data(cfg).test_y.shape[0])
    assert 350 < test_rows < 370
    for attack in ("loss", "lira"):
        assert got[attack]["members"] == members and got[attack]["nonmembers"] == test_rows
        assert got[attack]["low_fpr"] == 0.05  # 0.1 % and 1 % of ~360 leave fewer than 10 false positives
        assert 0.35 < got[attack]["auc"] < 0.65  # an untrained model knows nobody
    assert got["lira"]["reference_models"] == 2 and len(refs._cache) == 1
    membership_of_run(summary, weights, refs=refs)
    assert len(refs._cache) == 1  # the public pool's reference models are trained once

    path = tmp_path / "fedprox-run.json"
    summary.write(path)
    torch.save(weights, path.with_name(path.stem + WEIGHTS_SUFFIX))
    opts = LeakageOptions(reference_models=2, ig_iterations=5)
    first = leakage_of_run(path, summary, opts=opts, refs=refs, cache_dir=tmp_path / "leakage")
    assert first["reconstruction"]["attack"] == "Inverting Gradients on the round-1 update"
    assert first["reconstruction"]["n"] == 4 and first["reidentification_rate"] is None
    cached = tmp_path / "leakage" / "fedprox-run.json"
    stamp = cached.stat().st_mtime_ns
    again = leakage_of_run(path, summary, opts=opts, refs=refs, cache_dir=tmp_path / "leakage")
    assert again["membership"] == first["membership"] and cached.stat().st_mtime_ns == stamp
    other = leakage_of_run(path, summary, opts=LeakageOptions(reference_models=2, ig_iterations=6), refs=refs,
                           cache_dir=tmp_path / "leakage")
    assert other["options"]["ig_iterations"] == 6 and cached.stat().st_mtime_ns != stamp  # other options: redone
