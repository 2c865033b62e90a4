"""The Opacus contracts DP-Mix rests on (common.dp_mix.opacus_private and the public API).

These tests exercise Opacus itself, not only DP-Mix: after an Opacus upgrade they say which
assumption broke, with a message naming it, before any result silently changes.
"""

from __future__ import annotations

import ast
import copy
import math
from pathlib import Path

import pytest
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.nn import functional as F

import common.dp_mix as dp_mix
from common.dp_mix import dp_epsilon
from common.dp_mix.opacus_private import (
    MODULE_TRACES,
    PARAMETER_TRACES,
    UrandomNoiseDPOptimizer,
    opacus_traces,
    remove_opacus_traces,
)
from common.dp_mix.trainer import _dp_sgd_steps

PACKAGE = Path(dp_mix.__file__).parent

# Opacus' full backward hooks on inputs that need no gradient warn; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(seed: int = 0, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, width), nn.LayerNorm(width), nn.GELU(), nn.Linear(width, 10))


def _batch(b: int = 5, v: int = 3, seed: int = 0):
    g = _gen(seed)
    return torch.rand(b, v, 64, generator=g), torch.randint(0, 10, (b,), generator=g)


def _attributes(model: nn.Module) -> dict[str, set[str]]:
    """Attribute names of every module and parameter (hooks are checked separately)."""
    out = {f"module {n or '<root>'}": set(vars(m)) for n, m in model.named_modules()}
    out.update({f"parameter {n}": set(vars(p)) for n, p in model.named_parameters()})
    return out


def _one_dp_step(model: nn.Module, optimizer_cls=DPOptimizer, **kwargs):
    """Forward, backward and ``pre_step`` on a wrapped model; returns (wrapped, dp optimizer)."""
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    dp = optimizer_cls(torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=0.5, expected_batch_size=5,
                       loss_reduction="mean", **kwargs)
    views, targets = _batch()
    dp.zero_grad(set_to_none=True)
    logits = wrapped(views)
    F.cross_entropy(logits.reshape(-1, 10), targets.repeat_interleave(views.shape[1])).backward()
    assert dp.pre_step()
    return wrapped, dp


# --------------------------------------------------------------------------- no private names


def test_no_private_opacus_name_is_imported_anywhere_in_dp_mix():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opacus"):
                parts = node.module.split(".") + [a.name for a in node.names]
                offenders += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                              if any(p.startswith("_") for p in parts)]
            elif isinstance(node, ast.Attribute) and node.attr in ("_close", "_module", "history"):
                if not (isinstance(node.ctx, ast.Load) and node.attr == "history"):
                    offenders.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert not offenders, f"private Opacus names used by common.dp_mix: {offenders}"


# --------------------------------------------------------------------------- per-sample gradients


def test_grad_sample_module_gives_each_sample_the_gradient_of_its_mean_loss_over_its_views():
    """DP-Mix's core assumption: a (B, V, D) input gives B per-sample gradients, each of the
    sample's loss averaged over its own V views (Opacus sums the hooks over the view axis)."""
    model = _model(0)
    reference = copy.deepcopy(model)
    views, targets = _batch(b=4, v=3)
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    logp = torch.log_softmax(wrapped(views), dim=-1)
    per_sample = -logp.gather(-1, targets[:, None, None].expand(-1, 3, 1)).squeeze(-1).mean(1)
    per_sample.mean().backward()
    for i in range(4):
        reference.zero_grad()
        F.cross_entropy(reference(views[i]), targets[i].expand(3)).backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
            assert p.grad_sample.shape == (4, *p.shape), f"{name}: grad_sample is not one row per sample"
            torch.testing.assert_close(p.grad_sample[i], q.grad, rtol=1e-4, atol=1e-6,
                                       msg=f"Opacus per-sample gradient of {name}, sample {i}, changed meaning")
    wrapped.to_standard_module()


# --------------------------------------------------------------------------- leftovers


def test_opacus_leaves_only_the_traces_dp_mix_removes():
    model = _model(0)
    before = _attributes(model)
    had = opacus_traces(model)
    wrapped, dp = _one_dp_step(model, noise_multiplier=1.0, generator=_gen(0))
    dp.original_optimizer.step()
    dp.zero_grad(set_to_none=True)
    assert wrapped.to_standard_module() is model  # the public unwrap returns the caller's module
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks, "to_standard_module left hooks"
    known = set(MODULE_TRACES) | set(PARAMETER_TRACES)
    after = _attributes(model)
    unknown = {k: sorted(after[k] - before[k] - known) for k in after if after[k] - before[k] - known}
    assert not unknown, (
        f"Opacus now leaves attributes opacus_private.remove_opacus_traces does not know: {unknown}; "
        "add them to MODULE_TRACES / PARAMETER_TRACES"
    )
    assert all(hasattr(p, "summed_grad") for p in model.parameters())  # what DPOptimizer leaves today
    remove_opacus_traces(model, had)
    assert _attributes(model) == before


