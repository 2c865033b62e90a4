"""Unit tests of DP-Mix (common.dp_mix): views, DP-SGD clipping/noise, accounting, refusals.

The Opacus contracts DP-Mix rests on are pinned in test_dp_mix_opacus.py; the refusals of
unsafe inputs and the step accounting in test_dp_mix_safety.py.
"""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn
from torch.nn import functional as F

from common.dp_mix import (
    DPTrainingResult,
    diffusion_mixup_views,
    dp_epsilon,
    load_diffusion_samples,
    self_augmentations,
    self_mixup_views,
    steps_per_epoch,
    train_local_dp_mix,
)
from common.dp_mix.trainer import _dp_mix_batches, _dp_sgd_steps, _noise_generator
from common.dp_mix.views import _beta, _distinct_pairs
from common.model import MixupClassifier
from common.training import evaluate

DIGIT_SHAPE = (1, 8, 8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _classifier(seed: int = 0, **kwargs) -> MixupClassifier:
    torch.manual_seed(seed)
    kwargs.setdefault("dropout", 0.0)
    kwargs.setdefault("norm", "layer")
    return MixupClassifier(in_dim=64, num_classes=10, **kwargs)


def _small_model(seed: int = 0) -> nn.Module:
    """A LayerNorm MLP that takes (B, V, 64) inputs, for the tests that need many steps."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, 10))


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _translate(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: ``out[c, i, j] = image[c, i + dy, j + dx]``, zero outside the image."""
    _, h, w = image.shape
    out = torch.zeros_like(image)
    out[:, max(0, -dy) : min(h, h - dy), max(0, -dx) : min(w, w - dx)] = image[
        :, max(0, dy) : min(h, h + dy), max(0, dx) : min(w, w + dx)
    ]
    return out


def _matching_shifts(view: torch.Tensor, image: torch.Tensor, max_shift: int, *, mirrored: bool = False):
    source = image.flip(-1) if mirrored else image
    rng = range(-max_shift, max_shift + 1)
    return [(dy, dx) for dy in rng for dx in rng if torch.equal(view, _translate(source, dy, dx))]


def _channel_coded(batch: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Image b is non-zero (values in [0.5, 1.5)) in channel b only: a leak across samples
    would put mass into another sample's channel."""
    images = torch.zeros(batch, channels, size, size)
    values = torch.rand(batch, size, size, generator=_gen(seed)) + 0.5
    for b in range(batch):
        images[b, b] = values[b]
    return images


# --------------------------------------------------------------------------- views


def test_self_augmentations_are_zero_padded_translations_of_the_same_image():
    images = torch.rand(3, 2, 6, 7, generator=_gen(0)) + 0.1
    views = self_augmentations(images, num_views=5, generator=_gen(1), max_shift=2)
    assert views.shape == (3, 5, 2, 6, 7)
    for b in range(3):
        for v in range(5):
            assert len(_matching_shifts(views[b, v], images[b], 2)) == 1  # exactly one translation of *its* image
    # Every shift of {-2..2}^2 is drawn (300 views: a miss has probability ~ 25 e^-12).
    one = self_augmentations(images[:1], num_views=300, generator=_gen(2), max_shift=2)
    found = {s for v in range(300) for s in _matching_shifts(one[0, v], images[0], 2)}
    assert found == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    # No shift: exact copies; same generator seed: same views.
    assert torch.equal(self_augmentations(images, num_views=4, generator=_gen(3), max_shift=0),
                       images[:, None].expand(3, 4, 2, 6, 7))
    assert torch.equal(views, self_augmentations(images, num_views=5, generator=_gen(1), max_shift=2))


def test_flips_only_when_asked():
    image = torch.rand(1, 1, 5, 5, generator=_gen(0))  # not mirror-symmetric
    plain = self_augmentations(image, num_views=64, generator=_gen(1), max_shift=0)
    assert all(torch.equal(plain[0, v], image[0]) for v in range(64))
    flipped = self_augmentations(image, num_views=64, generator=_gen(1), max_shift=0, flip=True)
    mirrored = [torch.equal(flipped[0, v], image[0].flip(-1)) for v in range(64)]
    same = [torch.equal(flipped[0, v], image[0]) for v in range(64)]
    assert all(m != s for m, s in zip(mirrored, same))  # each view is the image or its mirror
    assert 10 < sum(mirrored) < 54
    # Flips combine with shifts: every view is a translation of the image or of its mirror.
    both = self_augmentations(image, num_views=32, generator=_gen(2), max_shift=1, flip=True)
    for v in range(32):
        assert _matching_shifts(both[0, v], image[0], 1) or _matching_shifts(both[0, v], image[0], 1, mirrored=True)


def test_self_mixups_are_convex_combinations_of_views_of_the_same_sample():
    k, m = 3, 6
    images = _channel_coded(4, 4, 6, seed=0)
    views = self_mixup_views(images, num_augmentations=k, num_mixups=m, alpha=0.7, generator=_gen(1), max_shift=1)
    assert views.shape == (4, k + m, 4, 6, 6)
    for b in range(4):
        others = [c for c in range(4) if c != b]
        assert torch.count_nonzero(views[b][:, others]) == 0  # nothing from another sample
        for v in range(k):
            assert _matching_shifts(views[b, v], images[b], 1)
        for j in range(k, k + m):
            mix, found = views[b, j], False
            for p in range(k):
                for q in range(k):
                    if p == q:
                        continue
                    a, c = views[b, p], views[b, q]
                    diff = a - c
                    if diff.abs().max() == 0:
                        found |= torch.allclose(mix, a)
                        continue
                    lam = float(((mix - c) * diff).sum() / (diff * diff).sum())
                    ok = -1e-6 <= lam <= 1 + 1e-6 and torch.allclose(mix, lam * a + (1 - lam) * c, atol=1e-5)
                    found |= ok
            assert found, f"mixup {j} of sample {b} is no convex combination of two of its views"
    # K = 1: the pair is the single view with itself.
    single = self_mixup_views(images, num_augmentations=1, num_mixups=3, alpha=1.0, generator=_gen(2), max_shift=1)
    assert torch.allclose(single[:, 1:], single[:, :1].expand(-1, 3, -1, -1, -1))
    # M = 0: the self-augmentations only.
    assert self_mixup_views(images, num_augmentations=2, num_mixups=0, alpha=1.0, generator=_gen(3)).shape[1] == 2


def test_mixup_pairs_are_distinct_and_weights_beta_distributed():
    first, second = _distinct_pairs(2000, 4, 3, _gen(0))
    assert bool((first != second).all())
    assert {(int(a), int(b)) for a, b in zip(first.flatten(), second.flatten())} == {
        (a, b) for a in range(4) for b in range(4) if a != b
    }
    f1, s1 = _distinct_pairs(5, 1, 2, _gen(0))
    assert bool((f1 == 0).all() and (s1 == 0).all())
    alpha = 0.4
    lam = _beta(alpha, (40_000,), _gen(1))
    assert float(lam.min()) >= 0 and float(lam.max()) <= 1
    assert abs(float(lam.mean()) - 0.5) < 0.01
    assert abs(float(lam.var()) / (1 / (4 * (2 * alpha + 1))) - 1) < 0.03  # Var Beta(a, a) = 1 / (4 (2a + 1))
    assert torch.equal(lam, _beta(alpha, (40_000,), _gen(1)))


def test_diffusion_views_mix_one_sample_with_synthetic_samples_and_labels_accordingly():
    k, m, classes = 2, 4, 6
    images = _channel_coded(3, 4, 5, seed=0)  # private samples in channels 0..2
    labels = F.one_hot(torch.tensor([0, 1, 2]), classes).float()
    synthetic = torch.zeros(5, 4, 5, 5)
    synthetic[:, 3] = torch.rand(5, 5, 5, generator=_gen(1)) + 2.0  # synthetic samples in channel 3
    syn_labels = F.one_hot(torch.tensor([3, 4, 5, 3, 4]), classes).float()
    views, soft = diffusion_mixup_views(
        images, labels, synthetic, syn_labels, num_augmentations=k, num_mixups=m, alpha=1.0,
        generator=_gen(2), max_shift=1,
    )
    assert views.shape == (3, k + m, 4, 5, 5) and soft.shape == (3, k + m, classes)
    torch.testing.assert_close(soft.sum(-1), torch.ones(3, k + m))
    assert bool((soft >= 0).all())
    for b in range(3):
        others = [c for c in range(3) if c != b]
        assert torch.count_nonzero(views[b][:, others]) == 0  # no other private sample
        for v in range(k):
            assert torch.equal(soft[b, v], labels[b])
            assert _matching_shifts(views[b, v], images[b], 1)
        for j in range(k, k + m):
            lam = float(soft[b, j, b])
            assert 0.0 <= lam <= 1.0
            found = False
            for s in range(5):
                if not torch.allclose(soft[b, j], lam * labels[b] + (1 - lam) * syn_labels[s]):
                    continue
                for p in range(k):
                    found |= torch.allclose(views[b, j], lam * views[b, p] + (1 - lam) * synthetic[s], atol=1e-5)
            assert found, f"mixup {j} of sample {b} is no lam-mix of a self-augmentation and a synthetic sample"


def test_view_arguments_are_checked():
    images = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="num_views"):
        self_augmentations(images, num_views=0, generator=_gen(0))
    with pytest.raises(ValueError, match="max_shift"):
        self_augmentations(images, num_views=1, generator=_gen(0), max_shift=-1)
    with pytest.raises(ValueError, match="images"):
        self_augmentations(images[0], num_views=1, generator=_gen(0))
    with pytest.raises(ValueError, match="alpha"):
        self_mixup_views(images, num_augmentations=2, num_mixups=1, alpha=0.0, generator=_gen(0))
    with pytest.raises(ValueError, match="synthetic_labels_onehot"):
        diffusion_mixup_views(images, torch.eye(2), images, torch.eye(3), num_augmentations=1, num_mixups=1,
                              alpha=1.0, generator=_gen(0))


# --------------------------------------------------------------------------- DP-SGD core


def _per_sample_grads(model: nn.Module, views: torch.Tensor, targets: torch.Tensor):
    """Brute force: each sample's gradient of the mean cross-entropy over its views alone."""
    ref = copy.deepcopy(model)
    grads, losses = [], []
    for i in range(views.shape[0]):
        ref.zero_grad()
        loss = F.cross_entropy(ref(views[i]), targets[i].expand(views.shape[1]))
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in ref.parameters()]))
        losses.append(float(loss.detach()))
    return torch.stack(grads), losses


