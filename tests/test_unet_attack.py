"""The non-linear (U-Net) reconstruction attack of appendix F."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from attacks import ATTACKS
from attacks.threat_model import AttackerKnowledge, ObservedRelease, Reconstruction
from attacks.unet import (
    MixtureSampler,
    UNet,
    UNetAttack,
    nonlinear_attack_over_seeds,
    public_mixtures,
    total_variation,
    train_unet_attacker,
)
from common.calibration import data_statistics, noise_multiplier
from common.mixup import singularized_mixup

ALPHA = 0.7


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run far faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().data, dtype=torch.float32) / 16.0
    return x.reshape(-1, 1, 8, 8)


def _split(digits: torch.Tensor):
    perm = torch.randperm(digits.shape[0], generator=torch.Generator().manual_seed(123))
    return digits[perm[:1400]], digits[perm[1400:]]


def _private_release(private_x: torch.Tensor, *, tau: float, noise_mode: str, seed: int = 99):
    stats = data_statistics(private_x)
    radius = noise_multiplier(tau=tau, alpha=ALPHA, dim=stats.dim, c=stats.c) * stats.D
    release = singularized_mixup(
        private_x,
        torch.zeros(private_x.shape[0], dtype=torch.long),
        radius=radius,
        alpha=ALPHA,
        generator=torch.Generator().manual_seed(seed),
        clamp=(0.0, 1.0) if noise_mode == "clamped" else None,
        num_classes=1,
    )
    observed = ObservedRelease(x=release.x, y=release.y, sample_shape=tuple(private_x.shape[1:]))
    knowledge = AttackerKnowledge(
        weights=None, partner=None, radius=None, noise_mode=noise_mode, valid_range=(0.0, 1.0),
        description="release only",
    )
    return observed, knowledge


def _snr_db(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample SNR ``10 log10(||x||^2 / ||x - x_hat||^2)``."""
    x, x_hat = x.reshape(x.shape[0], -1).double(), x_hat.reshape(x.shape[0], -1).double()
    return 10 * torch.log10(x.pow(2).sum(1) / (x - x_hat).pow(2).sum(1).clamp_min(1e-12))


def test_architecture_matches_appendix_f():
    torch.manual_seed(0)
    model = UNet(in_channels=3, out_channels=3, base=48, bounds=(-1.0, 2.0))
    encoder = [(blk.conv1.in_channels, blk.conv1.out_channels, blk.conv2.out_channels) for blk in model.encoder_blocks]
    assert encoder == [(3, 48, 48), (48, 96, 96), (96, 192, 192), (192, 384, 384)]
    decoder = [(blk.conv1.in_channels, blk.conv2.out_channels) for blk in model.decoder_blocks]
    assert decoder == [(384, 192), (192, 96), (96, 48)]
    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == 14 and all(m.padding == (1, 1) for m in convs3)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == 2 and p.stride == 2 for p in pools)
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.in_channels, u.out_channels, u.kernel_size, u.stride) for u in ups] == [
        (384, 192, (2, 2), (2, 2)), (192, 96, (2, 2), (2, 2)), (96, 48, (2, 2), (2, 2))]
    assert isinstance(model.head, nn.Conv2d) and model.head.kernel_size == (1, 1)
    assert (model.head.in_channels, model.head.out_channels) == (48, 3)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 14

    with torch.no_grad():
        x = 5 * torch.randn(2, 3, 32, 32)
        out = model(x)
        assert out.shape == x.shape
        assert out.min() >= -1.0 and out.max() <= 2.0
        odd = model(torch.randn(1, 3, 21, 13))  # sizes not multiple of 8: skips padded
        assert odd.shape == (1, 3, 21, 13)
        assert UNet(base=2)(torch.randn(1, 3, 224, 224)).shape == (1, 3, 224, 224)

        small = UNet(in_channels=1, out_channels=1, base=48, bounds=(0.0, 1.0))
        y = small(10 * torch.randn(4, 1, 8, 8))
        assert y.shape == (4, 1, 8, 8) and y.min() >= 0.0 and y.max() <= 1.0

        per_channel = UNet(in_channels=3, out_channels=3, base=4,
                           bounds=(torch.tensor([-1.0, -2.0, 0.0]), torch.tensor([1.0, 0.0, 0.5])))
        z = per_channel(100 * torch.randn(2, 3, 8, 8))
        for c, (lo, hi) in enumerate([(-1, 1), (-2, 0), (0, 0.5)]):
            assert z[:, c].min() >= lo and z[:, c].max() <= hi
    with pytest.raises(ValueError, match="H, W >= 8"):
        small(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="expects"):
        small(torch.zeros(1, 3, 8, 8))


def test_total_variation_is_anisotropic_mean():
    z = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
    # vertical |3-0|, |5-1| -> mean 3.5; horizontal |1-0|, |5-3| -> mean 1.5
    assert float(total_variation(z)) == pytest.approx(5.0)


