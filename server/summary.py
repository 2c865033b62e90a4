"""Run summaries: the typed summary (:mod:`common.run_summary`) assembled from a strategy's
result, and a short table for the log.

Every accuracy is written next to how it was made: strategy, encoding or defence, release
mode, noise mode, seed, and the rule that selected the model (never test accuracy).
"""

from __future__ import annotations

import math
from typing import Any

from common.config import RunConfig
from common.run_summary import (
    AggregationSummary,
    Communication,
    DataSource,
    Outcome,
    Participation,
    PartitionConflict,
    RoundParticipation,
    RunSummary,
    accuracies_in_percent,
    percent,
)
from server.metered_grid import MeteredGrid
from server.strategies import SELECTED_BY, SELECTED_BY_LAST, SELECTED_BY_VALIDATION, OneShotResult, SelectedModel
from server.strategies.local_only import LocalOnlyResult

__all__ = ["communication", "data_source", "iterative_parts", "local_only_parts", "one_shot_participation",
           "one_shot_parts", "partition_conflicts", "round_accounting", "table_lines"]


def communication(grid: MeteredGrid, num_parties: int) -> Communication:
    """What the metering grid counted, in total and per party."""
    return Communication(
        bytes_uploaded=grid.total_bytes_received, bytes_downloaded=grid.total_bytes_sent,
        bytes_uploaded_per_party=grid.total_bytes_received / num_parties,
        bytes_downloaded_per_party=grid.total_bytes_sent / num_parties,
        messages_sent=grid.messages_sent, messages_received=grid.messages_received,
        bytes_uploaded_by_node_id={str(node): int(n) for node, n in sorted(grid.bytes_received.items())},
    )


def _test(result_metrics: dict, step: int) -> tuple[float, float]:
    metrics = result_metrics.get(step)
    if metrics is None:
        raise RuntimeError(f"no test evaluation of the model of step {step}")
    return float(metrics["test-loss"]), float(metrics["test-accuracy"])


def one_shot_participation(cfg: RunConfig, result: OneShotResult, *, expected: int,
                           connected: list[int]) -> Participation:
    """Who contributed a first release; a non-contributing node failed, sent nothing, or was
    rejected (a partition conflict's claimants included)."""
    return Participation(
        expected=expected, connected=len(connected), quorum=cfg.quorum,
        contributed_partitions=[m["partition-id"] for m in result.parties],
        contributed_nodes=[m["node-id"] for m in result.parties],
        not_contributing_nodes=sorted({f["node-id"] for f in result.failures if f.get("epoch") is None}
                                      | {r["node-id"] for r in result.rejections if r.get("epoch", 1) == 1}),
    )


def partition_conflicts(result: OneShotResult) -> list[PartitionConflict]:
    """The one-shot result's partition conflicts, typed for the summary."""
    return [PartitionConflict(partition_id=c["partition-id"], node_ids=c["node-ids"], epoch=c["epoch"])
            for c in result.conflicts]


def one_shot_parts(cfg: RunConfig, result: OneShotResult, *, expected: int, connected: list[int]) -> dict[str, Any]:
    """The one-shot fields of the run summary."""
    test_loss, test_acc = _test(result.evaluate_metrics_serverapp, result.selected_epoch)
    _, last_acc = _test(result.evaluate_metrics_serverapp, result.last_epoch)
    test_acc, last_acc = percent(test_acc), percent(last_acc)
    parties = result.parties
    return {
        "rounds": 1 + len(result.later_epochs) + (result.selection_round is not None),
        "result": Outcome(test_accuracy=test_acc, test_loss=test_loss, selection=cfg.selection,
                          selected_by=SELECTED_BY[cfg.selection], selected_at=result.selected_epoch,
                          selected_val_loss=_finite(result.selected_val_loss), last_test_accuracy=last_acc,
                          train_seconds=result.train_seconds, selection_round=result.selection_round),
        "privacy": cfg.encoding_spec.privacy_summary(cfg, parties, result.releases),
        "union": result.union,
        "memory": result.memory,
        "parties": parties,
        "later_epochs": result.later_epochs,
        "failures": result.failures,
        "rejections": result.rejections,
        "partition_conflicts": partition_conflicts(result),
        "participation": one_shot_participation(cfg, result, expected=expected, connected=connected),
        "history": accuracies_in_percent(result.history),
    }


