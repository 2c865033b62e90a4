"""A private local simulation runtime for a batch of ``flwr run``s (a sweep, a benchmark).

What ``flwr run .`` costs before the first message, and what a batch of runs can share:

* **Ray.** Flower's simulation starts a Ray cluster in every run (``ray.init()`` in the
  ``flwr-simulation`` process: GCS, raylet, dashboard agent, monitor), 4-8 s on two cores,
  and tears it down at the end. Ray's ``ray.init()`` honours ``RAY_ADDRESS``, so a batch
  starts one cluster (``ray start --head``) and every run's simulation connects to it
  instead; only the run's actors (its simulated parties) start and stop per run.
* **The app bundle.** ``flwr run <dir>`` walks the whole folder before filtering it, the
  project's virtual environment included (tens of thousands of files, about 3 s), and packs
  every ``.py/.md/.json/.toml`` (results and docs too). The batch runs a staged copy that
  holds only ``pyproject.toml`` and the runtime packages, re-synchronised before every run
  (so an edit between runs is picked up, as with ``flwr run .``).
* **The SuperLink.** It is started by the first ``flwr`` command with that command's
  environment (and keeps it): the batch gets its own ``FLWR_HOME`` and free ports, so its
  SuperLink carries ``RAY_ADDRESS`` and nobody else's runs or settings are touched.

Everything a session starts is stopped by :meth:`LocalSimulation.close` (also at interpreter
exit); a session whose process was killed is cleaned up by the next session that starts
(its folder records its owner's pid and the Ray cluster's process group). The Ray cluster is
stopped by its own process group, never with ``ray stop`` (which stops every Ray cluster of
the machine, other users' included).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from simulations.runtime.local_flower import (
    PROJECT_ROOT,
    flower_env,
    flwr_run_command,
    local_superlink_pids,
    stop_local_superlink,
)
from simulations.runtime.processes import processes_naming, stop_group, stop_processes_naming

__all__ = ["APP_PACKAGES", "LocalSimulation", "WarmRay", "free_port", "processes_naming", "reap_stale_sessions", "stage_app",
           "stop_processes_naming"]

log = logging.getLogger(__name__)

SESSION_PREFIX = "mixupfl-sim-"

APP_PACKAGES = ("client", "server", "common", "features", "loaders")

APP_PRELOAD = ("client.app", "torch._dynamo")
"""What this app's simulated parties import before their first message in a warm session: the
ClientApp, and ``torch._dynamo``, which PyTorch imports at the first optimiser a process
creates (about 2 s: a FedProx party's first update would otherwise pay it)."""
"""What the ServerApp and ClientApp import (``simulations``, ``attacks``, ``benchmarks``,
tests, docs and results are never loaded by a run)."""

_STAGED_SUFFIXES = (".py", ".toml", ".json", ".yaml", ".yml", ".md")
_PRUNED_DIRS = {"__pycache__", "runs", "results", "node_modules", "build", "dist"}


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _app_files(app_dir: Path, packages: Sequence[str] | None) -> dict[str, Path]:
    """Relative path -> file of what a staged app holds: ``pyproject.toml`` plus the ``.py``
    files of ``packages`` (or, with ``None``, every FAB-type file outside hidden, cache and
    result folders)."""
    files = {"pyproject.toml": app_dir / "pyproject.toml"}
    roots = [app_dir / p for p in packages] if packages is not None else [app_dir]
    suffixes = (".py",) if packages is not None else _STAGED_SUFFIXES
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _PRUNED_DIRS]
            for name in filenames:
                if name.endswith(suffixes) and not name.startswith((".", "test_")):
                    path = Path(dirpath) / name
                    files[path.relative_to(app_dir).as_posix()] = path
    return files


def stage_app(app_dir: Path, staged: Path, *, packages: Sequence[str] | None = None) -> Path:
    """Synchronise ``staged`` with the app files of ``app_dir`` (copy what changed, delete
    what went); returns ``staged``. ``flwr run staged`` then builds the same app without
    walking the virtual environment or packing results."""
    wanted = _app_files(app_dir, packages)
    staged.mkdir(parents=True, exist_ok=True)
    for rel, src in wanted.items():
        dst = staged / rel
        try:
            st, dt = src.stat(), dst.stat() if dst.exists() else None
        except FileNotFoundError:
            continue
        if dt is None or dt.st_size != st.st_size or dt.st_mtime_ns != st.st_mtime_ns:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for path in sorted(staged.rglob("*"), reverse=True):
        rel = path.relative_to(staged).as_posix()
        if path.is_file() and rel not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return staged


