"""The typed run summary: what the ServerApp writes for every run, and what sweeps read.

One JSON file per run (:meth:`RunSummary.write`); :func:`read_summary` reads it back, and
:class:`RunRow` is the one-line form a sweep's ``runs.csv`` holds (its columns and their
types are this model's fields). Summaries of older schemas are upgraded by :func:`read_summary`
(:func:`_upgrade_legacy`, :func:`_fractions_to_percent`) and nowhere else.

Every accuracy is in percent (0-100), here as in ``runs.csv``, reports, tables and logs
(:data:`ACCURACY_UNIT`); the parties' and the server's evaluations compute fractions, which
become percent once, where the summary is built (:func:`percent`, :func:`accuracies_in_percent`).
Summaries of schema 2 and older held fractions; :func:`read_summary` converts them. Each
accuracy is stored next to how it was made: strategy, encoding or defence, release mode,
noise mode, seed, and the rule that selected the model (never the test set).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.io import write_json_atomic

__all__ = [
    "AggregationSummary", "Communication", "DataSource", "DefenceSummary", "FAILED_SUFFIX", "FailedRunSummary", "LeftOut", "Outcome",
    "Participation", "PartitionConflict", "PrivacySummary", "RoundParticipation", "RunRow", "RunSummary", "SCHEMA_VERSION",
    "UnionFigures", "ACCURACY_UNIT", "accuracies_in_percent", "percent", "read_summary",
]

SCHEMA_VERSION = 3
"""3: accuracies in percent (2: fractions in [0, 1]; 1: before the typed summary)."""

ACCURACY_UNIT = "percent"
"""The one unit of every accuracy the platform writes or prints: percent, 0-100."""


def percent(fraction: float) -> float:
    """An accuracy computed as a fraction in [0, 1], in percent (the unit of every output)."""
    return 100.0 * float(fraction)


def _is_accuracy(key: str) -> bool:
    return key.replace("-", "_").endswith("accuracy")


def accuracies_in_percent(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records (per epoch, per round, per party) with every ``*accuracy`` figure (test,
    validation) in percent; the other figures (losses, sizes, seconds, learning rates) as they
    are. New dicts: the caller's records (fractions, used for selection) are not changed."""
    return [{k: percent(v) if _is_accuracy(k) and v is not None else v for k, v in row.items()} for row in rows]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Outcome(_Model):
    """The model a run reports and how it was chosen."""

    test_accuracy: float = Field(ge=0, le=100, description=(
        "in percent, of the selected model: on the server's test data, or size-weighted over the parties' own "
        "held-out test parts (the summary's data_source.test says which)"))
    test_loss: float
    selection: str = Field(description="the selection rule's run-config value: last, validation, mixed-validation")
    selected_by: str = Field(description="the rule that chose the model, in words (never the test set)")
    selected_at: int = Field(ge=0, description="central epoch (one-shot) or round (iterative) of the selected model")
    selected_val_loss: float | None = None
    last_test_accuracy: float = Field(ge=0, le=100, description="in percent, of the last epoch's/round's model, "
                                                                "never chosen")
    train_seconds: float = Field(ge=0)
    seconds_per_round: float | None = None
    selection_round: dict[str, Any] | None = Field(
        None, description="one-shot with selection = 'validation': candidates, losses, bytes and time of the extra round"
    )


class Communication(_Model):
    """Payload bytes (array buffers plus serialised metric/config records) and messages."""

    bytes_uploaded: int = Field(ge=0)
    bytes_downloaded: int = Field(ge=0)
    bytes_uploaded_per_party: float = Field(ge=0)
    bytes_downloaded_per_party: float = Field(ge=0)
    messages_sent: int = Field(ge=0)
    messages_received: int = Field(ge=0)
    bytes_uploaded_by_node_id: dict[str, int] = Field(
        default_factory=dict, description="payload bytes received from each node (by node id)")
    note: str = "payload bytes: array buffers plus serialised metric/config records"


