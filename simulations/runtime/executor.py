"""How one planned run is computed: the :class:`Executor` protocol and its real implementation,
:class:`FlowerExecutor` (one ``flwr run --stream`` per run against a local simulation SuperLink).

By default the executor runs every run of a sweep in one private local simulation session
(:class:`simulations.runtime.session.LocalSimulation`): its own SuperLink, the app staged
without the virtual environment, and one Ray cluster kept warm for all runs; :meth:`close`
(called by the sweep when it ends, is interrupted or fails) stops all of it.

The sweep (:func:`simulations.sweep.run_sweep`) knows nothing about processes: it hands each
run to an executor, which must leave ``<output-dir>/<run-name>.json`` on success, and asks it
to clean up after a run an interrupted sweep left in flight. Tests use a stand-in executor
that writes summaries without starting Flower.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from simulations.runtime.federation import gpu_share
from simulations.runtime.local_flower import (
    PROJECT_ROOT,
    configure_simulation,
    flower_run_id,
    flwr_run_command,
    stop_flower_run,
)
from simulations.runtime.processes import terminate

if TYPE_CHECKING:
    from simulations.sweep.plan import SweepRun

__all__ = ["Executor", "FlowerExecutor"]


class Executor(Protocol):
    """How one run is computed. It must leave ``<summaries_dir>/<run.name>.json`` on success."""

    def prepare(self, parties: int) -> None: ...

    def execute(self, run: SweepRun, *, run_config: dict[str, Any], log_path: Path,
                note: Callable[[dict[str, Any]], None]) -> int: ...

    def recover(self, marker: Mapping[str, Any], *, log_path: Path) -> None: ...

    # Optional: ``close()`` releases what the executor keeps between runs (called at the end).


class FlowerExecutor:
    """Runs each sweep run as ``flwr run . --stream`` against the local simulation SuperLink.

    Parameters
    ----------
    env : mapping
        Environment of the ``flwr`` commands (:func:`simulations.runtime.local_flower.flower_env`).
    timeout : float
        Seconds allowed per run; a run over time is stopped and counted as failed.
    gpu : bool
        Give every simulated party 1 CPU and ``1 / min(P, cores)`` of the GPU.
    session : bool
        Run in a private :class:`~simulations.runtime.session.LocalSimulation` (default) rather
        than against the SuperLink of ``env``'s ``FLWR_HOME`` with a fresh Ray per run.
    warm_ray : bool
        With ``session``: one Ray cluster for all runs (``RAY_ADDRESS``).
    """

    def __init__(self, *, env: Mapping[str, str], timeout: float, gpu: bool = False, session: bool = True,
                 warm_ray: bool = True) -> None:
        self.env = dict(env)
        self.base_env = dict(env)
        self.timeout = timeout
        self.gpu = gpu
        self.use_session = session
        self.warm_ray = warm_ray
        self.session = None
        self._configured_for: int | None = None

    def _open(self) -> None:
        if not self.use_session or (self.session is not None and self.session.started):
            return
        from simulations.runtime.session import LocalSimulation

        self.session = LocalSimulation(warm_ray=self.warm_ray, base_env=self.base_env).start()
        self.env = self.session.env
        self._configured_for = None

    def close(self) -> None:
        """Stop the session's SuperLink and Ray cluster (idempotent; the next run opens a new one)."""
        if self.session is not None:
            self.session.close()
            self.session = None
            self.env = dict(self.base_env)
            self._configured_for = None

    def prepare(self, parties: int) -> None:
        """Set the simulated parties' resources (Flower stores them in the SuperLink)."""
        self._open()
        key = parties if self.gpu else 0
        if self._configured_for == key:
            return
        share = gpu_share(parties, os.cpu_count() or 1) if self.gpu else 0.0
        configure_simulation(num_supernodes=parties, num_cpus=1, num_gpus=share, env=self.env, quiet=True)
        self._configured_for = key

    def execute(self, run: SweepRun, *, run_config: dict[str, Any], log_path: Path,
                note: Callable[[dict[str, Any]], None]) -> int:
        self._open()
        if self.session is not None:
            cmd = self.session.run_command(run_config, num_supernodes=run.parties)
        else:
            cmd = flwr_run_command(run_config, num_supernodes=run.parties, env=self.env)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w", encoding="utf-8") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            # Own session: the whole `flwr run` process group can be stopped on interrupt.
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=PROJECT_ROOT, start_new_session=True)
            note({"pid": proc.pid})
            try:
                return proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                log.write(f"\n[sweep] run exceeded {self.timeout:.0f} s: stopped\n")
                self._stop(proc.pid, log_path)
                return 124
            except BaseException:  # KeyboardInterrupt / SIGTERM: leave nothing running
                self._stop(proc.pid, log_path)
                raise

    def recover(self, marker: Mapping[str, Any], *, log_path: Path) -> None:
        """Stop what an interrupted sweep left running for this run."""
        pid = marker.get("pid")
        if isinstance(pid, int) and _is_flwr_process(pid):
            self._stop(pid, log_path)
        elif log_path.exists():
            run_id = flower_run_id(log_path.read_text(encoding="utf-8", errors="replace"))
            if run_id is not None:
                stop_flower_run(run_id, env=self.env)

    def _stop(self, pid: int, log_path: Path) -> None:
        run_id = flower_run_id(log_path.read_text(encoding="utf-8", errors="replace")) if log_path.exists() else None
        if run_id is not None:  # the SuperLink would otherwise finish the run in the background
            stop_flower_run(run_id, env=self.env)
        terminate(lambda sig: os.killpg(pid, sig), lambda: _alive(pid), grace=10.0, poll=0.2)


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.lower()
    except OSError:
        return ""
    return ""


def _is_flwr_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"flwr" in cmdline and b"run" in cmdline
