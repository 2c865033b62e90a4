"""Unit tests of Fed-AugMix's client-side maths (common.augmix): AugMix (Algorithm 2), its
operations, the Jensen-Shannon consistency loss (equation 6), the loss-scaling rule
(section IV-E) and the local objective (Algorithm 1, lines 4-9)."""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch
from torch import nn

import common.augmix as augmix_module
from common.augmix import AUGMIX_OPERATIONS, augmix
from common.fed_augmix_loss import FedAugMixObjective, LossScaling, jensen_shannon_consistency
from common.model import MixupClassifier
from common.training import soft_cross_entropy, train_local


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run this file on one intra-op thread, restored afterwards. The batches here are small;
    on a shared 2-core machine OpenMP threads that wait for each other cost milliseconds per
    kernel (a plain elementwise op can take 10 ms), which would measure the machine rather
    than the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` scikit-learn digits as flat rows in [0, 1] and class indices."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data[:n] / 16.0, dtype=torch.float32)
    return x, torch.tensor(data.target[:n], dtype=torch.long)


def _digit_images(n: int) -> torch.Tensor:
    return _digits(n)[0].reshape(n, 1, 8, 8)


def _per_image(level: float, n: int) -> torch.Tensor:
    return torch.full((n,), level, dtype=torch.float64)


# --------------------------------------------------------------------------- augmix: contract


@pytest.mark.parametrize(
    ("shape", "value_range"),
    [((64, 1, 8, 8), (0.0, 1.0)), ((16, 3, 32, 32), (0.0, 1.0)), ((32, 3, 12, 20), (-1.0, 1.0))],
)
def test_augmix_keeps_shape_dtype_and_range(shape, value_range):
    lo, hi = value_range
    x = lo + (hi - lo) * torch.rand(shape, generator=_gen(0))
    for dtype in (torch.float32, torch.float64):
        out = augmix(x.to(dtype), severity=10.0, generator=_gen(1), value_range=value_range)
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert torch.isfinite(out).all()
        assert out.min() >= lo and out.max() <= hi
        assert not torch.allclose(out, x.to(dtype))


def test_augmix_reproducible_from_the_generator_alone():
    x = _digit_images(32)
    a = augmix(x, severity=3.0, generator=_gen(7))
    torch.manual_seed(123)  # the global RNG plays no part
    b = augmix(x, severity=3.0, generator=_gen(7))
    assert torch.equal(a, b)
    c = augmix(x, severity=3.0, generator=_gen(8))
    assert (a - c).abs().amax(dim=(1, 2, 3)).gt(1e-4).float().mean() > 0.9  # nearly every image differs
    g = _gen(7)
    first, second = augmix(x, severity=3.0, generator=g), augmix(x, severity=3.0, generator=g)
    assert torch.equal(first, a)
    assert (first - second).abs().amax(dim=(1, 2, 3)).gt(1e-4).float().mean() > 0.9


def test_augmix_draws_independently_per_image():
    """Copies of one image in a batch get different augmentations."""
    x = _digit_images(1).expand(16, 1, 8, 8).contiguous()
    out = augmix(x, severity=3.0, generator=_gen(0))
    distinct = {tuple(row.flatten().round(decimals=5).tolist()) for row in out}
    assert len(distinct) == 16


def test_augmix_with_identity_operations_returns_the_input(monkeypatch):
    """Chains of identities: every convex combination of x is x."""
    for name in AUGMIX_OPERATIONS:
        monkeypatch.setitem(augmix_module._OPERATIONS, name, lambda x, level: x)
    x = torch.rand(20, 3, 8, 8, generator=_gen(0)) * 2 - 1
    out = augmix(x, severity=5.0, generator=_gen(1), value_range=(-1.0, 1.0))
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("alpha", "value_range"), [(1.0, (0.0, 1.0)), (4.0, (-1.0, 1.0))])
def test_skip_connection_is_a_beta_convex_combination(monkeypatch, alpha, value_range):
    """With every operation replaced by "white image", each chain outputs white, so
    ``x_aug = (sum_i b_i) * white`` and ``x_augmix = m x + (1 - m) x_aug``: the share
    ``(out - x) / (white - x)`` must be one number ``1 - m`` per image (the Dirichlet weights
    sum to 1), in [0, 1], distributed as Beta(alpha, alpha)."""
    for name in AUGMIX_OPERATIONS:
        monkeypatch.setitem(augmix_module._OPERATIONS, name, lambda x, level: torch.ones_like(x))
    lo, hi = value_range
    n = 4000
    x = lo + (hi - lo) * 0.8 * torch.rand(n, 1, 4, 4, generator=_gen(0), dtype=torch.float64)
    out = augmix(x, severity=3.0, generator=_gen(1), alpha=alpha, value_range=value_range)
    share = (out - x) / (hi - x)
    one_minus_m = share[:, 0, 0, 0]
    torch.testing.assert_close(share, one_minus_m.reshape(n, 1, 1, 1).expand_as(share), atol=1e-9, rtol=0)
    assert one_minus_m.min() >= 0 and one_minus_m.max() <= 1
    mean, var = one_minus_m.mean().item(), one_minus_m.var().item()
    assert abs(mean - 0.5) < 0.02
    expected_var = 1.0 / (4.0 * (2.0 * alpha + 1.0))  # Beta(alpha, alpha)
    assert abs(var - expected_var) < 0.1 * expected_var


def test_chain_weights_are_dirichlet():
    """Marginal of Dirichlet(alpha, alpha, alpha): Beta(alpha, 2 alpha), mean 1/3."""
    for alpha in (0.5, 1.0, 3.0):
        b = augmix_module._dirichlet(alpha, 20000, 3, _gen(0))
        torch.testing.assert_close(b.sum(dim=1), torch.ones(20000, dtype=torch.float64))
        assert (b >= 0).all()
        assert abs(b[:, 0].mean().item() - 1 / 3) < 0.01
        expected_var = 2 * alpha * alpha / ((3 * alpha) ** 2 * (3 * alpha + 1))
        assert abs(b[:, 0].var().item() - expected_var) < 0.08 * expected_var


def test_chains_draw_operations_levels_and_lengths_as_algorithm_2(monkeypatch):
    """Record every operation call: operations are uniform over the set, chain lengths are
    uniform on 1..max_depth (mean (1 + max_depth) / 2 applications per chain), levels are
    SampLevel / 10 with SampLevel in [0.1, s), with a random sign."""
    calls: dict[str, int] = dict.fromkeys(AUGMIX_OPERATIONS, 0)
    levels: list[torch.Tensor] = []

    def recorder(name):
        def op(x, level):
            calls[name] += x.shape[0]
            levels.append(level.clone())
            return x

        return op

    for name in AUGMIX_OPERATIONS:
        monkeypatch.setitem(augmix_module._OPERATIONS, name, recorder(name))
    n, width, max_depth, severity = 2000, 3, 4, 6.0
    augmix(torch.rand(n, 1, 2, 2), severity=severity, generator=_gen(0), width=width, max_depth=max_depth)
    total = sum(calls.values())
    assert abs(total / (n * width) - (1 + max_depth) / 2) < 0.05
    for name in AUGMIX_OPERATIONS:
        assert abs(calls[name] / total - 1 / len(AUGMIX_OPERATIONS)) < 0.015
    level = torch.cat(levels)
    assert level.abs().min() >= 0.01 and level.abs().max() < severity / 10
    assert abs(level.abs().mean().item() - (0.1 + severity) / 20) < 0.01  # E[U(0.1, s)] / 10
    assert abs((level > 0).double().mean().item() - 0.5) < 0.02


def test_higher_severity_moves_images_further():
    x = _digit_images(512)
    distance = [
        (augmix(x, severity=s, generator=_gen(3)) - x).abs().mean().item() for s in (0.1, 1.0, 4.0, 10.0)
    ]
    assert distance == sorted(distance) and distance[-1] > 1.3 * distance[0]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"severity": 0.05}, "severity"),
        ({"severity": 10.5}, "severity"),
        ({"severity": math.nan}, "severity"),
        ({"severity": 3.0, "width": 0}, "width"),
        ({"severity": 3.0, "max_depth": 0}, "max_depth"),
        ({"severity": 3.0, "alpha": 0.0}, "alpha"),
        ({"severity": 3.0, "alpha": -1.0}, "alpha"),
        ({"severity": 3.0, "value_range": (1.0, 0.0)}, "value_range"),
    ],
)
def test_augmix_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        augmix(torch.rand(2, 1, 8, 8), generator=_gen(0), **kwargs)


def test_augmix_rejects_bad_images():
    with pytest.raises(ValueError, match="images"):
        augmix(torch.rand(2, 64), severity=3.0, generator=_gen(0))
    with pytest.raises(ValueError, match="images"):
        augmix(torch.randint(0, 2, (2, 1, 8, 8)), severity=3.0, generator=_gen(0))
    with pytest.raises(ValueError, match="value_range"):
        augmix(torch.rand(2, 1, 8, 8) * 16, severity=3.0, generator=_gen(0))
    # The boundary values themselves are in range.
    augmix(torch.tensor([0.0, 1.0]).repeat(32).reshape(1, 1, 8, 8), severity=3.0, generator=_gen(0))


def test_augmix_is_fast_enough():
    """Vectorised over the batch: a loop over images would take far longer. Timed on one
    thread (the clients' setting, and this file's fixture), best of three so that a busy
    machine does not make it flaky. About 5 ms and 25 ms on an idle core."""

    def best(x, repeats=3):
        augmix(x, severity=3.0, generator=_gen(0))
        times = []
        for seed in range(repeats):
            start = time.perf_counter()
            augmix(x, severity=3.0, generator=_gen(seed))
            times.append(time.perf_counter() - start)
        return min(times)

    assert torch.get_num_threads() == 1
    assert best(_digit_images(256)) < 0.1
    assert best(torch.rand(128, 3, 32, 32, generator=_gen(0))) < 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmix_on_cuda_matches_cpu():
    x = torch.rand(64, 3, 16, 16, generator=_gen(0))
    cpu = augmix(x, severity=5.0, generator=_gen(1))
    gpu = augmix(x.cuda(), severity=5.0, generator=_gen(1))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- operations


def _ramp(n: int = 1, c: int = 1, h: int = 8, w: int = 8) -> torch.Tensor:
    return (torch.arange(n * c * h * w, dtype=torch.float32) / (n * c * h * w)).reshape(n, c, h, w)


def test_rotate_quarter_turn_is_counter_clockwise():
    x = torch.rand(3, 2, 8, 8, generator=_gen(0))
    out = augmix_module._rotate_degrees(x, torch.full((3,), 90.0))
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    # A lone pixel at the top-right corner ends up at the top-left corner.
    dot = torch.zeros(1, 1, 8, 8)
    dot[0, 0, 0, 7] = 1.0
    moved = augmix_module._rotate_degrees(dot, torch.tensor([90.0]))
    assert moved[0, 0, 0, 0] > 0.99 and moved.sum() == pytest.approx(1.0, abs=1e-5)
    # The level is a fraction of MaxVal = 30 degrees, and its sign picks the direction.
    torch.testing.assert_close(
        augmix_module._rotate(x, _per_image(-0.5, 3)), augmix_module._rotate_degrees(x, torch.full((3,), -15.0))
    )
    torch.testing.assert_close(augmix_module._rotate(x, _per_image(0.0, 3)), x, atol=1e-6, rtol=0)


def test_translate_shifts_whole_pixels_and_fills_black():
    x = torch.rand(2, 3, 8, 12, generator=_gen(0))
    two = torch.full((2,), 2.0, dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    right = augmix_module._translate_pixels(x, two, zero)  # out(u) = in(u + 2)
    torch.testing.assert_close(right[..., :-2], x[..., 2:], atol=1e-5, rtol=0)
    assert right[..., -2:].abs().max() < 1e-6
    down = augmix_module._translate_pixels(x, zero, -two)  # out(v) = in(v - 2)
    torch.testing.assert_close(down[:, :, 2:], x[:, :, :-2], atol=1e-5, rtol=0)
    assert down[:, :, :2].abs().max() < 1e-6
    # MaxVal is a third of the side: level 0.75 on a 12-wide image is 3 pixels.
    shifted = augmix_module._translate_x(x, _per_image(0.75, 2))
    torch.testing.assert_close(shifted[..., :-3], x[..., 3:], atol=1e-5, rtol=0)
    shifted = augmix_module._translate_y(x, _per_image(-0.75, 2))  # 8 high: 2 pixels
    torch.testing.assert_close(shifted[:, :, 2:], x[:, :, :-2], atol=1e-5, rtol=0)


def test_shear_offsets_rows_in_proportion_to_their_height():
    """``u_in = u + k v`` about the centre: on an 8x8 image row 7 sits at ``v = 3.5`` and row 0
    at ``v = -3.5``, so ``k = 2/7`` shifts them by one pixel in opposite directions."""
    x = torch.rand(1, 1, 8, 8, generator=_gen(0))
    level = _per_image(2.0 / 7.0 / 0.3, 1)  # k = level * MaxVal 0.3
    out = augmix_module._shear_x(x, level)
    torch.testing.assert_close(out[0, 0, 7, :-1], x[0, 0, 7, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, 0, 0, 1:], x[0, 0, 0, :-1], atol=1e-5, rtol=0)
    assert out[0, 0, 7, -1].abs() < 1e-6 and out[0, 0, 0, 0].abs() < 1e-6
    # shear_y is shear_x of the transposed image.
    sheared_y = augmix_module._shear_y(x, level)
    torch.testing.assert_close(sheared_y, augmix_module._shear_x(x.transpose(2, 3), level).transpose(2, 3))


def test_autocontrast_stretches_each_channel_to_the_full_range():
    x = 0.2 + 0.5 * torch.rand(4, 3, 8, 8, generator=_gen(0))
    x[1, 2] = 0.4  # a flat channel stays as it is
    out = augmix_module._autocontrast(x)
    for i, c in itertools.product(range(4), range(3)):
        if (i, c) == (1, 2):
            assert torch.equal(out[i, c], x[i, c])
            continue
        assert out[i, c].min() == 0.0 and out[i, c].max() == pytest.approx(1.0, abs=1e-6)
        # Affine per channel: the order of the values is kept.
        lo, span = x[i, c].min(), x[i, c].max() - x[i, c].min()
        torch.testing.assert_close(out[i, c], (x[i, c] - lo) / span)


def test_equalize_gives_a_flat_histogram_even_on_8x8_images():
    # 64 distinct 8-bit levels, in random positions: they must land on 64 even steps.
    levels = torch.randperm(256, generator=_gen(0))[:64].float() / 255
    x = levels[torch.randperm(64, generator=_gen(1))].reshape(1, 1, 8, 8)
    out = augmix_module._equalize(x)
    torch.testing.assert_close(out.flatten().sort().values, torch.linspace(0, 1, 64), atol=1e-6, rtol=0)
    assert torch.equal(out.flatten().argsort(), x.flatten().argsort())  # monotone map
    # Four levels, 16 pixels each (a skewed spacing): equal-mass levels become evenly spaced.
    x = torch.tensor([0.0, 0.05, 0.1, 0.9]).repeat_interleave(16).reshape(1, 1, 8, 8)
    out = augmix_module._equalize(x)
    assert sorted(set(out.flatten().tolist())) == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    # Per channel; a constant channel is left alone.
    x = torch.rand(2, 3, 32, 32, generator=_gen(2))
    x[0, 1] = 0.25
    out = augmix_module._equalize(x)
    assert torch.equal(out[0, 1], x[0, 1])
    hist = torch.histc(out[1, 0], bins=4, min=0, max=1)
    assert (hist - 256).abs().max() <= 16  # ~uniform over the quarters


def test_posterize_leaves_two_to_the_bits_levels():
    x = torch.rand(4, 1, 32, 32, generator=_gen(0))
    bits = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = augmix_module._posterize_bits(x, bits)
    for i, b in enumerate([1, 2, 3, 4]):
        values = torch.unique(out[i])
        assert values.numel() == 2**b
        steps = values * 255 / 2 ** (8 - b)  # multiples of 2^(8-b) in 8-bit units
        torch.testing.assert_close(steps, steps.round(), atol=1e-4, rtol=0)
        assert (out[i] <= x[i] + 0.5 / 255).all()  # truncation towards black
    # AugMix's convention: more severity keeps fewer bits (4 - floor(4 * level)).
    posterized = [augmix_module._posterize(x[:1], _per_image(lv, 1)) for lv in (0.1, 0.3, 0.6, 0.9)]
    counts = [torch.unique(out).numel() for out in posterized]
    assert counts == [16, 8, 4, 2]


def test_solarize_inverts_values_above_the_threshold():
    x = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    out = augmix_module._solarize(x, _per_image(0.3, 1))  # threshold 1 - 0.3
    above = x >= 0.7
    torch.testing.assert_close(out[above], 1 - x[above])
    assert torch.equal(out[~above], x[~above])
    # A tiny level flips only the brightest values; the sign of the level does not matter.
    torch.testing.assert_close(augmix_module._solarize(x, _per_image(-0.3, 1)), out)
    assert torch.equal(augmix_module._solarize(x, _per_image(0.001, 1))[x < 0.99], x[x < 0.99])


def test_operations_map_the_unit_interval_into_itself():
    x = torch.rand(18, 3, 10, 10, generator=_gen(0))
    level = torch.rand(18, generator=_gen(1), dtype=torch.float64) * 2 - 1
    for name in AUGMIX_OPERATIONS:
        out = augmix_module._OPERATIONS[name](x, level)
        assert out.shape == x.shape, name
        assert out.min() >= 0 and out.max() <= 1 + 1e-6, name


# --------------------------------------------------------------------------- JS divergence


def test_js_is_zero_for_identical_predictions_and_symmetric():
    a = torch.randn(5, 7, generator=_gen(0))
    assert jensen_shannon_consistency(a, a, a).item() == pytest.approx(0.0, abs=1e-7)
    # Same distributions through shifted logits.
    assert jensen_shannon_consistency(a, a + 3.0, a - 1.0).item() == pytest.approx(0.0, abs=1e-6)
    b, c = torch.randn(5, 7, generator=_gen(1)), torch.randn(5, 7, generator=_gen(2))
    values = [jensen_shannon_consistency(*perm).item() for perm in itertools.permutations((a, b, c))]
    assert values == pytest.approx([values[0]] * 6, rel=1e-6)
    assert values[0] > 0


def test_js_is_bounded_by_log_three():
    # Three confident predictions of three different classes approach the bound.
    logits = torch.full((3, 3), -40.0)
    logits[torch.arange(3), torch.arange(3)] = 40.0
    top = jensen_shannon_consistency(logits[0:1], logits[1:2], logits[2:3]).item()
    assert top == pytest.approx(math.log(3), abs=1e-6) and top <= math.log(3) + 1e-7
    for seed in range(20):
        trio = [20 * torch.randn(8, 10, generator=_gen(3 * seed + k)) for k in range(3)]
        value = jensen_shannon_consistency(*trio).item()
        assert 0 <= value <= math.log(3)


def test_js_matches_a_hand_computation():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], dtype=torch.float64)
    r = torch.tensor([[0.1, 0.6, 0.3], [0.25, 0.5, 0.25]], dtype=torch.float64)
    t = torch.tensor([[0.3, 0.3, 0.4], [0.6, 0.2, 0.2]], dtype=torch.float64)
    expected = 0.0
    for i in range(2):
        q = [(p[i, j] + r[i, j] + t[i, j]).item() / 3 for j in range(3)]
        for dist in (p, r, t):
            expected += sum(dist[i, j].item() * math.log(dist[i, j].item() / q[j]) for j in range(3)) / 3
    expected /= 2  # batch mean
    value = jensen_shannon_consistency(p.log(), r.log(), t.log())
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_js_passes_gradients_to_all_three_views():
    logits = [torch.randn(4, 5, generator=_gen(k), requires_grad=True) for k in range(3)]
    value = jensen_shannon_consistency(*logits)
    assert value.ndim == 0
    value.backward()
    for t in logits:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # Pulling a view towards the mixture lowers the divergence.
    with torch.no_grad():
        stepped = [t - 0.1 * t.grad for t in logits]
    assert jensen_shannon_consistency(*stepped) < value


def test_js_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="logits_aug1"):
        jensen_shannon_consistency(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="logits_orig"):
        jensen_shannon_consistency(torch.zeros(3), torch.zeros(3), torch.zeros(3))


# --------------------------------------------------------------------------- loss scaling


def test_loss_scaling_defaults_and_both_branches():
    rule = LossScaling()
    assert (rule.base_weight, rule.large_weight, rule.scale) == (50.0, 5e3, 5e4)
    # L_c > Scale * D_JS: the large weight.
    assert rule.weight(classification_loss=2.3, divergence=1e-6) == 5e3
    assert rule.uses_large_weight(classification_loss=2.3, divergence=1e-6)
    # Otherwise the base weight, re-evaluated every time (not sticky).
    assert rule.weight(classification_loss=2.3, divergence=1e-3) == 50.0
    assert rule.weight(classification_loss=2.3, divergence=1e-6) == 5e3
    # Strict inequality at the boundary.
    assert rule.weight(classification_loss=5.0, divergence=1e-4) == 50.0


def test_constant_loss_scaling_never_changes_the_weight():
    rule = LossScaling.constant(12.0)
    assert rule.is_constant and rule.large_weight == rule.base_weight == 12.0
    for divergence in (0.0, 1e-9, 1.0):
        assert rule.weight(classification_loss=2.3, divergence=divergence) == 12.0
        assert not rule.uses_large_weight(classification_loss=2.3, divergence=divergence)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"base_weight": -1.0}, "base_weight"),
        ({"large_weight": math.inf}, "large_weight"),
        ({"scale": 0.0}, "scale"),
        ({"scale": -5.0}, "scale"),
    ],
)
def test_loss_scaling_validates(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        LossScaling(**kwargs)


def test_loss_scaling_is_frozen():
    with pytest.raises(AttributeError):
        LossScaling().scale = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- objective


def _linear_model(scale: float) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.mul_(scale)
    return model.eval()


def _by_hand(model, x, y, *, seed, scaling, severity=3.0):
    g = _gen(seed)
    images = x.reshape(-1, 1, 8, 8)
    aug1 = augmix(images, severity=severity, generator=g).reshape(x.shape)
    aug2 = augmix(images, severity=severity, generator=g).reshape(x.shape)
    with torch.no_grad():
        o, o1, o2 = model(x), model(aug1), model(aug2)
    l_c = soft_cross_entropy(o, y)
    d_js = jensen_shannon_consistency(o, o1, o2)
    weight = scaling.weight(classification_loss=l_c.item(), divergence=d_js.item())
    return l_c.item(), d_js.item(), weight, (l_c + weight * d_js).item()


@pytest.mark.parametrize("soft", [False, True])
def test_objective_is_cross_entropy_plus_weighted_js(soft):
    x, y = _digits(48)
    target = nn.functional.one_hot(y, 10).float() if soft else y
    model = _linear_model(20.0)
    scaling = LossScaling()
    obj = FedAugMixObjective(sample_shape=(1, 8, 8), severity=3.0, generator=_gen(5), scaling=scaling)
    loss = obj(model, x, target)
    l_c, d_js, weight, total = _by_hand(model, x, y, seed=5, scaling=scaling)
    assert loss.item() == pytest.approx(total, rel=1e-5)
    assert d_js > 0 and l_c <= scaling.scale * d_js and weight == 50.0  # a sensitive model: base weight
    assert obj.last_classification_loss == pytest.approx(l_c, rel=1e-5)
    assert obj.last_divergence == pytest.approx(d_js, rel=1e-5)
    assert obj.summary() == {
        "steps": 1.0,
        "large_weight_steps": 0.0,
        "large_weight_share": 0.0,
        "last_weight": 50.0,
        "last_divergence": obj.last_divergence,
        "last_classification_loss": obj.last_classification_loss,
    }


def test_objective_uses_the_large_weight_while_divergence_is_negligible():
    """A near-constant (untrained-like) model: L_c ~ log 10 but D_JS ~ 0, so
    L_c > Scale * D_JS and lambda = LargeVal; a constant rule keeps lambda."""
    x, y = _digits(32)
    model = _linear_model(1e-4)
    obj = FedAugMixObjective(sample_shape=(1, 8, 8), severity=3.0, generator=_gen(1))
    loss = obj(model, x, y)
    l_c, d_js, weight, total = _by_hand(model, x, y, seed=1, scaling=LossScaling())
    assert l_c > 5e4 * d_js and weight == 5e3
    assert loss.item() == pytest.approx(total, rel=1e-5)
    assert obj.last_weight == 5e3 and obj.large_weight_steps == 1
    obj(_linear_model(20.0), x, y)  # the rule is re-evaluated at every batch
    assert obj.last_weight == 50.0
    summary = obj.summary()
    assert summary["steps"] == 2 and summary["large_weight_steps"] == 1 and summary["large_weight_share"] == 0.5

    constant = FedAugMixObjective(
        sample_shape=(1, 8, 8), severity=3.0, generator=_gen(1), scaling=LossScaling.constant(50.0)
    )
    constant(model, x, y)
    assert constant.last_weight == 50.0 and constant.large_weight_steps == 0


def test_objective_runs_the_three_views_in_one_forward_pass():
    """BatchNorm must see the original and both views together (AugMix reference code)."""
    sizes: list[int] = []
    model = _linear_model(1.0)
    model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    x, y = _digits(16)
    FedAugMixObjective(sample_shape=(1, 8, 8), severity=3.0, generator=_gen(0))(model, x, y)
    assert sizes == [48]


def test_objective_accepts_image_shaped_batches():
    x, y = _digits(16)
    model = _linear_model(20.0)
    flat = FedAugMixObjective(sample_shape=(1, 8, 8), severity=3.0, generator=_gen(2))(model, x, y)
    shaped = FedAugMixObjective(sample_shape=(1, 8, 8), severity=3.0, generator=_gen(2))(
        model, x.reshape(16, 1, 8, 8), y
    )
    assert flat.item() == pytest.approx(shaped.item(), rel=1e-6)


def test_objective_rejects_bad_inputs():
    obj = FedAugMixObjective(sample_shape=(1, 8, 8), severity=3.0, generator=_gen(0))
    with pytest.raises(ValueError, match="sample_shape"):
        obj(_linear_model(1.0), torch.rand(4, 65), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="sample_shape"):
        FedAugMixObjective(sample_shape=(64,), severity=3.0, generator=_gen(0))
    with pytest.raises(ValueError, match="severity"):
        FedAugMixObjective(sample_shape=(1, 8, 8), severity=0.0, generator=_gen(0))
    with pytest.raises(ValueError, match="width"):
        FedAugMixObjective(sample_shape=(1, 8, 8), severity=3.0, generator=_gen(0), width=0)


def test_one_local_step_lowers_the_objective():
    """``train_local`` with the objective: one AdamW step on 256 digits lowers the loss,
    measured with the same augmentations and dropout masks before and after."""
    x, y = _digits(256)
    torch.manual_seed(0)
    model = MixupClassifier(in_dim=64, num_classes=10)

    def value() -> float:
        probe = FedAugMixObjective(sample_shape=(1, 8, 8), severity=3.0, generator=_gen(123))
        model.train()  # BatchNorm on batch statistics, as in training
        torch.manual_seed(0)  # the same dropout masks every time
        with torch.no_grad():
            return probe(model, x, y).item()

    before = value()
    obj = FedAugMixObjective(sample_shape=(1, 8, 8), severity=3.0, generator=_gen(7))
    mean_loss = train_local(model, x, y, epochs=1, lr=1e-3, generator=_gen(1), objective=obj, batch_size=256)
    after = value()
    assert obj.steps == 1 and mean_loss == pytest.approx(
        obj.last_classification_loss + obj.last_weight * obj.last_divergence, rel=1e-5
    )
    assert after < 0.95 * before
