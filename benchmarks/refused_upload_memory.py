"""The ServerApp's memory for a refused large one-shot upload, before and after "size before
transfer" (:mod:`server.announcement`).

Four simulated parties under ``max-upload-mb = 5``; party 3 would send a release of ``--mb``
MiB (its rows repeated, tests/fault_injection.py):

* ``before``: party 3 announces its small honest release and sends the large one (fault
  ``lies``): the server receives the whole upload before refusing it, exactly what every
  oversized upload cost before the announcement round existed;
* ``after``: party 3 announces the large release truthfully (fault ``oversized``): it is
  refused at the announcement and never built or sent.

Prints, per case, the run's wall time, party 3's uploaded bytes and the summary's ``memory``
block (:class:`server.memory.MemoryProbe`, over announcement, collection and training)::

    python -m benchmarks.refused_upload_memory --mb 300
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path

from simulations.runtime.local_flower import flower_env, flwr_run, stop_local_superlink
from tests.app_variants import app_with_components
from tests.fault_injection import write_fault_plan

FIGURES = ("host_peak_growth_bytes", "host_anon_peak_growth_bytes", "host_shmem_peak_growth_bytes",
           "peak_growth_until_announced_bytes", "peak_growth_until_collected_bytes",
           "peak_growth_until_collected_anon_bytes", "host_rss_start_bytes", "host_peak_rss_bytes")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_case(case: str, mb: float, base: Path, env: dict, app: Path) -> dict:
    """One ``flwr run`` with party 3 under fault ``lies`` (before) or ``oversized`` (after)."""
    out = base / case
    write_fault_plan(out, {3: {"test-fault": "lies" if case == "before" else "oversized", "test-fault-mb": mb}})
    config = {"strategy": "one-shot-mixup", "central-epochs": 1, "min-party-size": 10, "quorum": 2,
              "max-upload-mb": 5.0, "output-dir": str(out), "run-name": case}
    started = time.perf_counter()
    proc = flwr_run(config, num_supernodes=4, log_path=base / f"{case}.log", env=env, timeout=600, app_dir=app)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{case}: flwr run failed; see {base / f'{case}.log'}")
    summary = json.loads((out / f"{case}.json").read_text())
    (rejection,) = [r for r in summary["rejections"] if r["partition-id"] == 3]
    memory = summary["memory"]
    return {"case": case, "wall_seconds": round(seconds, 1), "reason": rejection["reason"],
            "party3_bytes_uploaded": summary["communication"]["bytes_uploaded_by_node_id"][str(rejection["node-id"])],
            **{k: memory.get(k) for k in FIGURES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=300.0, help="size of the refused release, MiB")
    parser.add_argument("--cases", nargs="+", default=["before", "after"], choices=["before", "after"])
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="refused-upload-"))
    home = base / "flwr-home"
    env = flower_env(home=home, extra={"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
                                       "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port())})  # a private SuperLink
    app = app_with_components(base / "app", clientapp="tests.fault_injection:app")
    try:
        for case in args.cases:
            row = run_case(case, args.mb, base, env, app)
            print(json.dumps(row), flush=True)
    finally:
        stop_local_superlink(home)


if __name__ == "__main__":
    main()