def _fixed_batch(b: int = 6, v: int = 3, seed: int = 0):
    g = _gen(seed)
    return torch.rand(b, v, 64, generator=g), torch.randint(0, 10, (b,), generator=g)


@pytest.mark.parametrize("clip", ["median", "tiny"])
def test_one_step_equals_brute_force_clipped_sum_over_expected_batch(clip):
    views, targets = _fixed_batch()
    model = _classifier(0)
    grads, losses = _per_sample_grads(model, views, targets)
    norms = grads.norm(dim=1)
    ordered = norms.sort().values
    c = float(ordered[2] + ordered[3]) / 2 if clip == "median" else 1e-4  # half clipped, away from ties
    lr, expected_batch = 0.5, 8  # divided by the *expected* batch size, not the 6 sampled
    factors = (c / (norms + 1e-6)).clamp(max=1.0)  # Opacus' flat clip
    expected = -lr * (factors[:, None] * grads).sum(0) / expected_batch
    before = _flat(model)
    loss_sum, samples, clipped, steps = _dp_sgd_steps(
        model, [(views, targets)], lr=lr, noise_multiplier=0.0, max_grad_norm=c,
        expected_batch_size=expected_batch, noise_generator=_gen(1), optimizer="sgd",
    )
    delta = _flat(model) - before
    torch.testing.assert_close(delta, expected, rtol=1e-3, atol=1e-7)
    assert (samples, steps) == (6, 1)
    assert clipped == int((norms > c).sum())
    assert loss_sum == pytest.approx(sum(losses), rel=1e-5)
    if clip == "median":
        assert clipped == 3
    else:
        assert clipped == 6
        assert bool(((factors[:, None] * grads).norm(dim=1) <= c * (1 + 1e-5)).all())  # each within C (float32)
        assert float(delta.norm()) <= lr * 6 * c / expected_batch * (1 + 1e-4)


