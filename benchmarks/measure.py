"""Measurements shared by the benchmarks (:mod:`benchmarks.flower_overhead`,
:mod:`benchmarks.gpu_pipeline`): timed ``flwr run``s of this app and of the no-op app
(Flower's floor), and plain in-process loops doing the same client work.

Per-round figures are marginal costs: the time between the end of round ``skip`` and the
end of the last round, divided by the rounds in between, so that start-up (process start,
Ray, imports, the first build of every party) never enters a per-round figure.

Times that cross processes are ``time.time()`` (one clock for the whole machine): the
benchmark notes when it started ``flwr run``, the ServerApp logs when it was imported, sent
its first message and got its first reply (``timeline`` line of its log), and the process's
exit closes the run.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from client.party import load_party
from client.release import make_release, to_upload_dtype
from common.config import RunConfig
from common.defences import local_update
from common.model import MixupClassifier
from common.seeds import Stream, derive_seed
from common.training import cosine_lr, evaluate
from server.union import UnionBuffer

BENCH_DIR = Path(__file__).resolve().parent
NOOP_APP = BENCH_DIR / "noop_app"

__all__ = [
    "NOOP_APP", "TimedRun", "marginal", "model_spec", "noop_run", "plain_collect", "plain_fedprox", "timed_flwr_run",
]


# -- runs through `flwr run` -------------------------------------------------------------------
@dataclass
class TimedRun:
    """One ``flwr run``: when it started and ended, the ServerApp's timeline, its output."""

    returncode: int
    started: float
    exited: float
    log_path: Path
    timeline: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    noop: dict[str, Any] | None = None

    @property
    def e2e_seconds(self) -> float:
        return self.exited - self.started

    @property
    def first_reply(self) -> float | None:
        return self.timeline.get("first_reply") or (self.noop or {}).get("first_reply")

    @property
    def startup_seconds(self) -> float | None:
        """Process start to the first reply (Ray, actors, imports, first party build and the
        first message's work: everything before the run's work proper)."""
        first = self.first_reply
        return None if first is None else first - self.started

    def phases(self) -> dict[str, float]:
        """Seconds from ``flwr run``'s start to each timeline point, and the tail after the
        ServerApp finished."""
        points = dict(self.timeline or {})
        if self.noop:
            points.update({k: self.noop[k] for k in ("imported", "main_started", "nodes_ready", "first_push",
                                                      "first_reply", "finished") if self.noop.get(k)})
        out = {k: v - self.started for k, v in points.items() if v}
        finished = points.get("finished")
        if finished:
            out["teardown"] = self.exited - finished
        out["exit"] = self.e2e_seconds
        return out


_TIMELINE = re.compile(r"timeline (\{.*\})")


def read_timeline(log_text: str) -> dict[str, float]:
    """The ServerApp's ``timeline {...}`` line of a run log (empty if absent)."""
    matches = _TIMELINE.findall(log_text)
    return {k: v for k, v in json.loads(matches[-1]).items() if v is not None} if matches else {}


def timed_flwr_run(command: list[str], *, env: Mapping[str, str], cwd: Path, log_path: Path,
                   summary_path: Path | None = None, noop_out: Path | None = None, timeout: float = 3600) -> TimedRun:
    """Run ``command`` (a ``flwr run ... --stream``), log to ``log_path``, read what it left."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        started = time.time()
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd,
                              timeout=timeout, check=False)
        exited = time.time()
    text = log_path.read_text(encoding="utf-8", errors="replace")
    run = TimedRun(returncode=proc.returncode, started=started, exited=exited, log_path=log_path,
                   timeline=read_timeline(text))
    if summary_path is not None and summary_path.exists():
        run.summary = json.loads(summary_path.read_text())
    if noop_out is not None and noop_out.exists():
        run.noop = json.loads(noop_out.read_text())
    if proc.returncode != 0 or (summary_path is not None and run.summary is None) or \
            (noop_out is not None and run.noop is None):
        raise RuntimeError(f"flwr run failed (exit {proc.returncode}); log {log_path}:\n{text[-3000:]}")
    return run


def noop_run(sim, *, mode: str, parties: int, rounds: int, out: Path, log_path: Path,  # noqa: ANN001
             down: str = "", up: str = "", timeout: float = 3600) -> TimedRun:
    """Flower's floor: the no-op app (:mod:`benchmarks.noop_app`) through ``flwr run`` in the
    session ``sim`` (a :class:`simulations.runtime.session.LocalSimulation` of that app)."""
    config = {"mode": mode, "rounds": rounds, "down": down, "up": up, "expected-nodes": parties, "out": str(out)}
    command = sim.run_command(config, num_supernodes=parties)
    return timed_flwr_run(command, env=sim.env, cwd=sim.app, log_path=log_path, noop_out=out, timeout=timeout)


def marginal(ends: list[float], *, skip: int) -> float:
    """Seconds per round from round ends (``ends[i]`` = end of round ``i + 1``), leaving out
    the first ``skip`` rounds: ``(ends[-1] - ends[skip - 1]) / (len(ends) - skip)``."""
    if not 1 <= skip < len(ends):
        raise ValueError(f"need 1 <= skip < {len(ends)} rounds, got skip = {skip}")
    return (ends[-1] - ends[skip - 1]) / (len(ends) - skip)


# -- what the platform moves ---------------------------------------------------------------------
def model_spec(*, in_dim: int, num_classes: int, norm: str = "batch") -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (dtype, shape) of every array of the classifier's state dict (the FedProx payload)."""
    model = MixupClassifier(in_dim=in_dim, num_classes=num_classes, norm=norm)
    return {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in model.state_dict().items()}


