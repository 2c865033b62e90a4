"""Fixtures shared by the tests that go through `flwr run`.

One local SuperLink per test session, with its own FLWR_HOME and ports under pytest's
tmp folder, stopped at the end: nothing is left running and the user's Flower state is
never touched.
"""

from __future__ import annotations

import socket

import pytest

from simulations.runtime.local_flower import flower_env, local_superlink_pids, stop_local_superlink


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def flower(tmp_path_factory):
    """``(FLWR_HOME, environment)`` of a private local simulation SuperLink."""
    home = tmp_path_factory.mktemp("flwr-home")
    env = flower_env(
        home=home,
        extra={
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
            "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        },
    )
    yield home, env
    stop_local_superlink(home)
    assert local_superlink_pids(home) == [], "local SuperLink still running after the tests"