def test_noise_std_is_lr_sigma_c_over_expected_batch_and_seeded():
    views, targets = _fixed_batch(b=4)
    lr, sigma, c, expected_batch = 0.1, 50.0, 1.0, 16
    deltas = []
    for seed in (1, 2, 1):
        model = _classifier(0)
        before = _flat(model)
        _dp_sgd_steps(model, [(views, targets)], lr=lr, noise_multiplier=sigma, max_grad_norm=c,
                      expected_batch_size=expected_batch, noise_generator=_gen(seed), optimizer="sgd")
        deltas.append(_flat(model) - before)
    assert torch.equal(deltas[0], deltas[2])  # same noise seed, same update
    diff = deltas[0] - deltas[1]  # the (identical) clipped signal cancels: pure noise difference
    target = lr * sigma * c / expected_batch
    assert float(diff.std()) / math.sqrt(2) == pytest.approx(target, rel=0.02)
    assert abs(float(diff.mean())) < 5 * math.sqrt(2) * target / math.sqrt(diff.numel())


def test_empty_batch_takes_a_pure_noise_step():
    empty = (torch.zeros(0, 3, 64), torch.zeros(0, dtype=torch.long))
    lr, sigma, c, expected_batch = 0.2, 5.0, 0.5, 10
    model = _classifier(0)
    before = _flat(model)
    loss_sum, samples, clipped, steps = _dp_sgd_steps(
        model, [empty], lr=lr, noise_multiplier=sigma, max_grad_norm=c, expected_batch_size=expected_batch,
        noise_generator=_gen(3), optimizer="sgd",
    )
    delta = _flat(model) - before
    assert (loss_sum, samples, clipped, steps) == (0.0, 0, 0, 1)
    assert float(delta.std()) == pytest.approx(lr * sigma * c / expected_batch, rel=0.02)
    quiet = _classifier(0)
    _dp_sgd_steps(quiet, [empty], lr=lr, noise_multiplier=0.0, max_grad_norm=c, expected_batch_size=expected_batch,
                  noise_generator=_gen(3), optimizer="sgd")
    assert torch.equal(_flat(quiet), before)