RAY_HEAD_ENV = {
    # Ray starts idle worker processes for every new job "in case tasks come"; Flower's
    # simulation only creates actors (one process each), so on a small machine those idle
    # Python processes only compete with the run's start-up for the cores.
    "RAY_enable_worker_prestart": "0",
    "RAY_prestart_worker_first_driver": "0",
}


def clientapp_module(app_dir: Path) -> str | None:
    """The module of the app's ClientApp (``[tool.flwr.app.components] clientapp``)."""
    import tomllib

    try:
        config = tomllib.loads((app_dir / "pyproject.toml").read_text(encoding="utf-8"))
        return str(config["tool"]["flwr"]["app"]["components"]["clientapp"]).partition(":")[0] or None
    except (OSError, KeyError, ValueError):
        return None


class WarmRay:
    """One Ray head for many runs: ``ray start --head`` in its own process group, on free
    ports, with its temporary files under ``temp_dir``; :meth:`stop` ends that group only.

    ``preload`` names modules every worker process imports as it starts (Ray's
    ``preload_python_modules``): the ClientApp's module, so that a run's simulated parties
    import PyTorch and the app while the ServerApp is still starting, not at their first
    message."""

    def __init__(self, temp_dir: Path, *, env: Mapping[str, str], num_cpus: int | None = None,
                 num_gpus: int | None = None, preload: Sequence[str] = ()) -> None:
        self.temp_dir = Path(temp_dir)
        self.env = dict(env)
        self.preload = tuple(preload)
        self.num_cpus = num_cpus or os.cpu_count() or 1
        self.num_gpus = num_gpus
        self.address: str | None = None
        self.pgid: int | None = None
        self.start_seconds: float | None = None

    def start(self, *, timeout: float = 120.0) -> str:
        port = free_port()
        cmd = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address", "127.0.0.1",
            "--port", str(port), "--ray-client-server-port", str(free_port()), "--dashboard-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--include-dashboard", "false",
            "--disable-usage-stats", "--num-cpus", str(self.num_cpus), "--temp-dir", str(self.temp_dir),
        ]
        if self.num_gpus is not None:
            cmd += ["--num-gpus", str(self.num_gpus)]
        started = time.perf_counter()
        env = {**self.env, **RAY_HEAD_ENV}
        if self.preload:
            env["RAY_preload_python_modules"] = ",".join(self.preload)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        self.pgid = proc.pid
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"ray start did not finish within {timeout:.0f} s") from None
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed (exit {proc.returncode}):\n{out[-2000:]}")
        self.start_seconds = time.perf_counter() - started
        self.address = f"127.0.0.1:{port}"
        return self.address

    def stop(self) -> int:
        """Stop the cluster's processes (its process group); returns how many there were."""
        if self.pgid is None:
            return 0
        # A scratch cluster: its GCS server, monitor and runtime-env agent outlast a SIGTERM
        # by 10 s or more (measured), and nothing of its state is kept: a short grace suffices.
        stopped = stop_group(self.pgid, marker=str(self.temp_dir), grace=2.0)
        self.pgid, self.address = None, None
        return stopped


def _owner_alive(pid: int) -> bool:
    try:
        return "python" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def reap_stale_sessions(base: Path | None = None) -> list[Path]:
    """Stop and remove what sessions of dead processes left behind (their SuperLink, their
    Ray cluster, their folder); returns the folders removed."""
    removed = []
    for folder in Path(base or tempfile.gettempdir()).glob(f"{SESSION_PREFIX}*"):
        try:
            owner = json.loads((folder / "owner.json").read_text())
        except (OSError, ValueError):
            continue
        if _owner_alive(int(owner.get("pid", -1))):
            continue
        stop_local_superlink(folder / "flwr")
        if owner.get("ray_pgid"):
            stop_group(int(owner["ray_pgid"]), marker=str(folder / "ray"))
        stop_processes_naming(str(folder))
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