def test_a_callers_own_activations_list_is_kept():
    model = _model(0)
    mine = []  # e.g. left by an earlier Opacus session of the caller's
    model[0].activations = mine
    had = opacus_traces(model)
    wrapped, dp = _one_dp_step(model, noise_multiplier=0.0)
    dp.zero_grad(set_to_none=True)
    wrapped.to_standard_module()
    remove_opacus_traces(model, had)
    assert model[0].activations is mine
    assert "activations" not in vars(model[1]) and "activations" not in vars(model[3])


# --------------------------------------------------------------------------- secure-mode noise


def test_add_noise_at_zero_noise_multiplier_adds_exactly_nothing():
    """UrandomNoiseDPOptimizer relies on it: Opacus' add_noise with std 0 stores summed_grad."""
    plain, secure = _model(0), _model(0)
    _, a = _one_dp_step(plain, noise_multiplier=0.0, generator=_gen(0))
    _, b = _one_dp_step(secure, UrandomNoiseDPOptimizer, noise_multiplier=0.0)
    for p, q in zip(a.params, b.params, strict=True):
        assert torch.equal(p.grad, p.summed_grad / 5)  # clipped sum over the expected batch, no noise
        assert torch.equal(p.grad, q.grad), "Opacus' add_noise no longer adds exactly zero at std 0"


def test_processed_flag_still_refuses_reusing_gradients_and_sigma_is_restored():
    for cls, kwargs in ((DPOptimizer, {"generator": _gen(0)}), (UrandomNoiseDPOptimizer, {})):
        _, dp = _one_dp_step(_model(0), cls, noise_multiplier=2.0, **kwargs)
        with pytest.raises(ValueError, match="zero_grad"):  # Opacus' guard against reusing a noisy sum
            dp.add_noise()
        assert dp.noise_multiplier == 2.0


def test_urandom_noise_is_gaussian_with_std_sigma_c_and_fresh_every_time():
    sigma, clip = 3.0, 0.5
    noises = []
    for _ in range(2):
        _, dp = _one_dp_step(_model(0, width=256), UrandomNoiseDPOptimizer, noise_multiplier=sigma)
        assert dp.secure_mode and dp.generator is None
        noises.append(torch.cat([(p.grad * 5 - p.summed_grad).reshape(-1) for p in dp.params]))
    e = noises[0] / (sigma * clip)  # standardised: N(0, 1) entries
    assert e.numel() > 18_000
    assert abs(float(e.mean())) < 5 / math.sqrt(e.numel())
    assert float(e.std()) == pytest.approx(1.0, rel=0.03)
    assert float((e.abs() < 1).float().mean()) == pytest.approx(math.erf(1 / math.sqrt(2)), abs=0.02)  # 0.683
    assert float((e.abs() < 2).float().mean()) == pytest.approx(math.erf(2 / math.sqrt(2)), abs=0.01)  # 0.954
    assert float(torch.corrcoef(torch.stack(noises))[0, 1]) == pytest.approx(0.0, abs=0.05)  # not reproduced


def test_urandom_optimizer_refuses_a_seeded_generator():
    with pytest.raises(ValueError, match="prohibited in secure mode"):
        UrandomNoiseDPOptimizer(torch.optim.SGD(_model(0).parameters(), lr=0.1), noise_multiplier=1.0,
                                max_grad_norm=1.0, expected_batch_size=2, generator=_gen(0))


# --------------------------------------------------------------------------- accounting


@pytest.mark.parametrize(("sigma", "q", "steps"), [(1.0, 0.01, 1000), (0.7, 0.2, 40), (2.5, 1.0, 3)])
def test_dp_epsilon_is_the_public_accountant_stepped_once_per_step(sigma, q, steps):
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=sigma, sample_rate=q)
    assert accountant.history == [(sigma, q, steps)]
    assert dp_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=1e-5) == accountant.get_epsilon(1e-5)


def test_the_optimizer_step_hook_accounts_every_step_taken_empty_ones_included():
    views, targets = _batch(b=3)
    empty = (torch.zeros(0, 3, 64), torch.zeros(0, dtype=torch.long))
    accountant = RDPAccountant()
    *_, steps = _dp_sgd_steps(_model(0), [(views, targets), empty, empty, (views, targets)], lr=0.1,
                              noise_multiplier=1.3, max_grad_norm=1.0, expected_batch_size=4,
                              noise_generator=_gen(0), accountant=accountant, sample_rate=0.25)
    assert steps == 4 and accountant.history == [(1.3, 0.25, 4)]
    assert accountant.get_epsilon(1e-5) == dp_epsilon(noise_multiplier=1.3, sample_rate=0.25, steps=4, delta=1e-5)
    with pytest.raises(ValueError, match="sample_rate"):
        _dp_sgd_steps(_model(0), [empty], lr=0.1, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4,
                      noise_generator=_gen(0), accountant=RDPAccountant())
