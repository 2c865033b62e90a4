"""Fixtures shared by the tests that go through `flwr run`.

One local SuperLink per test session, with its own FLWR_HOME and ports under pytest's
tmp folder, and one warm Ray cluster that every simulation of the session joins
(``RAY_ADDRESS``, as a sweep's session does: each run then starts only its simulated parties,
with PyTorch and the ClientApp already imported, instead of a Ray cluster of its own); both
are stopped at the end: nothing is left running and the user's Flower state is never touched.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from simulations.runtime.local_flower import PROJECT_ROOT, flower_env, local_superlink_pids, stop_local_superlink
from simulations.runtime.processes import pids_in_group
from simulations.runtime.session import APP_PRELOAD, WarmRay, stage_app


class LocalFlower(tuple):
    """``(FLWR_HOME, environment)``, unpacked as such by the tests, and ``app``: a staged copy of
    this app (``pyproject.toml`` and the runtime packages, as a sweep runs it). ``flwr run .``
    walks the whole project before filtering it, the test run's own virtual environment
    included (3-7 s a run); the staged copy builds in about 0.05 s. Test-only modules named in
    a run config still import: the parties import from ``PYTHONPATH``, the project root."""

    app: Path

    def __new__(cls, home: Path, env: dict[str, str], app: Path) -> LocalFlower:
        made = super().__new__(cls, (home, env))
        made.app = app
        return made


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def flower(tmp_path_factory):
    """A private local simulation SuperLink: :class:`LocalFlower`."""
    home = tmp_path_factory.mktemp("flwr-home")
    env = flower_env(
        home=home,
        extra={
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
            "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        },
    )
    # Ray's socket paths must stay under 107 characters: a short folder of its own, not pytest's.
    ray_dir = Path(tempfile.mkdtemp(prefix="mixupfl-test-ray-"))
    ray = WarmRay(ray_dir, env=env, preload=APP_PRELOAD)
    try:
        env["RAY_ADDRESS"] = ray.start()
    except RuntimeError as err:  # the runs then start their own Ray, as `flwr run` does by default
        print(f"warm Ray cluster not started: {err}")
    pgid = ray.pgid
    try:
        yield LocalFlower(home, env, stage_app(PROJECT_ROOT, home.parent / "app"))
    finally:
        stop_local_superlink(home)
        ray.stop()
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert local_superlink_pids(home) == [], "local SuperLink still running after the tests"
    assert pgid is None or pids_in_group(pgid) == [], "Ray cluster still running after the tests"
