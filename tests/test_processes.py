"""The one stop escalation of simulations/runtime (SIGTERM, grace, SIGKILL) on real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from simulations.runtime.processes import pids_in_group, stop_group, terminate

# A child that records the SIGTERM it got, then either exits or ignores it.
CHILD = """
import signal, sys, time
path, obey = sys.argv[1], sys.argv[2] == "obey"
def on_term(*_):
    open(path, "a").write("TERM\\n")
    if obey:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(path, "a").write("ready\\n")
while True:
    time.sleep(0.05)
"""


def _start(tmp_path, obey: bool) -> tuple[subprocess.Popen, object]:
    record = tmp_path / f"{'obey' if obey else 'ignore'}.txt"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(record), "obey" if obey else "ignore"],
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while not (record.exists() and "ready" in record.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc, record


def _alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def test_a_process_that_obeys_sigterm_is_never_killed(tmp_path):
    proc, record = _start(tmp_path, obey=True)
    sent = []
    stopped = terminate(lambda sig: (sent.append(sig), os.kill(proc.pid, sig)), lambda: _alive(proc), grace=10)
    assert stopped and sent == [signal.SIGTERM]
    assert proc.returncode == 0 and record.read_text().count("TERM") == 1


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    proc, record = _start(tmp_path, obey=False)
    sent = []
    started = time.monotonic()
    stopped = terminate(lambda sig: (sent.append(sig), os.kill(proc.pid, sig)), lambda: _alive(proc), grace=0.5)
    assert stopped and sent == [signal.SIGTERM, signal.SIGKILL]
    assert time.monotonic() - started >= 0.5  # it was given the whole grace period first
    assert proc.returncode == -signal.SIGKILL and record.read_text().count("TERM") == 1


def test_a_group_is_stopped_only_when_it_names_the_marker(tmp_path):
    proc, _ = _start(tmp_path, obey=False)
    try:
        assert pids_in_group(proc.pid) == [proc.pid]
        assert stop_group(proc.pid, marker="/no/such/marker", grace=0.2) == 0 and _alive(proc)
        assert stop_group(proc.pid, marker=str(tmp_path), grace=0.2) == 1
        proc.wait(timeout=5)
        assert pids_in_group(proc.pid) == [] and proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
