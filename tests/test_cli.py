"""`mixupfl`: a bad run config is refused before anything starts, naming every key (and the
closest valid key for a typo); a federation smaller than the quorum fails at once."""

from __future__ import annotations

from pathlib import Path

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


def test_each_record_is_shown_once_and_flowers_stale_notes_are_hidden(tmp_path, capsys):
    import sys

    from simulations.cli import _stream

    lines = [
        "\x1b[92mINFO \x1b[0m:      fedprox on digits with 10 parties, server device cpu",
        "12/02/2026 07:14:45:INFO:fedprox on digits with 10 parties, server device cpu",
        "\x1b[93mWARNING \x1b[0m:   Since flwr 1.32, default simulated SuperNodes changed from 10 to 2.",
        "\x1b[92mINFO \x1b[0m:      Federation `@none/default` (10 simulated SuperNodes)",
        "\x1b[92mINFO \x1b[0m:      To change federation size, use the following command:",
        "\x1b[92mINFO \x1b[0m:      \tflwr federation simulation-config @none/default <superlink> --num-supernodes <N>",
        "/x/ray/_private/worker.py:2051: FutureWarning: Tip: In future versions of Ray, Ray will no longer override",
        "  warnings.warn(",
        "\x1b[91mERROR \x1b[0m:     upload from node 5 (party 0) rejected: x not finite",
    ]
    script = tmp_path / "emit.py"
    script.write_text("import sys\nfor line in %r:\n    print(line)\nsys.exit(3)\n" % lines)
    code, kept = _stream([sys.executable, str(script)], env={})
    shown = capsys.readouterr().out.splitlines()
    assert code == 3 and kept.splitlines() == lines  # the kept log has everything
    assert shown == [lines[0], lines[3], lines[8]]


def test_a_local_superlink_started_for_another_checkout_is_named_before_anything_runs(tmp_path):
    """The local SuperLink keeps the environment that started it: one started for another
    checkout would run that checkout's code (or hang after a Flower upgrade)."""
    import subprocess
    import sys

    from simulations.runtime.local_flower import PROJECT_ROOT, stale_local_superlink

    home = tmp_path / "flwr-home"
    fake = tmp_path / "flower-superlink"  # a stand-in process that looks like a managed local SuperLink
    fake.write_text("import time\ntime.sleep(60)\n")
    marker = str(home / "local-superlink" / "state.db")
    other = tmp_path / "other-checkout"
    other.mkdir()
    for pythonpath, expected in ((str(other), f"started for the app in {other}"), (str(PROJECT_ROOT), None)):
        proc = subprocess.Popen([sys.executable, str(fake), "--database", marker], env={"PYTHONPATH": pythonpath})
        try:
            import time

            time.sleep(0.3)
            found = stale_local_superlink(home)
        finally:
            proc.kill()
            proc.wait()
        assert (found is None) if expected is None else (expected in found and str(proc.pid) in found)


@pytest.mark.parametrize("command", ["compare", "sweep", "report", "audit", "instahide", "defences", "frontier",
                                     "federation", "stop"])
def test_every_subcommand_takes_its_arguments_and_answers_help(command, capsys):
    from simulations.cli import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pathspec's, once per file Flower's FAB build matches
def test_run_sends_a_staged_copy_of_the_app_not_the_project_folder(tmp_path, monkeypatch, capsys):
    """``flwr run <project>`` would walk the virtual environment and pack tests, docs and
    results into the FAB; ``mixupfl run`` sends a staged copy of the app (the one sweeps and
    tests run), removed after the run. Another app folder goes as it is."""
    import simulations.cli as cli
    from flwr.cli.build import build_fab_from_disk

    from simulations.runtime.local_flower import PROJECT_ROOT

    seen = {}

    def fake_stream(cmd, *, env):
        app = Path(cmd[2])
        seen["app"] = app
        seen["files"] = sorted(p.relative_to(app).as_posix() for p in app.rglob("*") if p.is_file())
        seen["fab"] = len(build_fab_from_disk(app))
        out = tmp_path / "runs"
        out.mkdir(exist_ok=True)
        (out / "r.json").write_text("{}")  # what the ServerApp would write
        return 0, ""

    monkeypatch.setattr(cli, "_stream", fake_stream)
    monkeypatch.setattr(cli, "stale_local_superlink", lambda *a, **k: None)
    assert main(["run", "--run-config", f"output-dir='{tmp_path / 'runs'}' run-name='r'"]) == 0
    assert f"summary: {tmp_path / 'runs' / 'r.json'}" in capsys.readouterr().out
    files = seen["files"]
    assert seen["app"] != PROJECT_ROOT and not seen["app"].exists()  # a temporary copy, gone after the run
    assert "pyproject.toml" in files and "client/app.py" in files and "server/app.py" in files
    assert (seen["app"].name, sorted({f.split("/")[0] for f in files})) == (
        "app", ["client", "common", "features", "loaders", "pyproject.toml", "server"])
    assert all(f.endswith(".py") or f == "pyproject.toml" for f in files)
    assert seen["fab"] < len(build_fab_from_disk(PROJECT_ROOT)) / 2  # no tests, docs or results packed
    with cli.app_to_send(tmp_path) as other:
        assert other == tmp_path