def test_proximal_term_is_added_after_clipping_and_noise():
    views, targets = _fixed_batch(b=5)
    lr, mu, c, expected_batch = 0.01, 10.0, 1e-6, 5
    anchor_model = _classifier(0)
    anchor = [p.detach().clone() for p in anchor_model.parameters()]
    runs = {}
    for prox in (0.0, mu):
        model = _classifier(0)
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.add_(0.05 * torch.randn(p.shape, generator=_gen(100 + i)))
        start = _flat(model)
        _dp_sgd_steps(model, [(views, targets)], lr=lr, noise_multiplier=0.0, max_grad_norm=c,
                      expected_batch_size=expected_batch, noise_generator=_gen(1), optimizer="sgd",
                      proximal_mu=prox, global_params=anchor)
        runs[prox] = _flat(model) - start
    offset = start - torch.cat([a.reshape(-1) for a in anchor])
    # The clipped data step is tiny (<= lr * B * C / E); the proximal pull is not clipped.
    assert float(runs[0.0].norm()) <= lr * 5 * c / expected_batch * (1 + 1e-4)
    torch.testing.assert_close(runs[mu] - runs[0.0], -lr * mu * offset, rtol=1e-4, atol=1e-6)  # float32 rounding of w
    assert float(runs[mu].norm()) > 1e3 * lr * c


def test_secure_mode_refuses_seeded_noise_and_draws_urandom_noise_of_the_right_std():
    views, targets = _fixed_batch(b=2)
    with pytest.raises(ValueError, match="secure mode"):
        _dp_sgd_steps(_classifier(0), [(views, targets)], lr=0.1, noise_multiplier=1.0, max_grad_norm=1.0,
                      expected_batch_size=2, noise_generator=_gen(0), secure_mode=True)
    lr, sigma, c, expected_batch = 0.1, 30.0, 1.0, 8
    deltas = []
    for _ in range(2):
        model = _classifier(0)
        before = _flat(model)
        _dp_sgd_steps(model, [(views, targets)], lr=lr, noise_multiplier=sigma, max_grad_norm=c,
                      expected_batch_size=expected_batch, noise_generator=None, secure_mode=True, optimizer="sgd")
        deltas.append(_flat(model) - before)
    diff = deltas[0] - deltas[1]  # not reproducible: fresh noise from os.urandom
    assert float(diff.std()) / math.sqrt(2) == pytest.approx(lr * sigma * c / expected_batch, rel=0.02)


