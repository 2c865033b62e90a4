"""Drive Flower 1.42's local simulation runtime from Python: environment, federation size,
``flwr run`` invocations, run ids, and stopping runs and the managed local SuperLink.

``flwr run`` starts a detached local SuperLink on first use; it keeps the environment it
was started with, so the variables below must be set before the first ``flwr`` command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path

from simulations.runtime.processes import terminate

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Without these the SuperLink re-installs the app's dependencies into a fresh virtual
# environment for every run and reports usage to Flower's telemetry endpoint.
FLOWER_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}


def flwr_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("FLWR_HOME", Path.home() / ".flwr")).expanduser()


def flower_env(*, home: Path | None = None, extra: Mapping[str, str] | None = None,
               app_dir: Path = PROJECT_ROOT) -> dict[str, str]:
    """The current environment plus the variables a local simulation needs.

    ``PYTHONPATH`` starts with ``app_dir``: the simulation runtime hands its own ``sys.path``
    to the Ray workers that run the simulated parties, and those import the app's packages
    from there, not from the installed app bundle; without this, a virtual environment whose
    editable install points at another checkout would run the parties on that checkout's code.
    """
    env = dict(os.environ)
    env.update(FLOWER_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(app_dir), *filter(None, [env.get("PYTHONPATH")])])
    # `flwr` starts `flower-superlink` by name: the interpreter's own scripts come first, so that
    # a venv's Python run without activating the venv finds its Flower (not another one, or none).
    scripts = str(Path(sys.executable).parent)
    if (Path(scripts) / "flower-superlink").exists():
        env["PATH"] = os.pathsep.join([scripts, *[p for p in env.get("PATH", "").split(os.pathsep) if p != scripts]])
    if home is not None:
        env["FLWR_HOME"] = str(home)
    env.update(extra or {})
    return env


def _flwr(env: Mapping[str, str] | None = None) -> str:
    candidate = Path(sys.executable).with_name("flwr")
    if candidate.exists():
        return str(candidate)
    return shutil.which("flwr", path=(env or os.environ).get("PATH")) or "flwr"


def ensure_flower_scripts(bin_dir: Path, env: dict[str, str]) -> bool:
    """Write Flower's console scripts into ``bin_dir`` and put it first on ``env["PATH"]``
    when they are not installed (a ``PYTHONPATH`` bundle such as the GPU machine's has the
    packages but no ``bin/``; ``flwr run`` starts ``flower-superlink`` and
    ``flwr-simulation`` by name). Returns True when wrappers were written."""
    if shutil.which("flwr", path=env.get("PATH")) and shutil.which("flower-superlink", path=env.get("PATH")):
        return False
    bin_dir.mkdir(parents=True, exist_ok=True)
    for entry in entry_points(group="console_scripts"):
        if not entry.value.startswith("flwr"):
            continue
        module, _, func = entry.value.partition(":")
        script = bin_dir / entry.name
        script.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"
        )
        script.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return True


def toml_literal(value: object) -> str:
    """Render ``value`` as the TOML literal ``--run-config`` expects (types are kept)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".eEn") else text + ".0"
    if isinstance(value, str):
        if "'" in value:
            raise ValueError(f"run-config strings cannot contain a single quote: {value!r}")
        return f"'{value}'"
    raise TypeError(f"unsupported run-config value {value!r}")


def run_config_arg(values: Mapping[str, object]) -> str:
    return " ".join(f"{key}={toml_literal(val)}" for key, val in values.items())


def configure_simulation(
    *, num_supernodes: int, num_cpus: int = 1, num_gpus: float = 0.0, env: Mapping[str, str] | None = None,
    quiet: bool = False,
) -> None:
    """Set the default local federation's size with Flower's own command (stored by the
    local SuperLink, which this starts if needed). ``quiet`` keeps Flower's messages off the
    terminal (a progress bar is drawn there) unless the command fails."""
    cmd = [
        _flwr(env), "federation", "simulation-config",
        "--num-supernodes", str(num_supernodes),
        "--client-resources-num-cpus", str(num_cpus),
        "--client-resources-num-gpus", str(num_gpus),
    ]
    proc = subprocess.run(cmd, env=dict(env or flower_env()), cwd=PROJECT_ROOT, capture_output=quiet, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stdout or ''}{proc.stderr or ''}")


