"""``mixupfl``: one command-line entry point for what a user of the platform does.

    mixupfl run [--run-config "k=v ..."] [--federation-config "num-supernodes=N"]
    mixupfl compare | sweep | report | audit | instahide | defences | frontier [their own flags]
    mixupfl federation [--num-supernodes N] | stop

``run`` validates the run config here, before anything starts, and names every bad key (with
the closest valid key for a typo); fails at once when the simulated federation is smaller
than the run's quorum; sets the environment Flower needs; runs ``flwr run <app> --stream``
with the party count given per run (nothing global is changed); prints where the summary is;
and exits non-zero when the run failed or wrote no summary (``flwr run --stream`` itself exits
0 even when the ServerApp fails). ``flwr run .`` keeps working for Flower users.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.config import ConfigError, RunConfig, parse_run_config
from simulations.runtime.local_flower import (
    PROJECT_ROOT,
    flower_env,
    flower_run_id,
    flwr_home,
    run_config_arg,
    stale_local_superlink,
    stop_flower_run,
)

__all__ = ["DEFAULT_PARTIES", "check_run_config", "main"]

DEFAULT_PARTIES = 10
"""Simulated parties of ``mixupfl run`` unless ``--federation-config`` says otherwise."""

DEFAULT_RESULTS = PROJECT_ROOT / "runs"
"""Where single runs and studies write by default: one results folder in the project."""

# Subcommand -> (module whose main(argv) runs it, one-line help).
_DELEGATES: dict[str, tuple[str, str]] = {
    "compare": ("simulations.compare", "one-shot and FedProx side by side over seeds (a sweep preset)"),
    "sweep": ("simulations.sweep.cli", "a sweep file of runs (Tables 5 and 6 by default), resumable"),
    "report": ("simulations.report.__main__", "rebuild a sweep's report from its runs.csv"),
    "audit": ("simulations.studies.privacy_audit", "privacy audit of one-shot releases (Tables 1-3, leakage)"),
    "instahide": ("simulations.studies.instahide_compare", "InstaHide vs singularized mixup, accuracy and attacks"),
    "defences": ("simulations.studies.defence_compare", "FedProx, Fed-AugMix, DP-Mix_self and one-shot mixup"),
    "frontier": ("simulations.studies.frontier", "the privacy-utility frontier of every protocol"),
    "federation": ("simulations.runtime.federation", "set the local simulation's default party count"),
    "stop": ("simulations.runtime.stop", "stop the local SuperLink of this project"),
}


def _known_keys() -> list[str]:
    return [field.alias or name for name, field in RunConfig.model_fields.items()]


def check_run_config(values: Mapping[str, Any]) -> RunConfig:
    """The run config Flower would hand the app, validated here; every problem is named.

    Raises
    ------
    ConfigError
        One line per bad key; an unknown key also names the closest known one.
    """
    known = _known_keys()
    lines = []
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else "; see the key table (python -m common.config_reference)"
            lines.append(f"run config key '{key}': unknown key{hint}")
    try:
        cfg = parse_run_config({k: v for k, v in values.items() if k in known})
    except ConfigError as err:
        lines += str(err).splitlines()
    if lines:
        raise ConfigError("\n".join(lines))
    return cfg


def _parse_assignments(items: Sequence[str] | None) -> dict[str, Any]:
    """Flower's own ``key=value`` parser (TOML literals), so the meaning is ``flwr run``'s."""
    from flwr.common.config import parse_config_args

    return parse_config_args(list(items)) if items else {}


# The simulation runtime repeats every INFO/DEBUG record of the apps with a timestamp
# ("12/02/2026 07:14:45:INFO:...") after Flower's own coloured line: show each record once.
_RUNTIME_ECHO = re.compile(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d:(INFO|DEBUG):")
# Lines that say nothing about this run: Flower's note on its changed default party count and
# how to change it (`mixupfl run` always passes the count), Ray's tip about accelerator variables.
_NOISE = re.compile(
    r"default simulated SuperNodes changed from|To change federation size, use the following command"
    r"|flwr federation simulation-config|In future versions of Ray, Ray will no longer override|^\s+warnings\.warn\($"
)


def _stream(cmd: list[str], *, env: dict[str, str]) -> tuple[int, str]:
    """Run ``cmd``, echo its output (each record once), keep it for the run id."""
    lines = []
    proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if not _RUNTIME_ECHO.match(line) and not _NOISE.search(line):
                sys.stdout.write(line)  # the kept log (returned) has every line
        return proc.wait(), "".join(lines)
    except KeyboardInterrupt:
        run_id = flower_run_id("".join(lines))
        if run_id is not None:
            stop_flower_run(run_id, env=env)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        raise


@contextmanager
def app_to_send(app: Path) -> Iterator[Path]:
    """The folder ``flwr run`` packs into the run's FAB. For this project: a temporary staged
    copy of its app (``pyproject.toml`` and the runtime packages,
    :func:`simulations.runtime.session.stage_app`, as sweeps and tests run it), because Flower
    walks the whole folder before filtering it, the virtual environment included, and packs
    the tests, docs and committed results too (measured: 3.5-4.2 s and a 1.9 MB FAB, against
    about 0.05 s and 0.5 MB staged). Any other app folder is sent as it is."""
    if app != PROJECT_ROOT.resolve():
        yield app
        return
    from simulations.runtime.session import APP_PACKAGES, stage_app

    with tempfile.TemporaryDirectory(prefix="mixupfl-app-") as folder:
        yield stage_app(app, Path(folder) / "app", packages=APP_PACKAGES)


def run(argv: Sequence[str]) -> int:
    """``mixupfl run``: one validated ``flwr run`` with a verdict."""
    parser = argparse.ArgumentParser(prog="mixupfl run", description="One run of the app through `flwr run`.")
    parser.add_argument("--run-config", action="append", metavar='"KEY=VALUE ..."',
                        help="run-config values as for `flwr run` (TOML literals; quote strings: noise-mode='strict')")
    parser.add_argument("--federation-config", action="append", metavar='"num-supernodes=N ..."',
                        help=f"simulation settings as for `flwr run` (default num-supernodes={DEFAULT_PARTIES})")
    parser.add_argument("--app", type=Path, default=PROJECT_ROOT, help="the Flower app folder (default: this project)")
    parser.add_argument("--federation", default=None, help="a federation of $FLWR_HOME/config.toml (a deployment); "
                        "default: the local simulation")
    args = parser.parse_args(list(argv))
    try:
        overrides = _parse_assignments(args.run_config)
        federation = _parse_assignments(args.federation_config)
    except Exception as err:  # noqa: BLE001 - Flower's parser raises plain exceptions with a good message
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.federation is None:
        federation.setdefault("num-supernodes", DEFAULT_PARTIES)
    if not overrides.get("run-name"):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        overrides["run-name"] = f"{overrides.get('strategy', 'one-shot-mixup')}-{stamp}"
    overrides.setdefault("output-dir", str(DEFAULT_RESULTS / "single"))
    try:
        cfg = check_run_config(overrides)
    except ConfigError as err:
        print("error: the run config is refused (nothing was started):", file=sys.stderr)
        for line in str(err).splitlines():
            print(f"  {line}", file=sys.stderr)
        return 2
    parties = federation.get("num-supernodes")
    if args.federation is None and isinstance(parties, int) and parties < cfg.quorum:
        print(f"error: {parties} simulated parties cannot reach quorum = {cfg.quorum} (in simulation every party "
              "registers at start, so waiting cannot help); raise num-supernodes or lower quorum", file=sys.stderr)
        return 2
    summary = Path(cfg.output_dir) / f"{cfg.run_name.removesuffix('.json')}.json"
    env = flower_env(app_dir=args.app.resolve())
    stale = stale_local_superlink(flwr_home(env), app_dir=args.app.resolve()) if args.federation is None else None
    if stale:
        print(f"error: {stale}; its runs would not run this code. Stop it with `mixupfl stop` (the next run "
              "starts a fresh one) and run again.", file=sys.stderr)
        return 2
    with app_to_send(args.app.resolve()) as app:
        cmd = [str(Path(sys.executable).with_name("flwr")), "run", str(app)]
        cmd += [args.federation] if args.federation else []
        cmd += ["--stream", "--run-config", run_config_arg(overrides)]
        if federation:
            cmd += ["--federation-config", run_config_arg(federation)]
        try:
            code, _ = _stream(cmd, env=env)
        except KeyboardInterrupt:
            print("\ninterrupted: the Flower run was stopped", file=sys.stderr)
            return 130
    if code != 0 or not summary.exists():
        print(f"\nrun FAILED (flwr exit {code}); no summary was written to {summary}; the log above says why",
              file=sys.stderr)
        return 1
    print(f"\nsummary: {summary}")
    return 0


def _delegate(module: str) -> Callable[[Sequence[str]], int]:
    def call(argv: Sequence[str]) -> int:
        return int(importlib.import_module(module).main(list(argv)) or 0)

    return call


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"run": (run, "one run through `flwr run`, validated first, with a verdict")}
    commands.update({name: (_delegate(module), text) for name, (module, text) in _DELEGATES.items()})
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        lines = [__doc__.split("\n\n")[0], "", "commands:"]
        lines += [f"  {name:<11} {text}" for name, (_, text) in commands.items()]
        lines += ["", "`mixupfl COMMAND --help` describes each one."]
        stream = sys.stdout if argv and argv[0] in ("-h", "--help") or not argv else sys.stderr
        print("\n".join(lines), file=stream)
        if argv and argv[0] not in ("-h", "--help"):
            close = difflib.get_close_matches(argv[0], list(commands), n=1)
            print(f"\nunknown command {argv[0]!r}" + (f"; did you mean {close[0]!r}?" if close else ""), file=sys.stderr)
            return 2
        return 0
    handler, _ = commands[argv[0]]
    return handler(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