# --------------------------------------------------------------------------- the trainer


def test_trainer_equals_the_core_on_replayed_poisson_batches_and_leaves_a_plain_model():
    g = _gen(11)
    x = torch.rand(5, 64, generator=g)
    y = torch.randint(0, 10, (5,), generator=g)
    kwargs = dict(lr=0.5, noise_multiplier=0.7, max_grad_norm=0.5, proximal_mu=0.3, weight_decay=1e-3,
                  optimizer="sgd")
    model = _classifier(0)
    model.eval()
    keys = list(model.state_dict())
    result = train_local_dp_mix(
        model, x, y, sample_shape=DIGIT_SHAPE, epochs=2, batch_size=5, num_augmentations=2, num_mixups=2,
        alpha=1.0, generator=_gen(7), max_shift=1, **kwargs,
    )
    assert isinstance(result, DPTrainingResult)
    assert (result.steps, result.sample_rate) == (2, 1.0)  # batch_size >= N: q = 1, every record every step
    assert (result.noise_multiplier, result.max_grad_norm) == (0.7, 0.5)
    # Replay: the noise seed is drawn first, then each step's Poisson mask and views.
    replay = _gen(7)
    noise = _noise_generator(replay, torch.device("cpu"))
    batches = list(_dp_mix_batches(
        x, y, sample_shape=DIGIT_SHAPE, steps=2, sample_rate=1.0, num_augmentations=2, num_mixups=2, alpha=1.0,
        generator=replay, sampling=replay, max_shift=1, flip=False, synthetic=None,
    ))
    for views, targets in batches:
        assert views.shape == (5, 4, 64)
        assert torch.equal(targets, y)  # labels unchanged by self-mixup
    twin = _classifier(0)
    loss_sum, samples, clipped, steps = _dp_sgd_steps(twin, batches, expected_batch_size=5, noise_generator=noise,
                                                      **kwargs)
    torch.testing.assert_close(_flat(model), _flat(twin), rtol=0, atol=1e-6)
    assert result.mean_loss == pytest.approx(loss_sum / samples, rel=1e-5)
    assert result.clipped_share == clipped / samples
    # The caller's model is a plain module again.
    assert type(model) is MixupClassifier and list(model.state_dict()) == keys
    assert not model.training  # mode restored
    for p in model.parameters():
        assert p.grad is None
        assert not any(hasattr(p, a) for a in ("grad_sample", "summed_grad", "_forward_counter"))
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks and not module._forward_pre_hooks
        assert "activations" not in vars(module)


def test_trainer_counts_every_poisson_step_and_is_reproducible():
    g = _gen(0)
    x = torch.rand(3, 1, 8, 8, generator=g)  # (N, *sample_shape) rows are accepted too
    y = torch.randint(0, 10, (3,), generator=g)
    outs = []
    for _ in range(2):
        model = _small_model(0)
        r = train_local_dp_mix(model, x, y, sample_shape=DIGIT_SHAPE, epochs=5, lr=0.1, batch_size=1,
                               noise_multiplier=1.0, max_grad_norm=1.0, num_augmentations=1, num_mixups=1,
                               alpha=1.0, generator=_gen(5))
        outs.append((r, _flat(model)))
    r = outs[0][0]
    assert r.steps == 5 * steps_per_epoch(3, 1) == 15  # empty batches (probability 8/27 each) included
    assert r.sample_rate == pytest.approx(1 / 3)
    assert outs[0][0] == outs[1][0] and torch.equal(outs[0][1], outs[1][1])
    # Replaying the run's Poisson masks: some steps were empty, and the mean loss covers the rest.
    replay = _gen(5)
    _noise_generator(replay, torch.device("cpu"))
    sizes = [len(t) for _, t in _dp_mix_batches(
        x.reshape(3, 64), y, sample_shape=DIGIT_SHAPE, steps=15, sample_rate=1 / 3, num_augmentations=1,
        num_mixups=1, alpha=1.0, generator=replay, sampling=replay, max_shift=2, flip=False, synthetic=None,
    )]
    assert 0 in sizes and sum(sizes) > 0 and math.isfinite(r.mean_loss)


