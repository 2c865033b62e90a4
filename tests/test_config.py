"""Unit tests of the typed run configuration (common.config.parse_run_config)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from common.config import ConfigError, RunConfig, parse_run_config

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.fixture(scope="module")
def toml_config() -> dict:
    with PYPROJECT.open("rb") as fh:
        return tomllib.load(fh)["tool"]["flwr"]["app"]["config"]


def _field(key: str) -> str:
    return key.replace("-", "_")


# --------------------------------------------------------------------------- pyproject


def test_pyproject_table_parses(toml_config):
    cfg = parse_run_config(toml_config)
    assert isinstance(cfg, RunConfig)
    assert cfg.strategy == "one-shot-mixup"
    assert cfg.tau == 1e-6
    assert cfg.alpha == 0.7
    assert cfg.noise_mode == "clamped" and cfg.clamp_partner is True
    assert cfg.beta == 1.0
    assert cfg.partitioner == "dirichlet" and cfg.rho == 1.0
    for key, value in toml_config.items():
        if key in ("output-dir", "feature-cache-dir"):
            assert getattr(cfg, _field(key)) == os.path.expanduser(value)
            assert os.path.isabs(cfg.output_dir)
        else:
            assert getattr(cfg, _field(key)) == value, key


def test_default_output_dir_is_expanded():
    cfg = parse_run_config({})
    assert os.path.isabs(cfg.output_dir)
    assert cfg.output_dir == os.path.join(os.path.expanduser("~"), "mixup-fl-runs")


def test_config_is_frozen():
    cfg = parse_run_config({})
    with pytest.raises(Exception):
        cfg.beta = 2.0  # type: ignore[misc]


# --------------------------------------------------------------------------- accepted values


def test_int_accepted_for_float_key():
    cfg = parse_run_config({"beta": 1, "tau": 1, "round-timeout": 30})
    assert cfg.beta == 1.0 and isinstance(cfg.beta, float)
    assert cfg.round_timeout == 30.0


def test_valid_overrides():
    cfg = parse_run_config({
        "strategy": "fedprox",
        "partitioner": "size-skew",
        "rho": 0.25,
        "poor-party": 3,
        "noise-mode": "strict",
        "output-dir": "/tmp/runs",
        "seed": 7,
        "secure-rng": True,
    })
    assert cfg.strategy == "fedprox" and cfg.rho == 0.25 and cfg.poor_party == 3
    assert cfg.clamp_partner is False
    assert cfg.output_dir == "/tmp/runs"
    assert cfg.seed == 7 and cfg.secure_rng is True


def test_home_relative_output_dir_is_expanded():
    cfg = parse_run_config({"output-dir": "~/somewhere"})
    assert cfg.output_dir == os.path.join(os.path.expanduser("~"), "somewhere")


# --------------------------------------------------------------------------- rejected values


BAD = [
    ({"bogus-key": 1}, "bogus-key"),
    ({"beta": -1}, "beta"),
    ({"beta": 0.0}, "beta"),
    ({"tau": "1e-6"}, "tau"),
    ({"tau": 0.0}, "tau"),
    ({"seed": True}, "seed"),
    ({"seed": 1.0}, "seed"),
    ({"seed": -1}, "seed"),
    ({"alpha": 0.5}, "alpha"),
    ({"alpha": 1.0}, "alpha"),
    ({"noise-mode": "loud"}, "noise-mode"),
    ({"strategy": "fedsgd"}, "strategy"),
    ({"output-dir": "runs/out"}, "output-dir"),
    ({"rho": 0.5}, "rho"),  # partitioner defaults to dirichlet
    ({"rho": 0.5, "partitioner": "dirichlet"}, "rho"),
    ({"partitioner": "size-skew", "rho": 0.0}, "rho"),
    ({"partitioner": "size-skew", "rho": 1.5}, "rho"),
    ({"secure-rng": 1}, "secure-rng"),
    ({"run-name": "a/b"}, "run-name"),
    ({"min-party-size": 3}, "min-party-size"),
    ({"batch-size": 1}, "batch-size"),
    ({"tau": float("inf")}, "tau"),  # would switch the noise off silently
    ({"lr": float("inf")}, "lr"),
]


@pytest.mark.parametrize("values,key", BAD, ids=[f"{k}-{i}" for i, (_, k) in enumerate(BAD)])
def test_rejected_with_key_in_one_line(values, key):
    with pytest.raises(ConfigError) as info:
        parse_run_config(values)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{key}'" in message
    assert isinstance(info.value, ValueError)


def test_unknown_key_message_lists_known_keys():
    with pytest.raises(ConfigError) as info:
        parse_run_config({"alfa": 0.7})
    message = str(info.value)
    assert "'alfa'" in message and "unknown key" in message
    assert "alpha" in message and "noise-mode" in message


def test_several_problems_one_line_each():
    with pytest.raises(ConfigError) as info:
        parse_run_config({"beta": -1, "tau": "1e-6", "seed": True, "nonsense": 3})
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    for key in ("beta", "tau", "seed", "nonsense"):
        assert sum(f"'{key}'" in line for line in lines) == 1, key


def test_message_shows_bad_value():
    with pytest.raises(ConfigError) as info:
        parse_run_config({"tau": "1e-6"})
    assert "'1e-6'" in str(info.value)


def test_instahide_settings_are_checked_together():
    from common.config import ConfigError, parse_run_config

    assert parse_run_config({"encoding": "instahide", "public-fraction": 0.2}).instahide_k == 4
    with pytest.raises(ConfigError, match="run config key 'public-fraction'"):
        parse_run_config({"encoding": "instahide"})
    with pytest.raises(ConfigError, match="run config key 'instahide-k-private'"):
        parse_run_config({"encoding": "instahide", "instahide-k": 2, "instahide-k-private": 3})
    with pytest.raises(ConfigError, match="run config key 'encoding'"):
        parse_run_config({"encoding": "instahide", "public-fraction": 0.2, "strategy": "fedprox"})
    # k = k_private needs no public pool.
    assert parse_run_config({"encoding": "instahide", "instahide-k": 2}).public_fraction == 0.0
