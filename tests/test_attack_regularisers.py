"""The one total-variation module every attack uses (attacks.regularisers)."""

from __future__ import annotations

import pytest
import torch

import attacks.gradient_inversion
import attacks.unet
from attacks.regularisers import has_tv, total_variation, tv_and_grad, tv_per_image

SHAPES = [(1, 8, 8), (3, 5, 7), (2, 1, 6), (2, 6, 1), (4, 4), (2, 3, 4, 5)]


def _images(shape, *, m=6, seed=0, ties=False):
    gen = torch.Generator().manual_seed(seed)
    if ties:  # three grey levels: many equal neighbours, where |.| has its kink
        return torch.randint(0, 3, (m, *shape), generator=gen).to(torch.float64)
    return torch.rand(m, *shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ties", [False, True])
def test_hand_written_gradient_matches_autograd(shape, ties):
    """tv_and_grad's gradient is the one autograd computes for sum_i tv_per_image, including
    the subgradient 0 autograd takes where neighbours are equal."""
    x = _images(shape, ties=ties)
    before = x.clone()
    leaf = x.clone().requires_grad_(True)
    reference = tv_per_image(leaf).sum()
    reference.backward()
    reference = reference.detach()
    value, grad = tv_and_grad(x, need_grad=True)
    assert torch.equal(x, before)  # the input is not modified in place
    assert grad.shape == x.shape
    assert float(value) == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-12, atol=1e-15)
    value_only, no_grad = tv_and_grad(x, need_grad=False)
    assert no_grad is None and torch.equal(value_only, value)


def test_hand_values():
    x = torch.tensor([[[[0.0, 1.0], [3.0, 3.0]]]])
    # vertical |3-0|, |3-1| -> mean 2.5; horizontal |1-0|, |3-3| -> mean 0.5
    assert float(total_variation(x)) == pytest.approx(3.0)
    assert tv_per_image(x).tolist() == pytest.approx([3.0])
    z = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
    # vertical |3-0|, |5-1| -> mean 3.5; horizontal |1-0|, |5-3| -> mean 1.5
    assert float(total_variation(z)) == pytest.approx(5.0)
    # A column image has no horizontal pairs: only the vertical mean counts.
    column = torch.tensor([[[[0.0], [2.0], [2.0]]]])
    assert float(tv_and_grad(column, need_grad=False)[0]) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_batch_mean_equals_mean_of_per_image_values(shape):
    x = _images(shape, seed=1)
    if x.ndim >= 3:
        torch.testing.assert_close(total_variation(x), tv_per_image(x).mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(tv_and_grad(x, need_grad=False)[0], tv_per_image(x).sum(), rtol=1e-12, atol=0)


def test_tv_is_a_seminorm_of_the_image():
    x = _images((3, 6, 5), seed=2)
    tv = tv_per_image(x)
    assert bool((tv > 0).all())
    torch.testing.assert_close(tv_per_image(x + 0.7), tv)  # blind to a constant offset
    torch.testing.assert_close(tv_per_image(-2.5 * x), 2.5 * tv)  # absolutely homogeneous
    y = _images((3, 6, 5), seed=3)
    assert bool((tv_per_image(x + y) <= tv + tv_per_image(y) + 1e-12).all())  # triangle inequality
    assert torch.equal(tv_per_image(torch.full((2, 3, 6, 5), 0.4)), torch.zeros(2, dtype=torch.float32))


def test_flat_samples_have_no_tv():
    assert float(total_variation(torch.rand(4, 64))) == 0.0
    assert not has_tv((64,)) and not has_tv((1, 1)) and not has_tv((3, 1, 1))
    assert has_tv((1, 8, 8)) and has_tv((8, 1)) and has_tv((2, 1, 5))


def test_every_attack_uses_this_module():
    """One implementation: the names the attack modules export are this module's functions."""
    assert attacks.unet.total_variation is total_variation
    assert attacks.gradient_inversion.total_variation is total_variation