def test_secure_mode_trainer_is_not_reproducible():
    x, y = torch.rand(4, 64, generator=_gen(0)), torch.tensor([0, 1, 2, 3])
    flats = []
    for _ in range(2):
        model = _small_model(0)
        train_local_dp_mix(model, x, y, sample_shape=DIGIT_SHAPE, epochs=1, lr=0.1, batch_size=2,
                           noise_multiplier=1.0, max_grad_norm=1.0, num_augmentations=1, num_mixups=0, alpha=1.0,
                           generator=_gen(0), secure_mode=True)
        flats.append(_flat(model))
    assert not torch.equal(flats[0], flats[1])


def test_dp_mix_diff_trainer_uses_soft_labels_of_synthetic_mixups():
    g = _gen(0)
    x = torch.rand(12, 64, generator=g)
    y = torch.randint(0, 4, (12,), generator=g)
    syn_x, syn_y = torch.rand(8, 1, 8, 8, generator=g), F.one_hot(torch.arange(8) % 4, 4).float()
    batches = list(_dp_mix_batches(
        x, F.one_hot(y, 4).float(), sample_shape=DIGIT_SHAPE, steps=3, sample_rate=0.5, num_augmentations=2,
        num_mixups=3, alpha=1.0, generator=g, sampling=g, max_shift=1, flip=False, synthetic=(syn_x, syn_y),
    ))
    for views, targets in batches:
        assert views.shape[1:] == (5, 64) and targets.shape == (views.shape[0], 5, 4)
        torch.testing.assert_close(targets.sum(-1), torch.ones(views.shape[0], 5))
    model = nn.Sequential(nn.Linear(64, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4))
    r = train_local_dp_mix(model, x, y, sample_shape=DIGIT_SHAPE, epochs=2, lr=0.01, batch_size=4,
                           noise_multiplier=1.0, max_grad_norm=1.0, num_augmentations=2, num_mixups=3, alpha=1.0,
                           generator=_gen(1), synthetic=(syn_x.reshape(8, 64), syn_y))
    assert r.steps == 6 and math.isfinite(r.mean_loss)
    with pytest.raises(ValueError, match="class indices"):
        train_local_dp_mix(model, x, y + 4, sample_shape=DIGIT_SHAPE, epochs=1, lr=0.01, batch_size=4,
                           noise_multiplier=1.0, max_grad_norm=1.0, num_augmentations=1, num_mixups=1, alpha=1.0,
                           generator=_gen(1), synthetic=(syn_x, syn_y))
    with pytest.raises(ValueError, match="synthetic images"):
        train_local_dp_mix(model, x, y, sample_shape=DIGIT_SHAPE, epochs=1, lr=0.01, batch_size=4,
                           noise_multiplier=1.0, max_grad_norm=1.0, num_augmentations=1, num_mixups=1, alpha=1.0,
                           generator=_gen(1), synthetic=(torch.rand(8, 3, 8, 8), syn_y))


def test_dp_mix_learns_digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    digits = sklearn_datasets.load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=_gen(0))
    train, test = order[:600], order[1000:]
    model = _small_model(0)
    _, chance = evaluate(model, x[test], y[test])
    r = train_local_dp_mix(model, x[train], y[train], sample_shape=DIGIT_SHAPE, epochs=4, lr=1e-2, batch_size=30,
                           noise_multiplier=0.5, max_grad_norm=1.0, num_augmentations=2, num_mixups=2, alpha=1.0,
                           generator=_gen(0), max_shift=1)
    _, accuracy = evaluate(model, x[test], y[test])
    assert r.steps == 4 * 20
    assert chance < 0.25 and accuracy > 0.5


# --------------------------------------------------------------------------- refusals


