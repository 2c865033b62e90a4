"""Fixtures shared by the tests that go through `flwr run`.

One private local simulation session for the whole test run
(:class:`simulations.runtime.session.LocalSimulation`, as a sweep uses): its own FLWR_HOME
and ports, a staged copy of the app, and one warm Ray cluster that every simulation joins
(``RAY_ADDRESS``: each run then starts only its simulated parties, with PyTorch and the
ClientApp already imported, instead of a Ray cluster of its own). Everything is stopped at the
end and checked: nothing is left running and the user's Flower state is never touched.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from simulations.runtime.local_flower import local_superlink_pids
from simulations.runtime.processes import pids_in_group
from simulations.runtime.session import LocalSimulation

# The suite runs on two pytest-xdist workers (pyproject's addopts): each worker's PyTorch
# gets one thread, so two workers computing at once do not fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

_SHARED_SCOPES = {"module", "class", "package"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):  # noqa: ANN001, ARG001
    """Schedule for two workers (``--dist loadgroup``): the tests of a module that share a
    module-scoped fixture form one group (one worker sets the fixture up once, not each
    worker once), and the end-to-end tests come first, so that no long test starts last
    while the other worker idles. A stable sort: the order within a module is kept."""
    for item in items:
        fixture_scopes = {d.scope for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs}
        if fixture_scopes & _SHARED_SCOPES and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_collection_finish(session):  # noqa: ANN001
    """Fail loudly when the groups did not reach xdist (a pytest / pytest-xdist pair where
    ``--dist loadgroup`` cannot tag node ids): grouped tests would split across workers and
    set their module's fixtures up twice, or run a deployment's ordered tests apart."""
    if not (os.environ.get("PYTEST_XDIST_WORKER") and session.config.getvalue("loadgroup")):
        return
    lost = [item.nodeid for item in session.items
            if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid]
    if lost:  # xdist's controller shows a worker's collection error only as an INTERNALERROR
        message = (f"xdist groups were not applied (pytest {pytest.__version__}, see the pin in pyproject.toml): "
                   f"{lost[:3]}")
        print(message, file=sys.__stderr__, flush=True)
        raise pytest.UsageError(message)


class LocalFlower(tuple):
    """``(FLWR_HOME, environment)``, unpacked as such by the tests, and ``app``: the session's
    staged copy of this app (``pyproject.toml`` and the runtime packages). ``flwr run .`` walks
    the whole project before filtering it, the test run's own virtual environment included
    (3-7 s a run); the staged copy builds in about 0.05 s. Test-only modules named in a run
    config still import: the parties import from ``PYTHONPATH``, the project root."""

    app: Path

    def __new__(cls, home: Path, env: dict[str, str], app: Path) -> LocalFlower:
        made = super().__new__(cls, (home, env))
        made.app = app
        return made


@pytest.fixture(scope="session")
def flower():
    """A private local simulation SuperLink: :class:`LocalFlower`."""
    sim = LocalSimulation().start()
    home, pgid = sim.home, sim.ray.pgid if sim.ray is not None else None
    try:
        yield LocalFlower(home, sim.env, sim.app)
    finally:
        sim.close()
    assert local_superlink_pids(home) == [], "local SuperLink still running after the tests"
    assert pgid is None or pids_in_group(pgid) == [], "Ray cluster still running after the tests"
