"""Threat-model API, the attack interface and registry, linear inversion attack, LPIPS post-filter and evaluation."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch

from attacks import ATTACKS
from attacks.base import Attack
from attacks.evaluation import evaluate_reconstruction, reidentification_rate
from attacks.gradient_inversion import InvertingGradientsAttack
from attacks.instahide import CarliniInstaHideAttack, InstaHideKnowledge
from attacks.linear import LinearInversionAttack, reference_loss
from attacks.lpips_filter import FilterResult, lpips_filter
from attacks.metrics import snr_db
from attacks.threat_model import (
    AttackerKnowledge,
    ObservedRelease,
    Reconstruction,
    grant_knowledge,
    observe,
)
from attacks.unet import UNetAttack
from attacks.update_threat_model import GradientAttackerKnowledge, ObservedUpdate
from common.mixup import singularized_mixup
from common.registry import UnknownVariant

SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These problems are small: one thread runs them several times faster than two threads
    contended by other processes of the shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _release(x, *, radius, seed=1, clamp=None, alpha=0.7):
    n = x.shape[0]
    y = torch.arange(n) % 3
    return singularized_mixup(
        x, y, radius=radius, alpha=alpha, generator=torch.Generator().manual_seed(seed), clamp=clamp, num_classes=3
    )


def _images(n=64, seed=0, shape=SHAPE):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def _attack_inputs(x, *, radius, noise_mode="strict", seed=1, **grant):
    clamp = (0.0, 1.0) if noise_mode == "clamped" else None
    release = _release(x, radius=radius, seed=seed, clamp=clamp)
    observed = observe(release, sample_shape=tuple(x.shape[1:]))
    knowledge = grant_knowledge(release, noise_mode=noise_mode, valid_range=(0.0, 1.0), **grant)
    return release, observed, knowledge


# -- threat model as data -------------------------------------------------------------------


# The four attacks of the package: registered name -> (class, observed type, knowledge type).
ATTACK_TYPES = {
    "linear": (LinearInversionAttack, ObservedRelease, AttackerKnowledge),
    "unet": (UNetAttack, ObservedRelease, AttackerKnowledge),
    "carlini-instahide": (CarliniInstaHideAttack, ObservedRelease, InstaHideKnowledge),
    "inverting-gradients": (InvertingGradientsAttack, ObservedUpdate, GradientAttackerKnowledge),
}


def test_registry_names_every_attack_and_resolves_import_references():
    assert sorted(ATTACKS.names()) == sorted(ATTACK_TYPES)
    for name, (cls, _, _) in ATTACK_TYPES.items():
        assert ATTACKS.get(name) is cls and name in ATTACKS
    assert ATTACKS.get("attacks.linear:LinearInversionAttack") is LinearInversionAttack
    with pytest.raises(UnknownVariant, match="carlini-instahide"):  # the message lists the known ones
        ATTACKS.get("deep-leakage")
    with pytest.raises(UnknownVariant, match="not registered"):
        ATTACKS.get("attacks.linear:reference_loss")
    made = ATTACKS.create("linear", steps=7, lr=0.01)
    assert isinstance(made, LinearInversionAttack) and (made.steps, made.lr) == (7, 0.01)


@pytest.mark.parametrize("name", sorted(ATTACK_TYPES))
def test_every_attack_implements_the_one_interface(name):
    cls = ATTACKS.get(name)
    expected_cls, observed_type, knowledge_type = ATTACK_TYPES[name]
    assert issubclass(cls, Attack) and cls.name == name
    assert (cls.observes, cls.requires) == (observed_type, knowledge_type)
    parameters = list(inspect.signature(cls.reconstruct).parameters.values())
    assert [p.name for p in parameters] == ["self", "observed", "knowledge"]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters)
    hints = inspect.get_annotations(cls.reconstruct, eval_str=True)
    assert hints["observed"] is observed_type and hints["knowledge"] is knowledge_type
    assert hints["return"] is Reconstruction
    # Nothing the attack receives has a field through which a private input could pass.
    for t in (observed_type, knowledge_type):
        assert t.__dataclass_params__.frozen
        for f in dataclasses.fields(t):
            assert not any(word in f.name for word in ("orig", "clean", "noise_vec", "secret", "sign", "mask"))


def test_attack_interface_is_enforced_when_a_class_is_defined():
    with pytest.raises(TypeError, match="'name'"):
        class Nameless(Attack):  # noqa: F841 - defining it is the test
            observes, requires = ObservedRelease, AttackerKnowledge

            def reconstruct(self, observed, knowledge):
                return Reconstruction(x=observed.x, method="", details={})
    with pytest.raises(TypeError, match="requires"):
        class Unknowing(Attack):  # noqa: F841
            name, observes = "unknowing", ObservedRelease

            def reconstruct(self, observed, knowledge):
                return Reconstruction(x=observed.x, method=self.name, details={})
    with pytest.raises(TypeError, match="exactly"):
        class Peeking(Attack):  # noqa: F841 - a third argument could carry the originals
            name, observes, requires = "peeking", ObservedRelease, AttackerKnowledge

            def reconstruct(self, observed, knowledge, originals):
                return Reconstruction(x=originals, method=self.name, details={})

    class Partial(Attack):  # abstract: no reconstruct yet, so no class attributes needed
        pass

    with pytest.raises(TypeError, match="abstract"):
        Partial()


def test_attack_accepts_only_its_declared_types():
    x = _images(8)
    _, observed, knowledge = _attack_inputs(x, radius=0.0)
    assert LinearInversionAttack.accepts(observed, knowledge)
    assert not CarliniInstaHideAttack.accepts(observed, knowledge)
    assert not InvertingGradientsAttack.accepts(observed, knowledge)
    assert not LinearInversionAttack.accepts(observed.x, knowledge)


def test_threat_model_fields_are_exactly_the_released_ones():
    assert [f.name for f in dataclasses.fields(ObservedRelease)] == ["x", "y", "sample_shape"]
    assert [f.name for f in dataclasses.fields(AttackerKnowledge)] == [
        "weights", "partner", "radius", "noise_mode", "valid_range", "description",
    ]
    assert [f.name for f in dataclasses.fields(Reconstruction)] == ["x", "method", "details"]
    for cls in (ObservedRelease, AttackerKnowledge):
        assert cls.__dataclass_params__.frozen
        for f in dataclasses.fields(cls):
            assert not any(word in f.name for word in ("orig", "private", "clean", "noise_vec", "secret"))


def test_observe_and_grant_make_detached_cpu_copies():
    x = _images(8)
    release = _release(x, radius=0.5)
    observed = observe(release, sample_shape=SHAPE)
    knowledge = grant_knowledge(release, noise_mode="strict", valid_range=(0.0, 1.0))
    assert observed.x.shape == (8, *SHAPE) and observed.sample_shape == SHAPE
    assert torch.equal(observed.x.reshape(8, -1), release.x.reshape(8, -1))
    assert torch.equal(observed.y, release.y)
    assert torch.equal(knowledge.weights, release.weights) and torch.equal(knowledge.partner, release.partner)
    assert knowledge.radius == release.radius and knowledge.valid_range == (0.0, 1.0)
    assert "conservative" in knowledge.description
    before = observed.x.clone()
    release.x.add_(1.0)
    release.weights.add_(1.0)
    assert torch.equal(observed.x, before)
    assert not torch.equal(knowledge.weights, release.weights)
    for t in (observed.x, observed.y, knowledge.weights, knowledge.partner):
        assert t.device.type == "cpu" and not t.requires_grad


def test_grant_knowledge_partial_and_mode_checks():
    release = _release(_images(6), radius=0.1)
    knowledge = grant_knowledge(release, noise_mode="strict", valid_range=None, weights=False, radius=False)
    assert knowledge.weights is None and knowledge.radius is None and knowledge.partner is not None
    assert knowledge.valid_range is None
    with pytest.raises(ValueError, match="contradicts"):
        grant_knowledge(release, noise_mode="clamped", valid_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="noise_mode"):
        grant_knowledge(release, noise_mode="loose", valid_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="sample_shape"):
        observe(release, sample_shape=(1, 8, 7))


# -- linear inversion attack ----------------------------------------------------------------


def test_linear_attack_recovers_noiseless_mixtures():
    x = _images(64)
    _, observed, knowledge = _attack_inputs(x, radius=0.0)
    rec = LinearInversionAttack().reconstruct(observed, knowledge)  # paper defaults: 200 steps, lr 0.05
    assert rec.x.shape == x.shape and rec.method == "linear"
    assert snr_db(x, rec.x).mean() > 20.0
    # Without the image priors the noiseless system is solved to high accuracy.
    exact = LinearInversionAttack(steps=1000, tv_weight=0.0, l2_weight=0.0).reconstruct(observed, knowledge)
    assert snr_db(x, exact.x).mean() > 35.0


def test_linear_attack_fails_under_large_strict_noise():
    x = _images(64)
    _, observed0, knowledge0 = _attack_inputs(x, radius=0.0)
    radius = 50.0 * float(x.flatten(1).norm(dim=1).mean())
    _, observed, knowledge = _attack_inputs(x, radius=radius)
    clean = snr_db(x, LinearInversionAttack().reconstruct(observed0, knowledge0).x).mean()
    noisy = snr_db(x, LinearInversionAttack().reconstruct(observed, knowledge).x).mean()
    assert noisy < 5.0
    assert clean - noisy > 15.0


def test_linear_attack_clamped_mode_and_flat_samples():
    x = _images(40, shape=(64,))
    _, observed, knowledge = _attack_inputs(x, radius=0.0, noise_mode="clamped")
    rec = LinearInversionAttack().reconstruct(observed, knowledge)
    assert rec.details["tv_used"] is False and rec.details["noise_mode"] == "clamped"
    assert snr_db(x, rec.x).mean() > 20.0


def test_linear_attack_stays_in_per_coordinate_valid_range():
    x = _images(16)
    release = _release(x, radius=5.0)
    observed = observe(release, sample_shape=SHAPE)
    lo = torch.full((64,), 0.1)
    hi = torch.linspace(0.5, 0.9, 64)
    knowledge = grant_knowledge(release, noise_mode="strict", valid_range=(lo, hi))
    rec = LinearInversionAttack(steps=20).reconstruct(observed, knowledge)
    flat = rec.x.reshape(16, -1)
    assert bool((flat >= lo - 1e-7).all()) and bool((flat <= hi + 1e-7).all())


@pytest.mark.parametrize("shape", [SHAPE, (3, 5, 7), (12,)])
@pytest.mark.parametrize("chunk", [None, 7])
def test_linear_attack_gradient_matches_autograd(shape, chunk):
    n = 20
    gen = torch.Generator().manual_seed(3)
    X = torch.rand(n, *shape, generator=gen, dtype=torch.float64)
    target = torch.rand(n, *shape, generator=gen, dtype=torch.float64)
    release = _release(X, radius=0.0)
    attack = LinearInversionAttack(tv_weight=0.3, l2_weight=0.2)
    leaf = X.clone().requires_grad_(True)
    loss = reference_loss(leaf, target, release.weights, release.partner, tv_weight=0.3, l2_weight=0.2)
    loss.backward()
    mine = X.clone().requires_grad_(True)
    view = (n,) + (1,) * len(shape)
    totals = attack._accumulate(
        mine, target, release.weights[:, 0].reshape(view), release.weights[:, 1].reshape(view), release.partner,
        chunk or n, 1.0 / (n * X[0].numel()), len(shape) >= 2,
    )
    assert totals["total"] == pytest.approx(float(loss.detach()), rel=1e-12, abs=1e-15)
    torch.testing.assert_close(mine.grad, leaf.grad, rtol=1e-10, atol=1e-15)


def test_linear_attack_chunking_does_not_change_the_result():
    x = _images(50)
    _, observed, knowledge = _attack_inputs(x, radius=0.3)
    a = LinearInversionAttack(steps=30).reconstruct(observed, knowledge).x
    b = LinearInversionAttack(steps=30, batch_rows=7).reconstruct(observed, knowledge).x
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("missing", ["weights", "partner"])
def test_linear_attack_names_missing_knowledge(missing):
    _, observed, knowledge = _attack_inputs(_images(8), radius=0.0, **{missing: False})
    with pytest.raises(ValueError, match=missing):
        LinearInversionAttack(steps=1).reconstruct(observed, knowledge)


# -- LPIPS post-filter (party side) ---------------------------------------------------------


class _FakeMetric:
    """Stands in for LpipsMetric: same call, fixed distances."""

    calibrated = True

    def __init__(self, distances):
        self.distances = torch.tensor(distances)
        self.calls = 0

    def __call__(self, images, references):
        self.calls += 1
        assert images.shape == references.shape
        return self.distances


def test_lpips_filter_excludes_strictly_below_threshold():
    distances = [0.1, 0.7, 0.69999, 0.9, 1.2, 0.0, float("nan"), 0.95]
    images = torch.zeros(8, 1, 8, 8)
    metric = _FakeMetric(distances)
    result = lpips_filter(images, images.clone(), metric=metric, threshold=0.7)
    assert isinstance(result, FilterResult) and metric.calls == 1
    assert result.keep_mask.tolist() == [False, True, False, True, True, False, False, True]
    assert result.excluded_fraction == 4 / 8 and result.excluded_percent == 50.0
    assert result.threshold == 0.7 and result.calibrated is True
    torch.testing.assert_close(result.distances, metric.distances, equal_nan=True)
    table1 = lpips_filter(images, images, metric=_FakeMetric(distances), threshold=0.9)
    assert table1.keep_mask.tolist() == [False, False, False, True, True, False, False, True]
    assert table1.excluded_fraction == 5 / 8


def test_lpips_filter_requires_threshold_and_matching_shapes():
    images = torch.zeros(2, 1, 8, 8)
    with pytest.raises(TypeError):
        lpips_filter(images, images, metric=_FakeMetric([1.0, 1.0]))  # no default threshold
    with pytest.raises(ValueError):
        lpips_filter(images, torch.zeros(3, 1, 8, 8), metric=_FakeMetric([1.0, 1.0]), threshold=0.7)
    result = lpips_filter(images, images, metric=lambda a, b: torch.ones(2), threshold=0.7)
    assert result.calibrated is False  # a metric without the flag is not trusted


# -- evaluation (experimenter side) ---------------------------------------------------------


def test_evaluate_reconstruction_scores_and_summaries():
    x = _images(10)
    exact = evaluate_reconstruction(Reconstruction(x=x.clone(), method="oracle", details={}), x, data_range=1.0)
    assert torch.isinf(exact.snr_db).all() and torch.allclose(exact.ssim, torch.ones(10, dtype=torch.float64))
    assert exact.lpips is None and exact.lpips_calibrated is None and "lpips" not in exact.summary

    offset = x + 0.1
    metric = _FakeMetric([0.3] * 10)
    scores = evaluate_reconstruction(
        Reconstruction(x=offset, method="shift", details={}), x.reshape(10, -1), data_range=1.0, lpips=metric
    )
    assert scores.method == "shift"
    torch.testing.assert_close(scores.psnr, torch.full((10,), 20.0, dtype=torch.float64))
    assert scores.summary["psnr"]["mean"] == pytest.approx(20.0)
    assert scores.summary["lpips"]["best"] == pytest.approx(0.3) and scores.lpips_calibrated is True
    assert set(scores.summary) == {"snr_db", "psnr", "ssim", "lpips"}

    flat = _images(5, shape=(16,))
    vec = evaluate_reconstruction(Reconstruction(x=flat * 0.5, method="half", details={}), flat, data_range=1.0)
    assert vec.ssim is None and vec.lpips is None
    torch.testing.assert_close(vec.snr_db, torch.full((5,), 20 * math.log10(2), dtype=torch.float64))


def test_reidentification_rate_noiseless_vs_huge_noise():
    n, d = 200, 256
    x = 3.0 * torch.randn(n, d, generator=torch.Generator().manual_seed(5))
    release = _release(x, radius=0.0, alpha=0.7)
    observed = observe(release, sample_shape=(d,))
    clean_rate = reidentification_rate(observed, x, release.partner)
    assert clean_rate > 0.95

    radius = 1000.0 * float(x.norm(dim=1).mean())
    noisy = _release(x, radius=radius, alpha=0.7)
    noisy_rate = reidentification_rate(observe(noisy, sample_shape=(d,)), x, noisy.partner)
    assert noisy_rate < 0.1 and clean_rate - noisy_rate > 0.8

    with pytest.raises(ValueError):
        reidentification_rate(observed, x[:10], release.partner)
