"""The Adam set-up the attacks share (attacks.optim)."""

from __future__ import annotations

import pytest
import torch

from attacks.optim import ProjectedAdam, adam, step_decay_milestones


def _leaf(seed=0, n=10):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).requires_grad_(True)


def _gradients(steps, n=10, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen) * 10.0 ** torch.randint(-3, 3, (n,), generator=gen) for _ in range(steps)]


def test_default_adam_is_pytorchs_default_construction():
    """fused=None must not pass fused=False: that would also switch off PyTorch's default
    foreach kernel on CUDA and change the rounding of the U-Net and Inverting Gradients runs."""
    x = _leaf()
    default = adam(x, lr=0.1)
    assert default.defaults["fused"] is None and default.defaults["foreach"] is None
    assert default.param_groups[0]["params"][0] is x
    fused = adam([x], lr=0.1, fused=True)
    assert fused.defaults["fused"] is True  # CPU float32 has the fused kernel


def test_fused_adam_takes_the_same_steps():
    a, b = _leaf(), _leaf()
    opt_a, opt_b = adam(a, lr=0.05), adam(b, lr=0.05, fused=True)
    for g in _gradients(20):
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_step_decay_milestones_are_three_eighths_five_eighths_seven_eighths():
    assert step_decay_milestones(2500) == [937, 1562, 2187]  # Fed-AugMix's 2500 iterations
    assert step_decay_milestones(8) == [3, 5, 7]
    assert step_decay_milestones(2) == [1]  # duplicates and 0 removed
    assert step_decay_milestones(1) == []


def test_projected_adam_divides_the_lr_by_ten_at_each_milestone():
    x = _leaf()
    solver = ProjectedAdam(x, lr=0.1, decay_iterations=8)
    used = []
    for g in _gradients(8):
        used.append(solver.optimiser.param_groups[0]["lr"])
        solver.zero_grad()
        solver.step(g)
    assert used == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4])


def test_signed_steps_see_only_the_sign_of_the_gradient():
    signed, plain = _leaf(), _leaf()
    a = ProjectedAdam(signed, lr=0.1, signed=True)
    b = ProjectedAdam(plain, lr=0.1)
    for g in _gradients(10):
        a.step(g * 1e4)  # any positive rescaling of the gradient: same steps
        b.step(g.sign())
    assert torch.equal(signed, plain)
    # The gradient already in x.grad (the linear attack writes it there) is signed too.
    c = _leaf()
    solver = ProjectedAdam(c, lr=0.1, signed=True)
    c.grad = torch.full_like(c, -123.0)
    solver.step()
    torch.testing.assert_close(c.detach(), _leaf().detach() + 0.1, rtol=0, atol=1e-6)


def test_projection_keeps_the_estimate_in_the_valid_range():
    x = _leaf()
    lo, hi = torch.full((10,), 0.1), torch.linspace(0.2, 0.9, 10)  # per-coordinate, as the linear attack's
    solver = ProjectedAdam(x, lr=1.0, bounds=(lo, hi))
    for g in _gradients(15):
        solver.step(g)
        assert bool((x >= lo).all()) and bool((x <= hi).all())
    scalar = _leaf()
    solver = ProjectedAdam(scalar, lr=1.0, bounds=(0.0, 0.5))  # float bounds (Inverting Gradients)
    for g in _gradients(15):
        solver.step(g)
    assert float(scalar.detach().min()) >= 0.0 and float(scalar.detach().max()) <= 0.5
    free = _leaf()
    unbounded = ProjectedAdam(free, lr=1.0, bounds=(None, None))
    for _ in range(5):
        unbounded.step(torch.full_like(free, -1.0))
    assert bool((free > 1.0).all())  # no projection without a granted range
