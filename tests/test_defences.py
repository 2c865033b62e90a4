"""The client-side defences as the ClientApp runs them (common.defences), their configuration,
the server's aggregation of per-party privacy figures, and their place in sweeps and reports."""

from __future__ import annotations

import copy

import pytest
import torch
from flwr.app import MetricRecord, RecordDict

from common.defences import local_update
from common.defences.dp_mix import dp_mix_epsilon
from common.defences.fed_augmix import _FromPixels
from client.party import load_party
from common.config import ConfigError, parse_run_config
from common.dp_mix import dp_epsilon, steps_per_epoch
from common.model import MixupClassifier
from common.training import train_local
from server.strategies import aggregate_with_extremes
from simulations.sweep import SweepSpec, expand_runs

P = 5


def _party(**config):
    cfg = parse_run_config({"strategy": "fedprox", **config})
    return cfg, load_party(cfg, 0, P)


def _model(cfg, party, seed=0):
    torch.manual_seed(seed)
    return MixupClassifier(in_dim=64, num_classes=party.num_classes, norm=cfg.model_norm)


def test_plain_update_is_exactly_the_fedprox_update():
    cfg, party = _party()
    a, b = _model(cfg, party), _model(cfg, party)
    torch.manual_seed(5)  # dropout draws from the global generator
    update = local_update(cfg, party, a, lr=1e-3, proximal_mu=1e-3, generator=torch.Generator().manual_seed(3),
                          server_round=1)
    torch.manual_seed(5)
    loss = train_local(b, party.train_x, party.train_y, epochs=1, lr=1e-3, generator=torch.Generator().manual_seed(3),
                       proximal_mu=1e-3, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay)
    assert update.train_loss == loss and update.metrics == {}
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_fed_augmix_update_reports_its_loss_scaling_and_differs_from_plain():
    cfg, party = _party(defence="fed-augmix")
    plain_cfg, _ = _party()
    a, b = _model(cfg, party), _model(plain_cfg, party)
    start = copy.deepcopy(a.state_dict())
    update = local_update(cfg, party, a, lr=1e-3, proximal_mu=0.0, generator=torch.Generator().manual_seed(3),
                          server_round=1)
    local_update(plain_cfg, party, b, lr=1e-3, proximal_mu=0.0, generator=torch.Generator().manual_seed(3),
                 server_round=1)
    assert set(update.metrics) == {"js-large-weight-share", "js-divergence", "js-weight"}
    assert 0.0 <= update.metrics["js-large-weight-share"] <= 1.0
    assert update.metrics["js-weight"] in (cfg.js_weight, cfg.js_large_weight)
    assert update.metrics["js-divergence"] >= 0.0
    moved = a.state_dict()["net.1.weight"] - start["net.1.weight"]
    assert moved.abs().sum() > 0
    assert not torch.allclose(a.state_dict()["net.1.weight"], b.state_dict()["net.1.weight"])


def test_constant_js_weight_without_loss_scaling():
    cfg, party = _party(defence="fed-augmix", **{"loss-scaling": False, "js-weight": 7.0})
    update = local_update(cfg, party, _model(cfg, party), lr=1e-3, proximal_mu=0.0,
                          generator=torch.Generator().manual_seed(0), server_round=1)
    assert update.metrics["js-weight"] == 7.0


def test_augmix_sees_pixels_when_rows_are_normalised():
    """AugMix works on [0, 1] pixels; the wrapped model must see exactly the normalised rows."""
    torch.manual_seed(0)
    lo = torch.full((64,), -0.42) - torch.rand(64)
    hi = lo + 1.0 / (0.2 + torch.rand(64))
    rows = lo + torch.rand(6, 64) * (hi - lo)
    model = MixupClassifier(in_dim=64, num_classes=10).eval()
    pixels = (rows - lo) / (hi - lo)
    assert pixels.min() >= 0 and pixels.max() <= 1
    torch.testing.assert_close(_FromPixels(model, lo, hi)(pixels), model(rows), rtol=1e-5, atol=1e-5)


def test_dp_mix_update_accounts_the_party_privacy_so_far():
    cfg, party = _party(defence="dp-mix-self", **{"batch-size": 64})
    model = _model(cfg, party)
    assert model.norm == "layer"
    update = local_update(cfg, party, model, lr=1e-3, proximal_mu=1e-3, generator=torch.Generator().manual_seed(0),
                          server_round=3)
    n = party.train_x.shape[0]
    steps = steps_per_epoch(n, 64)
    assert update.metrics["dp-steps"] == steps and update.train_loss is None
    assert set(update.metrics) == {"dp-steps", "dp-sample-rate", "dp-epsilon"}
    assert update.metrics["dp-sample-rate"] == pytest.approx(64 / n)
    # Three rounds of one epoch each: the accountant over 3 * steps Poisson-sampled steps.
    expected = dp_epsilon(noise_multiplier=1.0, sample_rate=64 / n, steps=3 * steps, delta=1e-5)
    assert update.metrics["dp-epsilon"] == pytest.approx(expected)
    assert dp_mix_epsilon(cfg, n, rounds=3) == pytest.approx(expected)
    # More rounds, more privacy spent; more noise, less.
    assert dp_mix_epsilon(cfg, n, rounds=6) > expected
    noisier = cfg.model_copy(update={"dp_noise_multiplier": 2.0})
    assert dp_mix_epsilon(noisier, n, rounds=3) < expected