def round_accounting(cfg: RunConfig, rounds: list[RoundParticipation], *, expected: int,
                     connected: list[int]) -> dict[str, Any]:
    """FedProx / FedAvg participation: per round and stage (``round_participation``), every
    rejection (``rejections``: round, stage, node, party, reason) and every error reply,
    missing reply or absence (``failures``), and the run's :class:`Participation`, where a
    contributing party is one whose update entered at least one round and a non-contributing
    node one that missed at least one training round."""
    rejections, failures = [], []
    for row in rounds:
        for entry in row.left_out:
            where = {"round": row.round, "stage": row.stage, "node-id": entry.node_id,
                     "partition-id": entry.partition_id}
            if entry.outcome == "rejected":
                rejections.append({**where, "reason": entry.reason})
            else:
                failures.append({**where, "outcome": entry.outcome, "error": entry.reason})
    train = [row for row in rounds if row.stage == "train"]
    return {
        "round_participation": rounds,
        "rejections": rejections,
        "failures": failures,
        "participation": Participation(
            expected=expected, connected=len(connected), quorum=cfg.quorum,
            contributed_partitions=sorted({pid for row in train for pid in row.contributed_partitions}),
            contributed_nodes=sorted({nid for row in train for nid in row.contributed_nodes}),
            not_contributing_nodes=sorted({e.node_id for row in train for e in row.left_out}),
        ),
    }


def iterative_parts(cfg: RunConfig, history: list[dict], selected: SelectedModel | None,
                    train_seconds: float, *, aggregation: AggregationSummary | None = None) -> dict[str, Any]:
    """The iterative fields of the run summary (FedProx / FedAvg), with the aggregation rule."""
    if selected is None:
        raise RuntimeError("no round produced a validation loss to select on")
    history = accuracies_in_percent(history)
    best = next(r for r in history if r["round"] == selected.server_round)
    return {
        "rounds": cfg.num_rounds,
        "result": Outcome(test_accuracy=best["test_accuracy"], test_loss=best["test_loss"], selection=cfg.selection,
                          selected_by=SELECTED_BY_VALIDATION if cfg.selection == "validation" else SELECTED_BY_LAST,
                          selected_at=best["round"], selected_val_loss=best.get("val_loss"),
                          last_test_accuracy=history[-1]["test_accuracy"], train_seconds=train_seconds,
                          seconds_per_round=train_seconds / cfg.num_rounds),
        "defence": cfg.defence_spec.summary(cfg, history),
        "aggregation": aggregation,
        "history": history,
    }


def local_only_parts(cfg: RunConfig, result: LocalOnlyResult) -> dict[str, Any]:
    """The reference without collaboration: each party's own model, mean and worst."""
    per_party = {str(pid): percent(m["test-accuracy"]) for pid, m in sorted(result.per_party.items())}
    losses = [m["test-loss"] for m in result.per_party.values()]
    mean = percent(result.mean_accuracy)
    return {
        "rounds": 1,
        "result": Outcome(test_accuracy=mean, test_loss=sum(losses) / len(losses),
                          selection=cfg.selection, selected_by=SELECTED_ALONE, selected_at=cfg.central_epochs,
                          last_test_accuracy=mean, train_seconds=result.seconds),
        "local_only": {"per_party_test_accuracy": per_party, "mean": mean,
                       "worst": percent(result.worst_accuracy), "epochs": cfg.central_epochs},
        "failures": result.failures,
    }


