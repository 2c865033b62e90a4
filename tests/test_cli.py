"""`mixupfl`: a bad run config is refused before anything starts, naming every key (and the
closest valid key for a typo); a federation smaller than the quorum fails at once."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from simulations.cli import check_run_config, main


def test_every_bad_key_is_named_with_the_closest_valid_key_for_a_typo():
    with pytest.raises(ConfigError) as err:
        check_run_config({"tua": 1e-3, "alpha": 0.3, "noise-mode": "weird", "strategy": "fedprox"})
    lines = str(err.value).splitlines()
    assert lines[0] == "run config key 'tua': unknown key; did you mean 'tau'?"
    assert any(line.startswith("run config key 'alpha' = 0.3") for line in lines)
    assert any(line.startswith("run config key 'noise-mode' = 'weird'") for line in lines)
    assert len(lines) == 3
    assert check_run_config({"tau": 1e-3}).tau == 1e-3


def test_run_refuses_within_seconds_without_starting_flower(capsys):
    # Both are refused before any Flower command is built (a Flower start would take ~20 s).
    assert main(["run", "--run-config", "tua=1e-3"]) == 2
    assert main(["run", "--federation-config", "num-supernodes=1"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'tau'?" in err and "nothing was started" in err
    assert "1 simulated parties cannot reach quorum = 2" in err


def test_unknown_command_suggests_the_closest(capsys):
    assert main(["sweeep"]) == 2
    assert "did you mean 'sweep'?" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "frontier" in capsys.readouterr().out