def test_public_mixtures_are_algorithm_1_on_public_data(digits):
    public = digits[:300]
    labels = torch.zeros(300, dtype=torch.long)
    stats = data_statistics(public)
    for tau, mode in [(1e-2, "clamped"), (1.0, "strict")]:
        pairs = public_mixtures(public, tau=tau, alpha=ALPHA, noise_mode=mode, valid_range=(0.0, 1.0),
                                generator=torch.Generator().manual_seed(5))
        radius = noise_multiplier(tau=tau, alpha=ALPHA, dim=64, c=stats.c, formula="paper") * stats.D
        assert pairs.radius == pytest.approx(radius, rel=1e-12)
        assert pairs.release.radius == pytest.approx(radius, rel=1e-12)
        direct = singularized_mixup(public, labels, radius=radius, alpha=ALPHA,
                                    generator=torch.Generator().manual_seed(5),
                                    clamp=(0.0, 1.0) if mode == "clamped" else None, num_classes=1)
        assert torch.equal(pairs.inputs, direct.x)
        assert torch.equal(pairs.release.partner, direct.partner)
        assert torch.equal(pairs.targets, public)
        assert pairs.inputs.shape == public.shape

    code = public_mixtures(public, tau=1.0, alpha=ALPHA, noise_mode="strict", valid_range=None,
                           generator=torch.Generator().manual_seed(0), mf_formula="paper-code")
    assert code.radius == pytest.approx(
        noise_multiplier(tau=1.0, alpha=ALPHA, dim=64, c=stats.c, formula="paper-code") * stats.D)


def test_strict_and_clamped_differ_and_partners_align_across_tau(digits):
    public = digits[:200]

    def draw(tau, mode, seed=3):
        return public_mixtures(public, tau=tau, alpha=ALPHA, noise_mode=mode, valid_range=(0.0, 1.0),
                               generator=torch.Generator().manual_seed(seed))

    strict, clamped = draw(1e-2, "strict"), draw(1e-2, "clamped")
    assert torch.equal(strict.release.partner, clamped.release.partner)
    assert not torch.allclose(strict.inputs, clamped.inputs)
    assert clamped.inputs.min() >= 0.0 and clamped.inputs.max() <= 1.0 + 1e-6
    assert strict.inputs.min() < 0.0  # unclipped noise leaves the valid range

    loose, tight = draw(1.0, "clamped"), draw(1e-4, "clamped")
    assert torch.equal(loose.release.partner, tight.release.partner)
    assert torch.equal(loose.release.weights, tight.release.weights)
    assert tight.radius > loose.radius
    assert not torch.equal(draw(1.0, "clamped", seed=4).release.partner, loose.release.partner)

    flat = public.reshape(200, 64)  # digits loader rows; per-coordinate bounds accepted
    flat_pairs = public_mixtures(flat, tau=1e-2, alpha=ALPHA, noise_mode="clamped",
                                 valid_range=(torch.zeros(64), torch.ones(64)),
                                 generator=torch.Generator().manual_seed(3))
    assert torch.equal(flat_pairs.inputs.reshape(public.shape), clamped.inputs)

    with pytest.raises(ValueError, match="noise_mode"):
        MixtureSampler(public, tau=1.0, alpha=ALPHA, noise_mode="loose", valid_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="valid_range"):
        MixtureSampler(public, tau=1.0, alpha=ALPHA, noise_mode="clamped", valid_range=None)


def test_training_reduces_loss_and_beats_the_mixed_input(digits):
    public, private = _split(digits)
    trained = train_unet_attacker(public, tau=1.0, noise_mode="clamped", valid_range=(0.0, 1.0),
                                  epochs=8, batch_size=32, lr=3e-3, base=8, seed=0, progress=False)
    assert len(trained.history) == 8 and len(trained.l1_history) == 8
    assert trained.history[-1] < 0.7 * trained.history[0]
    assert trained.image_shape == (1, 8, 8) and trained.noise_mode == "clamped"

    # Zero-shot on a held-out "private" release of the same mechanism (radius calibrated on
    # the private data, another mixing seed).
    observed, knowledge = _private_release(private, tau=1.0, noise_mode="clamped")
    rec = UNetAttack(trained, batch_size=64).reconstruct(observed, knowledge)
    baseline = float(_snr_db(private, observed.x).mean())  # return the mixed input itself
    attacked = float(_snr_db(private, rec.x).mean())
    assert attacked > baseline + 2.5, (attacked, baseline)
    assert rec.x.min() >= 0.0 and rec.x.max() <= 1.0


def test_training_in_strict_mode(digits):
    public, private = _split(digits)
    trained = train_unet_attacker(public, tau=1.0, noise_mode="strict", valid_range=(0.0, 1.0),
                                  epochs=3, batch_size=64, lr=3e-3, base=8, seed=0, progress=False,
                                  remix_every_epoch=False)
    assert trained.history[-1] < trained.history[0]
    observed, knowledge = _private_release(private, tau=1.0, noise_mode="strict")
    rec = UNetAttack(trained).reconstruct(observed, knowledge)
    # Unclipped noise of radius m_f D leaves the mixed input far from the sample; the
    # network's output stays in the valid range and is much closer.
    assert float(_snr_db(private, rec.x).mean()) > float(_snr_db(private, observed.x).mean()) + 10.0


