"""DP-Mix refuses what would void its guarantee, accounts exactly the steps it takes, and
gives back the caller's model as it was (apart from the trained weights)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import common.dp_mix.trainer as trainer
from common.dp_mix import dp_epsilon, steps_per_epoch, train_local_dp_mix
from common.model import MixupClassifier

DIGIT_SHAPE = (1, 8, 8)
_ARGS = dict(sample_shape=DIGIT_SHAPE, epochs=1, lr=0.05, batch_size=3, noise_multiplier=1.0, max_grad_norm=1.0,
             num_augmentations=2, num_mixups=1, alpha=1.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 10))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _data(n: int = 6, seed: int = 0):
    g = _gen(seed)
    return torch.rand(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


# --------------------------------------------------------------------------- non-finite data


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rows_or_soft_labels_are_refused_before_any_step(bad):
    x, y = _data()
    model = _model(0)
    before = _state(model)
    x_bad = x.clone()
    x_bad[4, 17] = bad
    with pytest.raises(ValueError, match="x holds NaN or infinite values"):
        train_local_dp_mix(model, x_bad, y, generator=_gen(0), **_ARGS)
    soft = F.one_hot(y, 10).float()
    soft[2, 3] = bad
    with pytest.raises(ValueError, match="y holds NaN or infinite values"):
        train_local_dp_mix(model, x, soft, generator=_gen(0), **_ARGS)
    syn_x, syn_y = torch.rand(4, 64, generator=_gen(1)), F.one_hot(torch.arange(4), 10).float()
    syn_bad = syn_x.clone()
    syn_bad[0, 0] = bad
    with pytest.raises(ValueError, match="synthetic images holds NaN"):
        train_local_dp_mix(model, x, y, generator=_gen(0), synthetic=(syn_bad, syn_y), **_ARGS)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # refused, not half-trained


def test_why_non_finite_data_is_refused_the_clip_cannot_bound_it():
    """The reason of the refusal: Opacus' clip factor of a NaN gradient is NaN, not <= 1."""
    norms = torch.tensor([0.5, 3.0, math.nan])
    factors = (1.0 / (norms + 1e-6)).clamp(max=1.0)
    assert factors[0] == 1.0 and factors[1] == pytest.approx(1 / 3, rel=1e-5) and math.isnan(factors[2])


# --------------------------------------------------------------------------- accounting


@pytest.mark.parametrize(("n", "batch_size", "epochs"), [(7, 3, 2), (5, 8, 3)])
def test_the_steps_taken_are_the_steps_dp_epsilon_is_told(n, batch_size, epochs, monkeypatch):
    seen = []
    real = trainer._dp_sgd_steps

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append((kwargs["accountant"].history, out[3]))
        return out

    monkeypatch.setattr(trainer, "_dp_sgd_steps", spy)
    x, y = _data(n)
    r = train_local_dp_mix(_model(0), x, y, generator=_gen(3), **{**_ARGS, "batch_size": batch_size,
                                                                 "epochs": epochs, "noise_multiplier": 0.8})
    rate = min(1.0, batch_size / n)
    total = epochs * steps_per_epoch(n, batch_size)
    assert seen == [([(0.8, rate, total)], total)]  # Opacus' step hook counted every step, empty ones too
    assert (r.steps, r.sample_rate) == (total, rate)
    epsilon = dp_epsilon(noise_multiplier=0.8, sample_rate=rate, steps=total, delta=1e-5)
    assert 0 < epsilon < math.inf


def test_a_step_count_that_differs_from_the_accounted_one_fails_loudly(monkeypatch):
    real = trainer._dp_mix_batches

    def one_short(*args, steps, **kwargs):
        return real(*args, steps=steps - 1, **kwargs)

    monkeypatch.setattr(trainer, "_dp_mix_batches", one_short)
    x, y = _data()
    with pytest.raises(RuntimeError, match="DP-Mix took 1 steps and Opacus accounted"):
        train_local_dp_mix(_model(0), x, y, generator=_gen(0), **{**_ARGS, "epochs": 1, "batch_size": 3})


# --------------------------------------------------------------------------- the caller's model


@pytest.mark.parametrize("secure_mode", [False, True])
def test_the_model_comes_back_with_the_attributes_it_had(secure_mode):
    torch.manual_seed(0)
    model = MixupClassifier(in_dim=64, num_classes=10, norm="layer", dropout=0.5)
    model.eval()
    modules = {n: set(vars(m)) for n, m in model.named_modules()}
    params = {n: set(vars(p)) for n, p in model.named_parameters()}
    x, y = _data(6)
    train_local_dp_mix(model, x, y, generator=_gen(0), secure_mode=secure_mode, **_ARGS)
    assert {n: set(vars(m)) for n, m in model.named_modules()} == modules
    assert {n: set(vars(p)) for n, p in model.named_parameters()} == params
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in model.modules())


def test_reruns_with_the_same_seeds_are_bit_identical_and_other_seeds_differ():
    x, y = _data(10, seed=4)

    def run(seed: int):
        torch.manual_seed(0)
        model = MixupClassifier(in_dim=64, num_classes=10, norm="layer")  # dropout 0.5: global stream
        torch.manual_seed(1)
        r = train_local_dp_mix(model, x, y, generator=_gen(seed), proximal_mu=0.1, optimizer="adamw",
                               **{**_ARGS, "epochs": 2, "lr": 1e-3})
        return r, _state(model)

    (r1, s1), (r2, s2), (_, s3) = run(5), run(5), run(6)
    assert r1 == r2 and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["net.1.weight"], s3["net.1.weight"])