def data_source(cfg: RunConfig, *, test: str, federated=None, selected_step: int = 0,  # noqa: ANN001
                release_parties: list[dict] | None = None) -> DataSource:
    """Where the data came from and what the reported model was tested on.

    ``federated`` (:class:`server.federated_evaluation.FederatedTest`) gives each party's sizes and
    test figures; without it (a server test set) a one-shot run still knows each party's
    training rows from its release (``release_parties``).
    """
    if not cfg.node_local:
        return DataSource(kind="partition", test=test,
                          description=f"partition of {cfg.dataset} ({cfg.partitioner}, beta = {cfg.beta:g}, "
                                      f"seed {cfg.seed})")
    contract = (f"classes {', '.join(cfg.class_names) or f'0..{cfg.contract_num_classes - 1}'}; {cfg.input_kind} "
                f"{'x'.join(map(str, cfg.sample_shape))}; unknown classes {cfg.unknown_classes}")
    description = f"node-local: each party's own data ({contract})"
    if federated is None:
        parties = [{"partition-id": int(m["partition-id"]), "node-id": int(m["node-id"]),
                    "num-train": int(m["num-examples"])} for m in (release_parties or [])]
        return DataSource(kind="node-local", description=description, test=test, parties=parties)
    parties = []
    for party in federated.parties:
        row = {k: v for k, v in party.items() if not k.startswith("test-")}
        row["test-accuracy"] = percent(party[f"test-accuracy-{selected_step}"])
        row["test-loss"] = party[f"test-loss-{selected_step}"]
        parties.append(row)
    loss, accuracy = federated.per_step[selected_step]
    figures = {"accuracy": percent(accuracy), "loss": loss, "rows": federated.rows, "model_step": selected_step,
               "per_party_accuracy": {str(p["partition-id"]): p["test-accuracy"] for p in parties},
               **federated.figures}
    return DataSource(kind="node-local", description=description, test=test, parties=parties,
                      federated_test=figures)


SELECTED_ALONE = "each party's own model after central-epochs (no collaboration); the mean over parties"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _fmt_bytes(num: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num) < 1024 or unit == "GiB":
            return f"{num:.1f} {unit}" if unit != "B" else f"{int(num)} B"
        num /= 1024
    return f"{num:.1f} GiB"


def table_lines(summary: RunSummary) -> list[str]:
    """A few aligned lines that say what ran, how, and what came out."""
    from common.defences import get_defence
    from common.encodings import get_encoding

    config, comm, acc = summary.config, summary.communication, summary.result
    rows = [
        ("strategy", summary.strategy),
        ("data / parties", f"{config['dataset']}, P = {summary.num_parties}, "
         f"{config['partitioner']} beta = {config['beta']}"),
        ("seed", str(config["seed"])),
        ("test accuracy", f"{acc.test_accuracy:.2f} %  ({acc.selected_by})"),
        ("tested on", summary.data_source.test if summary.data_source else "the server's test split"),
        ("rounds", str(summary.rounds)),
        ("uploaded / downloaded", f"{_fmt_bytes(comm.bytes_uploaded)} / {_fmt_bytes(comm.bytes_downloaded)}"),
        ("wall time", f"{summary.wall_seconds:.1f} s"),
    ]
    source = summary.data_source
    if source is not None and source.kind == "node-local":
        sizes = ", ".join(f"{p['partition-id']}: {p.get('num-train', '?')}/{p.get('num-val', '?')}/"
                          f"{p.get('num-test', '-')} ({p.get('data-format', '?')})" for p in source.parties)
        rows[1] = ("data / parties", f"node-local, P = {summary.num_parties}; train/val/test rows {sizes}")
    if source is not None and source.federated_test is not None:
        each = ", ".join(f"{k}: {v:.1f} %" for k, v in source.federated_test["per_party_accuracy"].items())
        rows.insert(5, ("each party's test", each))
    if summary.privacy is not None:
        privacy = summary.privacy.model_dump()
        extra = get_encoding(summary.privacy.encoding).log_rows(privacy)
        rows[3:3] = extra[:1]
        rows += extra[1:]
    if summary.local_only is not None:
        rows.insert(4, ("each party alone", f"mean {summary.local_only['mean']:.2f} %, worst party "
                        f"{summary.local_only['worst']:.2f} % (no collaboration)"))
    if summary.aggregation is not None and summary.aggregation.rule != "mean":
        rows.insert(4, ("aggregation", summary.aggregation.description))
    if summary.round_participation:
        rows.append(("left out", f"{len(summary.rejections)} rejected, {len(summary.failures)} missing or failed "
                     "replies (round_participation)"))
    if summary.partition_conflicts:
        rows.append(("partition conflicts", "; ".join(
            f"partition {c.partition_id} claimed by nodes {', '.join(map(str, c.node_ids))} (all flagged)"
            for c in summary.partition_conflicts)))
    if summary.defence is not None and not get_defence(summary.defence.defence).plain:
        rows[3:3] = get_defence(summary.defence.defence).log_rows(summary.defence.model_dump())
    width = max(len(k) for k, _ in rows)
    return [f"{k.ljust(width)} | {v}" for k, v in rows]