def flwr_run_command(run_config: Mapping[str, object], *, num_supernodes: int, app_dir: Path = PROJECT_ROOT,
                     env: Mapping[str, str] | None = None) -> list[str]:
    """The ``flwr run <app> --stream`` command line for a run config and federation size."""
    return [
        _flwr(env), "run", str(app_dir), "--stream",
        "--run-config", run_config_arg(run_config),
        "--federation-config", f"num-supernodes={num_supernodes}",
    ]


def flwr_run(
    run_config: Mapping[str, object],
    *,
    num_supernodes: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    app_dir: Path = PROJECT_ROOT,
) -> subprocess.CompletedProcess:
    """``flwr run <app> --stream`` with the given run config and federation size.

    The streamed log goes to ``log_path`` (and nothing is lost if the run fails: the
    caller gets the return code and the log path)."""
    cmd = flwr_run_command(run_config, num_supernodes=num_supernodes, app_dir=app_dir, env=env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        return subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(env or flower_env()),
            cwd=app_dir, timeout=timeout, check=False,
        )


def flower_run_id(log_text: str) -> int | None:
    """The Flower run id a ``flwr run --stream`` log announces, if it got that far."""
    match = re.search(r"run_id `?(\d+)`?", log_text)
    return int(match.group(1)) if match else None


def stop_flower_run(run_id: int, *, env: Mapping[str, str] | None = None, timeout: float = 30) -> bool:
    """Ask the local SuperLink to stop run ``run_id`` (``flwr stop``); True when it accepted."""
    try:
        proc = subprocess.run(
            [_flwr(env), "stop", str(run_id)], env=dict(env or flower_env()), cwd=PROJECT_ROOT,
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def local_superlink_pids(home: Path) -> list[int]:
    """PIDs of managed local SuperLinks whose database lives under ``home``."""
    marker = str(home / "local-superlink")
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in cmdline if a]
        if any("flower-superlink" in a for a in args[:2]) and any(marker in a for a in args):
            pids.append(int(proc.name))
    return pids


def stale_local_superlink(home: Path, *, app_dir: Path = PROJECT_ROOT) -> str | None:
    """Why the running local SuperLink of ``home`` cannot serve this app's runs, or ``None``.

    The local SuperLink keeps the environment of the ``flwr`` command that started it, and its
    simulations import the app from that environment's ``PYTHONPATH``: one started from another
    checkout runs that checkout's code; one started before Flower was upgraded runs the old
    Flower against the new one's simulation process (runs then hang after "Starting
    logstream"). Both are found here from ``/proc`` (Linux; elsewhere nothing is checked)."""
    import flwr

    installed = Path(flwr.__file__).resolve().parent
    for pid in local_superlink_pids(home):
        try:
            environ = dict(item.split("=", 1) for item in
                           Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
            started = Path(f"/proc/{pid}").stat().st_mtime
        except OSError:
            continue
        first = next(iter(filter(None, environ.get("PYTHONPATH", "").split(os.pathsep))), "")
        if first and Path(first).resolve() != Path(app_dir).resolve():
            return f"the local SuperLink (pid {pid}) was started for the app in {first}, not {app_dir}"
        newest = max((installed / name).stat().st_mtime for name in ("__init__.py", "cli") if (installed / name).exists())
        if newest > started:
            return f"the local SuperLink (pid {pid}) was started before Flower was (re)installed"
    return None


def stop_local_superlink(home: Path, *, grace: float = 10.0) -> int:
    """Stop the managed local SuperLink of ``home`` and its process group; returns how many
    SuperLinks were stopped."""
    pids = local_superlink_pids(home)

    def send(sig: int) -> None:
        for pid in pids:
            try:
                os.killpg(os.getpgid(pid), sig)
            except (ProcessLookupError, PermissionError):
                pass

    if pids:
        terminate(send, lambda: any(Path(f"/proc/{p}").exists() for p in pids), grace=grace, poll=0.2)
    return len(pids)
