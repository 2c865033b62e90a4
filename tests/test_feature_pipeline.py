"""Preprocessing, the feature cache, the image -> feature radius mapping, per-channel
clamping and float16 transport."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from client.release import FLOAT16_MAX, to_upload_dtype
from common.calibration import data_statistics, noise_multiplier, streamed_statistics
from common.feature_radius import map_radius_to_features, spherical_noise
from common.leakage import top_principal_directions
from common.mixup import singularized_mixup
from common.preprocess import NORMALISATION, ImagePreprocessing, channel_bounds
from features.backbones import build_backbone
from features.cache import FeatureKey, cached_features, data_fingerprint
from features.extraction import extract_features
from server.union import UnionBuffer

CIFAR = ImagePreprocessing(*NORMALISATION["cifar10"], size=224, channels=3)


# --- preprocessing -------------------------------------------------------------------------


def test_paper_table7_statistics_and_the_normalised_valid_range():
    assert NORMALISATION["mnist"] == ((0.1307,), (0.3081,))
    assert NORMALISATION["cifar10"][0] == (0.4914, 0.4822, 0.4465)
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    black = torch.zeros((1, 3, 32, 32), dtype=torch.uint8)
    lo, hi = CIFAR.valid_bounds(3)
    out_white, out_black = CIFAR(white), CIFAR(black)
    assert out_white.shape == (1, 3, 224, 224)
    # Constant images stay constant through bilinear resizing: they land on the bounds.
    assert torch.allclose(out_white, hi.expand_as(out_white), atol=1e-5)
    assert torch.allclose(out_black, lo.expand_as(out_black), atol=1e-5)
    assert torch.allclose(hi.flatten(), (1 - torch.tensor([0.4914, 0.4822, 0.4465])) / torch.tensor([0.2470, 0.2435, 0.2616]))


def test_mnist_becomes_three_identical_channels_and_raw_inputs_keep_their_size():
    mnist = ImagePreprocessing(*NORMALISATION["mnist"], size=224, channels=3)
    img = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    out = mnist(img)
    assert out.shape == (2, 3, 224, 224)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    raw = ImagePreprocessing(*NORMALISATION["mnist"])
    assert raw(img).shape == (2, 1, 28, 28)
    assert torch.allclose(raw(img), (img.float() / 255 - 0.1307) / 0.3081)


def test_flattened_bounds_follow_channel_major_order():
    pre = ImagePreprocessing(*NORMALISATION["cifar10"])
    lo, hi = channel_bounds(pre, (3, 4, 4))
    assert lo.shape == (48,)
    lo_c, _ = pre.valid_bounds(3)
    for c in range(3):
        assert torch.allclose(lo[c * 16 : (c + 1) * 16], lo_c.flatten()[c].expand(16))
    assert bool((lo < hi).all())


# --- calibration in image space --------------------------------------------------------------


def test_streamed_statistics_equal_the_in_memory_estimate():
    x = torch.rand(200, 3, 6, 6)
    a = data_statistics(x, generator=torch.Generator().manual_seed(4))
    b = streamed_statistics(200, lambda idx: x[idx], generator=torch.Generator().manual_seed(4), batch_size=37)
    assert (a.dim, a.num_pairs) == (b.dim, b.num_pairs) == (108, 20_000)
    assert math.isclose(a.V, b.V, rel_tol=1e-9) and math.isclose(a.D, b.D, rel_tol=1e-9)


def test_paper_code_formula_drops_exactly_the_sqrt_d_factor():
    paper = noise_multiplier(tau=1e-6, alpha=0.7, dim=150_528, c=0.5)
    code = noise_multiplier(tau=1e-6, alpha=0.7, dim=150_528, c=0.5, formula="paper-code")
    assert math.isclose(paper / code, math.sqrt(150_528), rel_tol=1e-12)
    with pytest.raises(ValueError, match="formula"):
        noise_multiplier(tau=1e-6, alpha=0.7, dim=3, c=0.5, formula="other")


# --- radius mapping ---------------------------------------------------------------------------


def test_identity_features_move_by_exactly_the_image_radius():
    images = torch.randn(10, 3, 8, 8)
    mapped = map_radius_to_features(
        images, feature_fn=lambda b: b.flatten(1), image_radius=7.5, generator=torch.Generator().manual_seed(0)
    )
    assert math.isclose(mapped.radius, 7.5, rel_tol=1e-5) and mapped.std < 1e-4
    zero = map_radius_to_features(
        images, feature_fn=lambda b: b.flatten(1), image_radius=0.0, generator=torch.Generator().manual_seed(0)
    )
    assert zero.radius == 0.0


def test_spherical_noise_has_the_exact_norm():
    e = spherical_noise((5, 3, 4, 4), radius=3.0, generator=torch.Generator().manual_seed(1), device="cpu")
    assert torch.allclose(torch.linalg.vector_norm(e.flatten(1), dim=1), torch.full((5,), 3.0))


def test_radius_ordering_strict_above_clamped_and_paper_above_paper_code():
    torch.manual_seed(0)
    backbone, _ = build_backbone(name="resnet18", weights="none", pool="avg")
    pre = ImagePreprocessing(*NORMALISATION["cifar10"], size=32, channels=3)
    images = pre(torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8))
    stats = data_statistics(images)
    radii = {}
    for formula in ("paper", "paper-code"):
        r_img = noise_multiplier(tau=1e-6, alpha=0.7, dim=stats.dim, c=stats.c, formula=formula) * stats.D
        for mode, clamp in (("strict", None), ("clamped", pre.valid_bounds(3))):
            radii[formula, mode] = map_radius_to_features(
                images, feature_fn=backbone, image_radius=r_img,
                generator=torch.Generator().manual_seed(2), clamp=clamp, batch_size=5,
            ).radius
    # Clamping caps every noisy pixel to the valid range, so the displacement is bounded by
    # the images' range; strict noise of radius ~1e7 moves the features far more.
    assert radii["paper", "strict"] > 100 * radii["paper", "clamped"]
    assert radii["paper", "strict"] > radii["paper-code", "strict"] > radii["paper-code", "clamped"] > 0
    # Once the noise saturates the clamp, the radius no longer matters much.
    assert radii["paper", "clamped"] == pytest.approx(radii["paper-code", "clamped"], rel=0.5)


# --- per-coordinate clamp in Algorithm 1 -------------------------------------------------------


def test_per_channel_clamp_bounds_every_noisy_partner_coordinate():
    pre = ImagePreprocessing(*NORMALISATION["cifar10"])
    lo, hi = channel_bounds(pre, (3, 4, 4))
    x = pre(torch.randint(0, 256, (30, 3, 4, 4), dtype=torch.uint8)).flatten(1)
    rel = singularized_mixup(x, torch.arange(30) % 3, radius=1e4, alpha=0.7, clamp=(lo, hi), num_classes=3,
                             generator=torch.Generator().manual_seed(0))
    w = rel.weights
    partner_term = (rel.x - w[:, :1] * x) / w[:, 1:]
    assert bool((partner_term >= lo - 1e-3).all()) and bool((partner_term <= hi + 1e-3).all())
    # With radius >> range the clamp saturates: most coordinates sit on a bound.
    on_bound = ((partner_term - lo).abs() < 1e-3) | ((partner_term - hi).abs() < 1e-3)
    assert float(on_bound.float().mean()) > 0.95
    with pytest.raises(ValueError, match="per-coordinate clamp needs 48"):
        singularized_mixup(x, torch.arange(30) % 3, radius=1.0, alpha=0.7, clamp=(lo[:5], hi[:5]), num_classes=3)


# --- float16 transport --------------------------------------------------------------------------


def test_float16_upload_round_trips_through_the_union_buffer():
    x = torch.randn(40, 16) * 100
    half = to_upload_dtype(x, "float16")
    assert half.dtype == torch.float16
    assert torch.allclose(half.float(), x, rtol=1e-3, atol=1e-2)
    buf = UnionBuffer(expected_parties=2)
    y = torch.softmax(torch.randn(40, 3), dim=1)
    buf.add(0, half[:20].numpy(), y[:20].numpy())
    buf.add(1, half[20:].numpy(), y[20:].numpy())
    assert buf.x.dtype == torch.float16 and torch.equal(buf.x, half)
    assert buf.used_bytes == 40 * 16 * 2 + 40 * 3 * 4 + 40 * 4  # x half, y float32, owner int32
    assert to_upload_dtype(x, "float32").dtype == torch.float32


def test_float16_upload_refuses_values_it_cannot_carry():
    x = torch.tensor([[1.0, 2 * FLOAT16_MAX]])
    with pytest.raises(OverflowError, match="upload-dtype = 'float32'"):
        to_upload_dtype(x, "float16")


# --- feature cache ------------------------------------------------------------------------------


def _key(fingerprint: str = "abc") -> FeatureKey:
    return FeatureKey(dataset="cifar10", split="train", backbone="resnet18", weights_tag="random",
                      pool="avg", image_size=32, fingerprint=fingerprint)


def test_cache_extracts_once_then_hits(tmp_path):
    calls = []

    def extract(out):
        calls.append(out.shape)
        out[:] = np.arange(out.size, dtype=np.float16).reshape(out.shape) % 7
        return {"seconds": 0.0}

    first = cached_features(_key(), cache_dir=tmp_path, rows=5, dim=4, extract=extract)
    second = cached_features(_key(), cache_dir=tmp_path, rows=5, dim=4, extract=extract)
    assert calls == [(5, 4)]
    assert (first.hit, second.hit) == (False, True)
    assert np.array_equal(first.features, second.features) and second.features.dtype == np.float16
    assert not list(tmp_path.glob("*.partial"))
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["rows"] == 5 and meta["dim"] == 4 and meta["backbone"] == "resnet18"
    # Other data (another fingerprint) is another entry, not a stale hit.
    cached_features(_key("def"), cache_dir=tmp_path, rows=5, dim=4, extract=extract)
    assert len(calls) == 2
    with pytest.raises(RuntimeError, match="delete it"):
        cached_features(_key(), cache_dir=tmp_path, rows=6, dim=4, extract=extract)


def test_an_interrupted_extraction_leaves_no_cache_entry(tmp_path):
    def broken(out):
        out[:2] = 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_features(_key(), cache_dir=tmp_path, rows=5, dim=4, extract=broken)
    assert not list(tmp_path.glob("*.npy"))
    done = cached_features(_key(), cache_dir=tmp_path, rows=5, dim=4, extract=lambda out: {})
    assert not done.hit


def test_fingerprint_sees_pixels_and_labels():
    imgs = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(50) % 10
    base = data_fingerprint(imgs, labels)
    other = imgs.clone()
    other[0, 0, 0, 0] ^= 1
    assert data_fingerprint(other, labels) != base
    assert data_fingerprint(imgs, labels.roll(1)) != base
    assert data_fingerprint(imgs.clone(), labels.clone()) == base


def test_extraction_matches_a_direct_forward_and_reports_progress():
    backbone, _ = build_backbone(name="resnet18", weights="none", pool="flatten")
    pre = ImagePreprocessing(*NORMALISATION["cifar10"], size=64, channels=3)
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    out = np.zeros((7, 2048), dtype=np.float16)
    seen = []
    facts = extract_features(images, backbone=backbone, preprocessing=pre, out=out, device=torch.device("cpu"),
                             batch_size=3, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 7), (6, 7), (7, 7)]
    with torch.no_grad():
        direct = backbone(pre(images)).half().numpy()
    assert np.allclose(out, direct, rtol=1e-2, atol=1e-2)
    assert facts["images_per_second"] > 0 and facts["precision"] == "float32"


def test_randomised_principal_direction_matches_the_full_svd():
    torch.manual_seed(0)
    x = torch.randn(700, 600) * torch.linspace(0.1, 1, 600)
    x[:, 500] *= 4  # a clear leading direction
    v = top_principal_directions(x, 1)
    centred = (x - x.mean(0)).double()
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    assert abs(float(v[0] @ vh[0])) > 0.9999