# -- plain in-process loops ------------------------------------------------------------------------
PLAIN_THREADS = 1
"""Threads of the plain loops: one, as each simulated party runs (``client.app`` sets it);
the platform runs as many parties at once as it has workers, the plain loop one after the
other. (On a busy machine, more threads than free cores also slow PyTorch down many times.)"""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _threads:
    def __init__(self, n: int) -> None:
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)


def plain_fedprox(cfg: RunConfig, num_parties: int, *, rounds: int, device: torch.device, test_x: torch.Tensor,
                  test_y: torch.Tensor) -> dict[str, Any]:
    """FedProx without Flower: per round, every party's update with the ClientApp's own
    function and seeds (:func:`common.defences.local_update`, dropout seeded per party and
    round), the size-weighted average, the parties' validation losses when the run's
    selection rule asks for them, and the server's test evaluation. Returns the round ends
    (seconds from the first round's start) and the time the parties took to build."""
    with _threads(PLAIN_THREADS):
        started = time.perf_counter()
        parties = [load_party(cfg, pid, num_parties) for pid in range(num_parties)]
        built = time.perf_counter() - started
        in_dim, num_classes = int(parties[0].train_x[0].numel()), parties[0].num_classes
        torch.manual_seed(cfg.seed)
        global_model = MixupClassifier(in_dim=in_dim, num_classes=num_classes, norm=cfg.model_norm).to(device)
        global_state = {k: v.detach().clone() for k, v in global_model.state_dict().items()}
        model = MixupClassifier(in_dim=in_dim, num_classes=num_classes, norm=cfg.model_norm).to(device)
        ends = []
        start = time.perf_counter()
        for rnd in range(1, rounds + 1):
            lr = cosine_lr(cfg.lr, rnd - 1, cfg.num_rounds)
            states, sizes = [], []
            for party in parties:
                model.load_state_dict(global_state)
                gen = torch.Generator().manual_seed(derive_seed(cfg.seed, party.partition_id, Stream.TRAIN, rnd))
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(derive_seed(cfg.seed, party.partition_id, Stream.DROPOUT, rnd))
                    local_update(cfg, party, model, lr=lr, proximal_mu=cfg.proximal_mu, generator=gen,
                                 server_round=rnd)
                states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
                sizes.append(int(party.train_x.shape[0]))
            total = sum(sizes)
            global_state = {
                k: sum(s[k].double() * (n / total) for s, n in zip(states, sizes, strict=True)).to(states[0][k].dtype)
                for k in global_state
            }
            global_model.load_state_dict(global_state)
            if cfg.selection == "validation":
                for party in parties:
                    evaluate(global_model, party.val_x, party.val_y)
            evaluate(global_model, test_x, test_y)
            _sync(device)
            ends.append(time.perf_counter() - start)
    return {"round_ends": ends, "build_seconds": built, "torch_threads": PLAIN_THREADS}


def plain_collect(cfg: RunConfig, num_parties: int, *, epochs: int, device: torch.device) -> dict[str, Any]:
    """One-shot collections without Flower: every party's release for each epoch (the
    ClientApp's :func:`client.release.make_release` and upload cast, fresh mixtures per
    epoch as with ``release = "per-epoch"``), copied into a union buffer as the server does.
    Returns the seconds of each collection, each party's release shapes (the floor's
    payload), and the union's size."""
    with _threads(PLAIN_THREADS):
        parties = [load_party(cfg, pid, num_parties) for pid in range(num_parties)]
        seconds, shapes, union_bytes = [], {}, 0
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            union = UnionBuffer(expected_parties=num_parties, device=device)
            for party in parties:
                made = make_release(cfg, party, device=device, epoch=epoch, with_validation=False)
                x = to_upload_dtype(made.train.x, cfg.upload_dtype).detach().cpu().contiguous().numpy()
                y = made.train.y.float().detach().cpu().contiguous().numpy()
                union.add(party.partition_id, x, y)
                if epoch == 1:
                    shapes[party.partition_id] = {"x": (str(x.dtype), tuple(x.shape)),
                                                  "y": (str(y.dtype), tuple(y.shape))}
            _sync(device)
            seconds.append(time.perf_counter() - start)
            union_bytes = union.used_bytes
    return {"collect_seconds": seconds, "shapes": shapes, "union_bytes": union_bytes, "torch_threads": PLAIN_THREADS}


def mean_after(values: list[float], skip: int) -> float:
    """Mean of ``values[skip:]`` (the warm ones)."""
    return statistics.fmean(values[skip:])