def test_reconstruct_signature_and_shapes(digits):
    sig = inspect.signature(UNetAttack.reconstruct)
    assert list(sig.parameters) == ["self", "observed", "knowledge"]
    assert UNetAttack.name == "unet"

    private = digits[:40]
    observed, knowledge = _private_release(private, tau=1e-2, noise_mode="strict")
    torch.manual_seed(0)
    attack = UNetAttack(UNet(in_channels=1, out_channels=1, base=4), batch_size=16)
    rec = attack.reconstruct(observed, knowledge)
    assert isinstance(rec, Reconstruction) and rec.method == "unet"
    assert rec.x.shape == observed.x.shape == (40, 1, 8, 8)
    assert rec.x.min() >= 0.0 and rec.x.max() <= 1.0  # knowledge.valid_range clamps
    assert rec.details["zero_shot"] is True

    flat_observed = ObservedRelease(x=observed.x.reshape(40, 64), y=observed.y, sample_shape=(64,))
    flat_rec = attack.reconstruct(flat_observed, knowledge)
    assert flat_rec.x.shape == flat_observed.x.shape == (40, 64)
    torch.testing.assert_close(flat_rec.x, rec.x.reshape(40, 64))

    with pytest.raises(ValueError, match="channels"):
        three = ObservedRelease(x=torch.rand(4, 3, 8, 8), y=torch.ones(4, 1), sample_shape=(3, 8, 8))
        attack.reconstruct(three, knowledge)
    with pytest.raises(ValueError, match="square"):
        odd = ObservedRelease(x=torch.rand(4, 60), y=torch.ones(4, 1), sample_shape=(60,))
        attack.reconstruct(odd, knowledge)


def test_reconstruct_checks_rows_against_sample_shape():
    attack = UNetAttack(UNet(in_channels=1, out_channels=1, base=4))
    knowledge = AttackerKnowledge(weights=None, partner=None, radius=None, noise_mode="strict",
                                  valid_range=None, description="")

    class Loose:  # an observed release that skipped ObservedRelease's own checks
        x = torch.rand(4, 65)
        y = torch.ones(4, 1)
        sample_shape = (1, 8, 8)

    with pytest.raises(ValueError, match="sample_shape"):
        attack.reconstruct(Loose(), knowledge)


def test_seeds_give_different_attackers(digits):
    public, private = _split(digits)
    observed, knowledge = _private_release(private[:64], tau=1e-2, noise_mode="clamped")
    recs = nonlinear_attack_over_seeds(public[:256], observed, knowledge, seeds=[0, 1], tau=1e-2,
                                       epochs=1, base=4, batch_size=64, progress=False)
    assert len(recs) == 2 and all(r.x.shape == observed.x.shape for r in recs)
    assert [r.details["seed"] for r in recs] == [0, 1]
    assert not torch.allclose(recs[0].x, recs[1].x)
    again = nonlinear_attack_over_seeds(public[:256], observed, knowledge, seeds=[0], tau=1e-2,
                                        epochs=1, base=4, batch_size=64, progress=False)
    torch.testing.assert_close(again[0].x, recs[0].x)


def test_attack_built_from_public_data_trains_once_and_matches_train_unet_attacker(digits):
    """The registry's way to build the U-Net attack (public data and training settings, no
    network yet) trains on the first reconstruct exactly as train_unet_attacker does,
    taking the imitated noise mode and valid range from the attacked knowledge."""
    public, private = _split(digits)
    observed, knowledge = _private_release(private[:64], tau=1e-2, noise_mode="clamped")
    training = {"tau": 1e-2, "epochs": 1, "base": 4, "batch_size": 64, "seed": 3, "progress": False}
    lazy = ATTACKS.create("unet", public_x=public[:256], training=training, batch_size=32)
    assert isinstance(lazy, UNetAttack) and lazy.model is None
    rec = lazy.reconstruct(observed, knowledge)
    direct = train_unet_attacker(public[:256], noise_mode="clamped", valid_range=(0.0, 1.0), **training)
    assert torch.equal(rec.x, direct.attack(batch_size=32).reconstruct(observed, knowledge).x)
    assert lazy.trained.noise_mode == "clamped" and rec.details["seed"] == 3
    network = lazy.model
    assert torch.equal(lazy.reconstruct(observed, knowledge).x, rec.x) and lazy.model is network  # no retraining

    with pytest.raises(ValueError, match="public_x"):
        UNetAttack()
    with pytest.raises(ValueError, match="tau"):
        UNetAttack(public_x=public[:16], training={"epochs": 1})
    with pytest.raises(ValueError, match="device"):
        UNetAttack(public_x=public[:16], training={"tau": 1.0, "device": "cpu"})
    with pytest.raises(ValueError, match="not both"):
        UNetAttack(network, public_x=public[:16], training={"tau": 1.0})
    with pytest.raises(ValueError, match="noise_mode"):
        UNetAttack(public_x=public[:16], training={"tau": 1.0, "valid_range": None}).fit()