_VALID = dict(sample_shape=DIGIT_SHAPE, epochs=1, lr=0.1, batch_size=2, noise_multiplier=1.0, max_grad_norm=1.0,
              num_augmentations=2, num_mixups=1, alpha=1.0)


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"noise_multiplier": -0.1}, "noise_multiplier"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_augmentations": 0}, "num_augmentations"),
        ({"num_mixups": -1}, "num_mixups"),
        ({"alpha": 0.0}, "alpha"),
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"max_shift": -1}, "max_shift"),
        ({"proximal_mu": -1.0}, "proximal_mu"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"sample_shape": (1, 8, 7)}, "sample_shape"),
        ({"sample_shape": (64,)}, "sample_shape"),
    ],
)
def test_trainer_rejects_bad_arguments_by_name(override, name):
    model = _small_model(0)
    before = _flat(model)
    with pytest.raises(ValueError, match=name):
        train_local_dp_mix(model, torch.rand(4, 64), torch.tensor([0, 1, 2, 3]), generator=_gen(0),
                           **{**_VALID, **override})
    assert torch.equal(_flat(model), before)


def test_trainer_refuses_batch_norm_and_bad_labels():
    with pytest.raises(ValueError, match="BatchNorm.*norm='layer'"):
        train_local_dp_mix(_classifier(0, norm="batch"), torch.rand(4, 64), torch.tensor([0, 1, 2, 3]),
                           generator=_gen(0), **_VALID)
    with pytest.raises(ValueError, match="y"):
        train_local_dp_mix(_small_model(0), torch.rand(4, 64), torch.tensor([0, 1, 2]), generator=_gen(0), **_VALID)
    with pytest.raises(ValueError, match="y"):
        train_local_dp_mix(_small_model(0), torch.rand(4, 64), torch.rand(4), generator=_gen(0), **_VALID)


def test_load_diffusion_samples_is_local_only(tmp_path):
    common = dict(class_names=["0", "1"], per_class=1, image_shape=(1, 8, 8), seed=0)
    with pytest.raises(ValueError, match="local diffusion model path") as error:
        load_diffusion_samples("", **common)
    assert "nothing is downloaded" in str(error.value)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_diffusion_samples(str(tmp_path / "no-such-model"), **common)
    if importlib.util.find_spec("diffusers") is None:
        with pytest.raises(ImportError, match="pip install diffusers") as error:
            load_diffusion_samples(str(tmp_path), **common)
        assert "nothing is downloaded" in str(error.value)


# --------------------------------------------------------------------------- accounting


def test_dp_epsilon_matches_opacus_rdp_and_is_monotone():
    eps = dp_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=10_000, delta=1e-5)
    accountant = RDPAccountant()
    for _ in range(10_000):  # Opacus' public accounting: one step() per DP-SGD step
        accountant.step(noise_multiplier=1.0, sample_rate=0.01)
    assert eps == accountant.get_epsilon(delta=1e-5)  # the same arithmetic, bit for bit
    assert 5.0 < eps < 10.0  # ~6.7
    assert dp_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=20_000, delta=1e-5) > eps
    assert dp_epsilon(noise_multiplier=2.0, sample_rate=0.01, steps=10_000, delta=1e-5) < eps
    assert dp_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=10_000, delta=1e-6) > eps
    assert dp_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=0, delta=1e-5) == 0.0
    assert dp_epsilon(noise_multiplier=0.0, sample_rate=0.01, steps=1, delta=1e-5) == math.inf
    for bad, name in [
        (dict(noise_multiplier=-1.0), "noise_multiplier"),
        (dict(sample_rate=0.0), "sample_rate"),
        (dict(sample_rate=1.5), "sample_rate"),
        (dict(steps=-1), "steps"),
        (dict(delta=0.0), "delta"),
        (dict(delta=1.0), "delta"),
    ]:
        with pytest.raises(ValueError, match=name):
            dp_epsilon(**{**dict(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=1e-5), **bad})


def test_steps_per_epoch():
    assert steps_per_epoch(300, 32) == 10
    assert steps_per_epoch(320, 32) == 10
    assert steps_per_epoch(321, 32) == 11
    assert steps_per_epoch(5, 32) == 1
    with pytest.raises(ValueError, match="batch_size"):
        steps_per_epoch(10, 0)
    with pytest.raises(ValueError, match="n"):
        steps_per_epoch(0, 4)