def test_dp_mix_refuses_a_batch_norm_model():
    cfg, party = _party(defence="dp-mix-self")
    with pytest.raises(ValueError, match="(?i)batch ?norm"):
        local_update(cfg, party, MixupClassifier(in_dim=64, num_classes=10), lr=1e-3, proximal_mu=0.0,
                     generator=torch.Generator().manual_seed(0), server_round=1)


def test_defence_settings_are_checked_with_the_key_named():
    with pytest.raises(ConfigError, match="'defence'.*fedprox"):
        parse_run_config({"strategy": "one-shot-mixup", "defence": "fed-augmix"})
    with pytest.raises(ConfigError, match="'diffusion-model-path'.*local folder"):
        parse_run_config({"strategy": "fedprox", "defence": "dp-mix-diff"})
    with pytest.raises(ConfigError, match="'diffusion-model-path'.*absolute"):
        parse_run_config({"strategy": "fedprox", "defence": "dp-mix-diff", "diffusion-model-path": "models/sd"})
    with pytest.raises(ConfigError, match="'augmix-severity'"):
        parse_run_config({"strategy": "fedprox", "defence": "fed-augmix", "augmix-severity": 11.0})
    with pytest.raises(ConfigError, match="'defence'.*raw images"):
        parse_run_config({"strategy": "fedprox", "defence": "fed-augmix", "dataset": "cifar10", "data-dir": "/d",
                          "backbone": "resnet18"})
    ok = parse_run_config({"strategy": "fedavg", "defence": "dp-mix-diff", "diffusion-model-path": "/models/sd"})
    assert ok.defence_spec.extreme_metrics == ("dp-epsilon",) and ok.model_norm == "layer"
    assert parse_run_config({"strategy": "fedprox", "defence": "fed-augmix"}).model_norm == "batch"


def test_dp_mix_diff_without_the_local_model_fails_loudly(tmp_path):
    cfg, party = _party(defence="dp-mix-diff", **{"diffusion-model-path": str(tmp_path / "absent")})
    with pytest.raises((FileNotFoundError, ValueError, ImportError), match="(?i)local|diffusers|not"):
        local_update(cfg, party, _model(cfg, party), lr=1e-3, proximal_mu=0.0,
                     generator=torch.Generator().manual_seed(0), server_round=1)


def test_server_keeps_the_worst_and_best_party_epsilon_not_their_average():
    replies = [RecordDict({"metrics": MetricRecord({"num-examples": n, "train-loss": 1.0, "dp-epsilon": e})})
               for n, e in ((100, 2.0), (300, 8.0), (100, 3.0))]
    aggregated = aggregate_with_extremes(replies, "num-examples", extremes=("dp-epsilon",))
    assert aggregated["dp-epsilon-max"] == 8.0 and aggregated["dp-epsilon-min"] == 2.0
    assert "dp-epsilon" not in aggregated
    assert aggregated["train-loss"] == pytest.approx(1.0)
    plain = aggregate_with_extremes([RecordDict({"metrics": MetricRecord({"num-examples": 5, "train-loss": 2.0})})],
                           "num-examples")
    assert dict(plain) == {"train-loss": 2.0}


def test_layer_norm_classifier_takes_views_and_keeps_the_parameter_names():
    torch.manual_seed(0)
    layer = MixupClassifier(in_dim=64, num_classes=10, norm="layer").eval()
    batch = MixupClassifier(in_dim=64, num_classes=10, norm="batch")
    x = torch.rand(5, 64)
    views = torch.stack([x, x.flip(0)], dim=1)  # (5, 2, 64)
    out = layer(views)
    assert out.shape == (5, 2, 10)
    torch.testing.assert_close(out[:, 0], layer(x))
    torch.testing.assert_close(out[:, 1], layer(x.flip(0)))
    # A sample is the trailing dimensions that make in_dim values; every leading one is kept.
    torch.testing.assert_close(layer(x.reshape(5, 1, 8, 8)), layer(x)[:, None])
    names = {n for n, _ in batch.named_parameters()}
    assert names == {n for n, _ in layer.named_parameters()}
    with pytest.raises(ValueError, match="norm"):
        MixupClassifier(in_dim=64, num_classes=10, norm="group")


def test_sweep_expands_defences_for_the_iterative_strategies_only():
    spec = SweepSpec.model_validate({
        "name": "d", "seeds": [0], "strategies": ["fedprox", "one-shot-mixup"],
        "defences": ["none", "fed-augmix", "dp-mix-self"],
        "table": [{"name": "t", "layout": "table5", "parties": [5], "beta": [1.0]}],
    })
    runs = expand_runs(spec)
    assert [(r.strategy, r.defence) for r in runs] == [
        ("fedprox", "none"), ("fedprox", "fed-augmix"), ("fedprox", "dp-mix-self"), ("one-shot-mixup", "")]
    plain = runs[0]
    assert "defence" not in plain.run_config  # run keys of sweeps without defences stay what they were
    assert runs[1].run_config["defence"] == "fed-augmix" and "fed-augmix" in runs[1].name
    assert len({r.key for r in runs}) == 4
    # Same partitions: the configs differ in the defence only.
    strip = lambda c: {k: v for k, v in c.items() if k != "defence"}  # noqa: E731
    assert strip(runs[1].run_config) == strip(runs[2].run_config) == plain.run_config
