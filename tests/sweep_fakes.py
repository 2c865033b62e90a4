"""A stand-in executor for sweep tests: it writes a summary of the real shape instead of
starting Flower, and journals every start, finish and recovery so a test can count them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from common.run_summary import RunSummary


def fake_summary(run, run_config: dict) -> dict:
    """A summary with the keys the ServerApp writes; accuracy depends on the cell so tables differ.

    An InstaHide run (``encoding = "instahide"`` in its run config) gets InstaHide's privacy
    block: no noise mode, no tau, no SNR, and exposures as a private component (3 per release,
    so that a test can tell them from singularized mixup's 1 per release).
    """
    one_shot = run.strategy == "one-shot-mixup"
    instahide = run_config.get("encoding") == "instahide"
    epochs = int(run_config.get("central-epochs", 100))
    # in percent, as the ServerApp writes every accuracy
    acc = 80.0 + run.seed + ((3.0 if instahide else 5.0) if one_shot else 0.0) - 2.0 * (run.beta < 0.5)
    per_epoch = run.release == "per-epoch"
    releases = epochs if per_epoch else 1
    config = {"dataset": run_config.get("dataset", "digits"), "backbone": run_config.get("backbone", "none"),
              "seed": run.seed, "encoding": run_config.get("encoding", "singularized"),
              "public-fraction": run_config.get("public-fraction", 0.0),
              "instahide-k": run_config.get("instahide-k", 4),
              "instahide-k-private": run_config.get("instahide-k-private", 2)}
    rounds = (epochs if per_epoch else 1) if one_shot else int(run_config.get("num-rounds", 50))
    summary = {
        "strategy": run.strategy,
        "num_parties": run.parties,
        "config": config,
        "rounds": rounds,
        "result": {"test_accuracy": acc, "test_loss": 0.5, "selection": "validation",
                   "selected_by": "lowest validation loss",
                   "selected_at": 2, "last_test_accuracy": acc - 1.0, "train_seconds": 1.0},
        "communication": {"bytes_uploaded": 1000 * run.parties * releases, "bytes_downloaded": 10 * run.parties,
                          "bytes_uploaded_per_party": 1000.0 * releases, "bytes_downloaded_per_party": 10.0,
                          "messages_sent": run.parties * rounds, "messages_received": run.parties * rounds},
        "wall_seconds": 1.5,
        "started_utc": "2026-12-02T00:00:00+00:00",
        "versions": {"flwr": "fake"},
        "server_device": "cpu",
        "inputs": {"dataset": config["dataset"]},
    }
    per_party = {"mean": releases, "max": releases, "min": releases}
    if one_shot and instahide:
        exposures = {"mean": 2.5 * releases, "max": 3 * releases}
        summary["privacy"] = {
            "encoding": "instahide", "release_mode": run.release, "noise_mode": "none", "tau": None,
            "k": config["instahide-k"], "k_private": config["instahide-k-private"], "public_pool_size": 360,
            "releases_per_party": per_party, "exposures_per_sample": exposures,
            "exposures_per_private_sample": {"as_private_component": exposures},
        }
        summary["history"] = [{"epoch": e, "val_loss": 1.0 / e} for e in range(1, 4)]
    elif one_shot:
        summary["privacy"] = {
            "encoding": "singularized", "release_mode": run.release, "noise_mode": "clamped", "tau": 1e-6,
            "releases_per_party": per_party, "exposures_per_sample": per_party,
            "exposures_per_private_sample": {"as_clean_component": per_party},
            "snr_pc1": {"mean": 3.0, "max": 4.0},
        }
        summary["history"] = [{"epoch": e, "val_loss": 1.0 / e} for e in range(1, 4)]
    else:
        summary["defence"] = {"defence": run_config.get("defence", "none"), "model_norm": "batch"}
        summary["history"] = [{"round": r, "val_loss": 1.0 / r, "test_accuracy": acc - 10.0 / r} for r in range(1, 4)]
    return RunSummary.model_validate(summary).model_dump(mode="json")


class JournalingExecutor:
    """Writes ``start``/``done``/``recover``/``fail`` lines to ``journal``; sleeps ``delay`` per run."""

    def __init__(self, journal: Path, *, delay: float = 0.0, fail: set[str] | None = None) -> None:
        self.journal = Path(journal)
        self.delay = delay
        self.fail = fail or set()
        self.prepared: list[int] = []

    def _log(self, event: str, name: str) -> None:
        with self.journal.open("a", encoding="utf-8") as handle:
            handle.write(f"{event} {name}\n")
            handle.flush()
            os.fsync(handle.fileno())

    def prepare(self, parties: int) -> None:
        self.prepared.append(parties)

    def execute(self, run, *, run_config, log_path, note) -> int:
        self._log("start", run.name)
        note({"pid": os.getpid()})
        log_path.write_text(f"fake run {run.name}\nrun_id `{abs(hash(run.name)) % 10**9}`\n")
        time.sleep(self.delay)
        if any(tag in run.name for tag in self.fail):
            self._log("fail", run.name)
            return 1
        out = Path(run_config["output-dir"]) / f"{run_config['run-name']}.json"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(fake_summary(run, run_config)))
        os.replace(tmp, out)
        self._log("done", run.name)
        return 0

    def recover(self, marker, *, log_path) -> None:
        self._log("recover", marker["name"])


def journal(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines() if line]