class LocalSimulation:
    """Own ``FLWR_HOME`` and ports, a staged app, and (``warm_ray``) one Ray cluster shared by
    every run; use as a context manager or call :meth:`start` and :meth:`close`.

    Parameters
    ----------
    app_dir : Path
        The Flower app (this project by default).
    packages : sequence of str, optional
        What the staged app holds besides ``pyproject.toml``; default :data:`APP_PACKAGES`
        for this project, every FAB-type file for another app.
    warm_ray : bool
        Start one Ray head and point every run at it (``RAY_ADDRESS``); when it cannot be
        started the session goes on without it (each run starts its own Ray, as before).
        When the environment already names a cluster (``RAY_ADDRESS``, e.g. one spanning
        several machines, started with ``ray start``), every run uses that one instead, and
        the session never stops it.
    num_cpus, num_gpus : int, optional
        The Ray head's resources (default: every core; Ray detects GPUs itself).
    preload : sequence of str, optional
        Modules every simulated party's process imports as it starts (default: this app's
        :data:`APP_PRELOAD`; another app's ClientApp module).
    base_env : mapping, optional
        Environment to start from (default :func:`flower_env`).
    """

    def __init__(self, *, app_dir: Path = PROJECT_ROOT, packages: Sequence[str] | None = None, warm_ray: bool = True,
                 num_cpus: int | None = None, num_gpus: int | None = None, preload: Sequence[str] | None = None,
                 base_env: Mapping[str, str] | None = None) -> None:
        self.app_dir = Path(app_dir).resolve()
        if preload is None:
            module = clientapp_module(self.app_dir)
            preload = APP_PRELOAD if self.app_dir == PROJECT_ROOT else ((module,) if module else ())
        self.preload = tuple(preload)
        self.packages = packages if packages is not None else (APP_PACKAGES if self.app_dir == PROJECT_ROOT else None)
        self.warm_ray = warm_ray
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.base_env = dict(base_env) if base_env is not None else None
        self.root: Path | None = None
        self.env: dict[str, str] = {}
        self.ray: WarmRay | None = None
        self.external_ray: str | None = None
        self.ray_error: str | None = None

    @property
    def home(self) -> Path:
        if self.root is None:
            raise RuntimeError("session not started")
        return self.root / "flwr"

    @property
    def app(self) -> Path:
        if self.root is None:
            raise RuntimeError("session not started")
        return self.root / "app"

    @property
    def ray_address(self) -> str | None:
        return self.ray.address if self.ray is not None else self.external_ray

    @property
    def started(self) -> bool:
        return self.root is not None

    def start(self) -> LocalSimulation:
        if self.root is not None:
            return self
        reap_stale_sessions()
        self.root = Path(tempfile.mkdtemp(prefix=SESSION_PREFIX))
        base = self.base_env if self.base_env is not None else flower_env(app_dir=self.app_dir)
        self.env = {**base, "FLWR_HOME": str(self.home),
                    "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
                    "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}
        external = self.env.pop("RAY_ADDRESS", None)
        self._write_owner()
        atexit.register(self.close)
        stage_app(self.app_dir, self.app, packages=self.packages)
        if self.warm_ray and external:  # a cluster started by the user (several machines): used, never stopped
            self.env["RAY_ADDRESS"] = self.external_ray = external
        elif self.warm_ray:
            self.ray = WarmRay(self.root / "ray", env=self.env, num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                               preload=self.preload)
            try:
                self.env["RAY_ADDRESS"] = self.ray.start()
            except RuntimeError as err:
                self.ray_error = str(err)
                log.warning("warm Ray cluster not started (each run starts its own): %s", err)
                self.ray = None
            self._write_owner()
        return self

    def _write_owner(self) -> None:
        assert self.root is not None
        owner = {"pid": os.getpid(), "ray_pgid": self.ray.pgid if self.ray is not None else None,
                 "ray_address": self.ray_address}
        (self.root / "owner.json").write_text(json.dumps(owner))

    def run_command(self, run_config: Mapping[str, object], *, num_supernodes: int) -> list[str]:
        """``flwr run <staged app> --stream ...`` for this session (the app re-staged first)."""
        stage_app(self.app_dir, self.app, packages=self.packages)
        return flwr_run_command(run_config, num_supernodes=num_supernodes, app_dir=self.app, env=self.env)

    def close(self) -> None:
        """Stop the session's SuperLink and Ray cluster and remove its folder (idempotent)."""
        if self.root is None:
            return
        root, self.root = self.root, None
        try:
            stop_local_superlink(root / "flwr")
        finally:
            if self.ray is not None:
                self.ray.stop()
                self.ray = None
            # What the SuperLink started in sessions of their own (its SuperExec, a run's
            # simulation process) outlives its process group: stop whatever still names this
            # session's folder (a fresh temporary folder: nobody else's process does).
            stop_processes_naming(str(root))
            shutil.rmtree(root, ignore_errors=True)
            atexit.unregister(self.close)

    def superlink_running(self) -> bool:
        return bool(self.root is not None and local_superlink_pids(self.home))

    def __enter__(self) -> LocalSimulation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