class PrivacySummary(BaseModel):
    """A one-shot run's privacy block; the encoding adds its own figures
    (:meth:`common.encodings.Encoding.privacy_summary`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    encoding: str
    release_mode: str
    noise_mode: str = Field(description="'none' for an encoding without calibrated noise")
    tau: float | None = Field(description="Theorem 2's target; nominal in the clamped mode (see the measured SNR)")
    releases_per_party: dict[str, float]
    exposures_per_sample: dict[str, float] = Field(
        description="how often each private training sample was released (mean / max / min / std over parties)"
    )
    reidentification_rate: dict[str, float] = Field(default_factory=dict)


class DefenceSummary(BaseModel):
    """An iterative run's client-side defence; the defence adds its own figures
    (:meth:`common.defences.Defence.summary`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    defence: str
    model_norm: str


class UnionFigures(_Model):
    """The one-shot union buffer on the server."""

    train_rows: int = Field(ge=0)
    val_rows: int = Field(ge=0)
    buffer_peak_bytes: int = Field(ge=0)
    buffer_used_bytes: int = Field(ge=0)
    grow_events: int = Field(ge=0)
    collect_seconds: float = Field(ge=0)
    device: str
    dtype: str
    announce_seconds: float = Field(0.0, ge=0, description="the announcement round (size before transfer)")
    announce_bytes_uploaded: int = Field(0, ge=0, description="payload bytes of the parties' announcements")
    announce_bytes_downloaded: int = Field(0, ge=0, description="payload bytes of the announcement queries")
    announced_bytes: int = Field(0, ge=0, description="release bytes the accepted announcements named, in total")
    announce_refused: int = Field(0, ge=0, description="announcements refused before transfer (in rejections)")


class Participation(_Model):
    """Who was expected, who connected, who contributed."""

    expected: int
    connected: int
    quorum: int
    contributed_partitions: list[int]
    contributed_nodes: list[int]
    not_contributing_nodes: list[int]


class PartitionConflict(_Model):
    """One-shot: several nodes claimed one partition with valid releases in one collection.
    Every claimant is flagged (listed in ``rejections``) and none of their releases is used:
    the server cannot tell which is honest."""

    partition_id: int = Field(ge=0)
    node_ids: list[int] = Field(description="every node that claimed it, in arrival order")
    epoch: int = Field(1, ge=1, description="the collection: 1 = first release, later = per-epoch release")


class LeftOut(_Model):
    """A party whose reply did not enter a round's aggregation, and the true reason."""

    node_id: int = Field(description="the node the round's message went to (never the SuperLink's error sender)")
    partition_id: int | None = Field(
        description="the party's partition as it answered before (else as this reply claims it; None if unknown)"
    )
    outcome: Literal["not connected", "no reply", "error reply", "rejected"]
    reason: str = Field(description="the error reply's text, the rejection's reason, or the timeout")


class RoundParticipation(_Model):
    """FedProx / FedAvg: who contributed to one round's training or evaluation, and who did not."""

    round: int = Field(ge=1)
    stage: Literal["train", "evaluate"]
    contributed_partitions: list[int] = Field(description="in the order they were aggregated (party order)")
    contributed_nodes: list[int]
    left_out: list[LeftOut] = Field(default_factory=list)


class AggregationSummary(_Model):
    """FedProx / FedAvg: how the server combined the parties' models."""

    rule: Literal["mean", "median", "trimmed-mean", "krum"]
    flower_strategy: str = Field(description="the Flower strategy classes that aggregated, e.g. FedProx+FedMedian")
    description: str
    trim_fraction: float | None = Field(None, description="trimmed-mean: share cut at each end")
    krum_malicious: int | None = Field(None, description="krum: f, the number of parties assumed hostile")
    max_examples: int = Field(ge=1, description="largest num-examples a reply may report (the training split's rows)")


class DataSource(_Model):
    """Where the parties' data came from and what the run was tested on.

    ``parties`` holds what the server legitimately learned about each party's data: the
    sizes of its parts and its data's format (from the federated test round), or, with a
    server test set, the training rows each one-shot release carried.
    """

    kind: str = Field(description="'partition' (of a data set, simulation) or 'node-local' (each party's own data)")
    description: str = Field(description="e.g. 'partition of digits (dirichlet, beta = 1)' or 'node-local: ...'")
    test: str = Field(description="what the reported model was tested on")
    parties: list[dict[str, Any]] = Field(default_factory=list)
    federated_test: dict[str, Any] | None = Field(
        None, description="node-local without a server test set: size-weighted accuracy (%) and loss, rows, each "
                          "party's"
    )


class RunSummary(_Model):
    """Everything one run reports. The result comes first; the full run config last."""

    schema_version: int = SCHEMA_VERSION
    accuracy_unit: Literal["percent"] = ACCURACY_UNIT
    strategy: str
    result: Outcome
    num_parties: int = Field(ge=1)
    rounds: int = Field(ge=1, description="message rounds: 1 for a one-shot release, central epochs per epoch")
    communication: Communication
    wall_seconds: float = Field(ge=0)
    privacy: PrivacySummary | None = None
    defence: DefenceSummary | None = None
    local_only: dict[str, Any] | None = Field(
        None, description="strategy local-only: each party's own model's test accuracy (%), their mean and the worst"
    )
    union: UnionFigures | None = None
    data_source: DataSource | None = Field(None, description="absent in summaries written before node-local data")
    memory: dict[str, Any] | None = None
    participation: Participation | None = None
    parties: list[dict[str, Any]] = Field(default_factory=list, description="each party's first-release metrics")
    later_epochs: list[dict[str, Any]] = Field(default_factory=list)
    failures: list[dict[str, Any]] = Field(default_factory=list)
    rejections: list[dict[str, Any]] = Field(default_factory=list)
    aggregation: AggregationSummary | None = None
    round_participation: list[RoundParticipation] = Field(
        default_factory=list, description="FedProx / FedAvg: per round and stage, who contributed and who did not"
    )
    partition_conflicts: list[PartitionConflict] = Field(
        default_factory=list, description="one-shot: partitions several nodes claimed (every claimant flagged)"
    )
    history: list[dict[str, Any]] = Field(default_factory=list, description="per epoch (one-shot) or per round; "
                                                                            "accuracies in percent")
    started_utc: str
    versions: dict[str, str]
    server_device: str
    inputs: dict[str, Any]
    config: dict[str, Any]

    @property
    def one_shot(self) -> bool:
        return self.privacy is not None

    def write(self, path: Path | str) -> Path:
        """Write atomically (no reader ever sees half a summary)."""
        return write_json_atomic(path, self.model_dump(mode="json"))


FAILED_SUFFIX = ".failed.json"
"""Where a run that stopped without a model writes its :class:`FailedRunSummary`
(``<run-name>.failed.json``; also the longest suffix a run's files get)."""


class FailedRunSummary(_Model):
    """A run that stopped before it had a model to report (written as ``<run-name>.failed.json``,
    never where a finished run's summary goes, so that no sweep mistakes it for a result)."""

    status: Literal["failed"] = "failed"
    schema_version: int = SCHEMA_VERSION
    accuracy_unit: Literal["percent"] = ACCURACY_UNIT
    strategy: str
    reason: str
    stage: str | None = Field(None, description="where the run stopped: start, collection, training, selection, "
                                                "evaluation, rounds, summary")
    error_type: str | None = Field(None, description="the exception's class name")
    completed_rounds: int = Field(ge=0)
    round_participation: list[RoundParticipation] = Field(default_factory=list)
    participation: Participation | None = None
    parties: list[dict[str, Any]] = Field(default_factory=list, description="one-shot: the accepted first releases' "
                                                                            "metrics")
    union: dict[str, Any] | None = Field(None, description="one-shot: rows collected (train_rows, val_rows)")
    failures: list[dict[str, Any]] = Field(default_factory=list)
    rejections: list[dict[str, Any]] = Field(default_factory=list)
    partition_conflicts: list[PartitionConflict] = Field(default_factory=list)
    history: list[dict[str, Any]] = Field(default_factory=list, description="accuracies in percent")
    wall_seconds: float = Field(ge=0)
    started_utc: str
    config: dict[str, Any]

    def write(self, path: Path | str) -> Path:
        return write_json_atomic(path, self.model_dump(mode="json"))


def _upgrade_legacy(raw: dict[str, Any]) -> dict[str, Any]:
    """Summaries of schema 1 (before the typed summary): other result keys, no schema version,
    no generic exposure figure, no encoding in older one-shot ones."""
    raw = dict(raw)
    result = dict(raw["result"])
    result.setdefault("selection", "validation" if raw.get("strategy") != "one-shot-mixup" else "mixed-validation")
    if "selected_at" not in result:
        result["selected_at"] = result.pop("selected_epoch", result.pop("selected_round", 0))
        result["last_test_accuracy"] = result.pop("last_epoch_test_accuracy", result.pop("last_round_test_accuracy", None))
        result.pop("selected_epoch", None)
        result.pop("selected_round", None)
    raw["result"] = result
    privacy = raw.get("privacy")
    if privacy:
        privacy = dict(privacy)
        privacy.setdefault("encoding", raw.get("config", {}).get("encoding") or "singularized")
        exposures = privacy.get("exposures_per_private_sample") or {}
        privacy.setdefault("exposures_per_sample", exposures.get("as_private_component")
                           or exposures.get("as_clean_component") or privacy.get("releases_per_party") or {})
        raw["privacy"] = privacy
    raw["schema_version"] = 2
    return raw


def _fractions_to_percent(raw: dict[str, Any]) -> dict[str, Any]:
    """Summaries of schema 2: every accuracy was a fraction; in percent since schema 3."""
    raw = dict(raw)
    result = dict(raw["result"])
    for key in ("test_accuracy", "last_test_accuracy"):
        if result.get(key) is not None:
            result[key] = percent(result[key])
    raw["result"] = result
    raw["history"] = accuracies_in_percent(raw.get("history") or [])
    if raw.get("local_only"):
        local = dict(raw["local_only"])
        local["per_party_test_accuracy"] = {k: percent(v) for k, v in local.get("per_party_test_accuracy", {}).items()}
        for key in ("mean", "worst"):
            if local.get(key) is not None:
                local[key] = percent(local[key])
        raw["local_only"] = local
    source = raw.get("data_source")
    if source:
        source = dict(source)
        source["parties"] = accuracies_in_percent(source.get("parties") or [])
        if source.get("federated_test"):
            federated = dict(source["federated_test"])
            if federated.get("accuracy") is not None:
                federated["accuracy"] = percent(federated["accuracy"])
            federated["per_party_accuracy"] = {k: percent(v) for k, v in
                                               federated.get("per_party_accuracy", {}).items()}
            source["federated_test"] = federated
        raw["data_source"] = source
    raw["schema_version"] = 3
    return raw


def read_summary(path: Path | str) -> RunSummary:
    """Read a run summary of any schema version (older ones are upgraded here and nowhere else)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    version = raw.get("schema_version", 1)
    if version > SCHEMA_VERSION:
        raise ValueError(f"{path}: summary schema {version} is newer than this mixupfl reads ({SCHEMA_VERSION}); "
                         "update mixupfl")
    if version < 2:
        raw = _upgrade_legacy(raw)
    if version < 3:
        raw = _fractions_to_percent(raw)
    return RunSummary.model_validate(raw)


class RunRow(_Model):
    """One run as a row of a sweep's ``runs.csv`` (column order = field order).

    Accuracies in percent, of the selected model, with the last epoch's/round's beside it;
    ``selection`` names the rule that chose it; ``test_rows`` is the test set's size (one
    sample weighs ``100 / test_rows`` points); ``label_skew`` the partition's mean
    total-variation distance from the global label mix.
    ``encoding`` is the one-shot encoding ("" for the iterative strategies); ``defence`` the
    iterative strategies' client-side defence ("" for one-shot). Encoding-specific columns
    (``noise_mode``, ``tau``, ``instahide_k``, ``snr_pc1_mean``, ...) are empty where an
    encoding has no such figure.
    """

    run_key: str
    table: str
    layout: str
    strategy: str
    release: str
    encoding: str
    defence: str
    parties: int
    beta: float
    rho: float
    seed: int
    dataset: str
    backbone: str
    noise_mode: str
    tau: float | None
    instahide_k: int | None
    instahide_k_private: int | None
    public_fraction: float
    label_skew: float | None
    test_rows: int | None
    test_accuracy: float
    selected_at: int
    last_test_accuracy: float
    selection: str
    selected_by: str
    rounds: int
    releases_per_party: int
    exposures_per_sample: int
    bytes_uploaded: int
    bytes_downloaded: int
    bytes_uploaded_per_party: float
    bytes_downloaded_per_party: float
    wall_seconds: float
    snr_pc1_mean: float | None
    summary_path: str

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)

    @classmethod
    def from_summary(cls, summary: RunSummary, *, run_key: str, table: str, layout: str, release: str,
                     beta: float, rho: float, seed: int, summary_path: Path | str,
                     label_skew: float | None = None) -> RunRow:
        """The row of one run; encoding-specific columns come from the encoding itself.
        ``label_skew`` is the partition's (the sweep computes it from the run config)."""
        from common.encodings import get_encoding  # the registries import the config, which imports this

        privacy = summary.privacy
        config = summary.config
        fields: dict[str, Any] = {"noise_mode": "", "tau": None, "instahide_k": None, "instahide_k_private": None,
                                  "snr_pc1_mean": None}
        if privacy is not None:
            fields.update(get_encoding(privacy.encoding).table_fields(privacy.model_dump()))
        comm = summary.communication
        releases = int(privacy.releases_per_party.get("max", 1)) if privacy else 0
        return cls(
            run_key=run_key, table=table, layout=layout, strategy=summary.strategy, release=release,
            encoding=privacy.encoding if privacy else "",
            defence=summary.defence.defence if summary.defence else "",
            parties=summary.num_parties, beta=beta, rho=rho, seed=seed,
            dataset=config["dataset"], backbone=config.get("backbone", "none"),
            public_fraction=float(config.get("public-fraction", 0.0)), label_skew=label_skew,
            test_rows=summary.inputs.get("test_rows"),
            test_accuracy=summary.result.test_accuracy, selected_at=summary.result.selected_at,
            last_test_accuracy=summary.result.last_test_accuracy, selection=summary.result.selection,
            selected_by=summary.result.selected_by,
            rounds=summary.rounds, releases_per_party=releases,
            exposures_per_sample=int(privacy.exposures_per_sample.get("max", releases)) if privacy else 0,
            bytes_uploaded=comm.bytes_uploaded, bytes_downloaded=comm.bytes_downloaded,
            bytes_uploaded_per_party=comm.bytes_uploaded / summary.num_parties,
            bytes_downloaded_per_party=comm.bytes_downloaded / summary.num_parties,
            wall_seconds=summary.wall_seconds, summary_path=str(summary_path), **fields,
        )
