"""One-shot collaboration as a strategy: query every party once, train on the union.

In the style of ``flwr.serverapp.strategy``: constructed with keyword arguments,
``start(grid=...)`` runs the protocol and returns a Flower ``Result`` (a subclass carrying
the one-shot figures), and the strategy only builds and consumes messages besides the
central training it owns. It is usable from any ServerApp::

    strategy = OneShot(encoding=get_encoding("singularized"), central_epochs=100, seed=0)
    result = strategy.start(grid=grid, node_ids=ids, row_shape=(64,), num_classes=10)

Size before transfer: before the first collection every party announces what its release will
be (one small message each way, :mod:`server.announcement`); a party whose announcement is
refused (above ``max_upload_bytes``, malformed) is never asked for its release, and every upload
must match its announcement (a release that does not is refused after transfer, as is one over
the size limit: the last line of defence against a party that ignores the protocol).

With ``release = "per-epoch"`` the strategy queries every party again before each central
epoch after the first and trains that epoch on the fresh union (the validation releases,
sent with the first query, stay fixed for model selection).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp.strategy import Result
from torch import nn

from common.encodings import Encoding
from common.training import CentralTrainer, evaluate
from server.announcement import Announced, announce_releases
from server.collection import Collected, collect_releases
from server.selection import select_on_parties
from server.memory import MemoryProbe
from server.metered_grid import MeteredGrid
from server.validation import UploadCheck

__all__ = ["OneShot", "OneShotFailed", "OneShotResult"]

log = logging.getLogger("flwr.mixupfl.one-shot")  # child of flwr: shown in run logs

SELECTED_BY_MIXED_VALIDATION = "lowest loss on the parties' held-out mixed validation releases"
SELECTED_BY = {
    "last": "the last central epoch (fixed budget; no selection)",
    "validation": "lowest size-weighted loss on the parties' clean held-out validation parts",
    "mixed-validation": SELECTED_BY_MIXED_VALIDATION,
}
"""What each ``selection`` rule means, as the summary and the tables state it."""


@dataclass
class OneShotResult(Result):
    """Flower's ``Result`` (``arrays`` = the selected model; ``train_metrics_clientapp`` per
    central epoch; ``evaluate_metrics_serverapp`` the test figures of the selected and the
    last epoch's model) plus what the one-shot summary reports."""

    selected_epoch: int = 0
    selected_val_loss: float = math.nan
    last_epoch: int = 0
    parties: list[dict] = field(default_factory=list)
    releases: Counter = field(default_factory=Counter)
    failures: list[dict] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)
    later_epochs: list[dict] = field(default_factory=list)
    union: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    selection_round: dict | None = None


class OneShotFailed(RuntimeError):
    """A one-shot run that stopped before it had a model to report.

    Parameters
    ----------
    message : str
        Why, in one line (the cause's type and text for an unexpected error).
    stage : {"collection", "training", "selection", "evaluation"}
        Where it stopped.
    result : OneShotResult
        What was gathered until then: the first collection's parties, failures, rejections
        and partition conflicts, the union's rows, the epochs trained (``history``).
    """

    def __init__(self, message: str, *, stage: str, result: OneShotResult) -> None:
        super().__init__(message)
        self.stage = stage
        self.result = result


class OneShot:
    """One-shot collaboration: each party uploads an encoded release, the server trains.

    Parameters
    ----------
    encoding : Encoding
        What the parties release (:mod:`common.encodings`); it names the figures every
        upload must carry.
    model_fn : callable
        ``model_fn(in_dim=..., num_classes=...) -> nn.Module``: the classifier trained on the union.
    release : {"once", "per-epoch"}
        One release per party, or fresh releases before every central epoch.
    central_epochs, batch_size, lr, weight_decay : training recipe (appendix E).
    seed : int
        Seeds the model's initialisation and the batch order.
    quorum : int
        Fewest valid first releases the run proceeds with.
    max_upload_bytes : int
        Largest accepted upload of one party.
    upload_dtype : str
        Dtype the mixed inputs must arrive in.
    selection : {"last", "validation", "mixed-validation"}
        Which model the run reports: the last epoch's; the candidate checkpoint (every
        ``selection_every`` epochs and the last) with the lowest size-weighted loss on the
        parties' clean validation parts, asked in one extra message per party after training;
        or the epoch with the lowest loss on the mixed validation releases uploaded with the
        first release (the only rule that makes parties release their validation part).
    value_bound : float, optional
        The largest ``|x~|`` a valid upload can carry (public facts only; see
        :meth:`common.encodings.Encoding.input_bound`); ``None``: no bound.
    device : torch.device
        Where the union lives and the model trains.
    """

    def __init__(self, *, encoding: Encoding, model_fn: Callable[[int, int], nn.Module], release: str = "once",
                 central_epochs: int = 100, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-4,
                 seed: int = 0, quorum: int = 2, max_upload_bytes: int = 2**31, upload_dtype: str = "float32",
                 selection: str = "last", selection_every: int = 5, value_bound: float | None = None,
                 party_figures: str = "coarse",
                 device: torch.device | str = "cpu") -> None:
        if release not in ("once", "per-epoch"):
            raise ValueError(f"release must be 'once' or 'per-epoch', got {release!r}")
        if selection not in SELECTED_BY:
            raise ValueError(f"selection must be one of {sorted(SELECTED_BY)}, got {selection!r}")
        self.selection = selection
        self.selection_every = selection_every
        self.value_bound = value_bound
        self.party_figures = party_figures
        self.encoding = encoding
        self.model_fn = model_fn
        self.release = release
        self.central_epochs = central_epochs
        self.batch_size, self.lr, self.weight_decay = batch_size, lr, weight_decay
        self.seed = seed
        self.quorum = quorum
        self.max_upload_bytes = max_upload_bytes
        self.upload_dtype = upload_dtype
        self.device = torch.device(device)
        self._stage = "collection"  # where a failure happened (OneShotFailed.stage)

    def summary(self) -> None:
        """Log the strategy's configuration (as Flower's strategies do)."""
        log.info("OneShot: encoding %s, release %s, %d central epochs, quorum %d", self.encoding.name,
                 self.release, self.central_epochs, self.quorum)

    def _collect(self, grid: MeteredGrid, node_ids: list[int], *, epoch: int, check: UploadCheck,
                 timeout: float) -> Collected:
        return collect_releases(grid, node_ids, timeout=timeout, device=self.device, epoch=epoch,
                                with_validation=epoch == 1 and self.selection == "mixed-validation", check=check)

    def _announce(self, grid: MeteredGrid, node_ids: list[int], *, row_shape: tuple[int, ...], num_classes: int,
                  num_partitions: int, timeout: float) -> Announced:
        return announce_releases(grid, node_ids, timeout=timeout, max_bytes=self.max_upload_bytes,
                                 row_shape=row_shape, num_classes=num_classes, input_dtype=self.upload_dtype,
                                 num_partitions=num_partitions,
                                 with_validation=self.selection == "mixed-validation")

    def start(
        self,
        *,
        grid: MeteredGrid,
        node_ids: list[int],
        row_shape: tuple[int, ...],
        num_classes: int,
        num_partitions: int | None = None,
        timeout: float = 3600,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> OneShotResult:
        """Collect, train, select the reported model by the ``selection`` rule, evaluate.

        ``evaluate_fn(epoch, arrays)`` (the server's test set) is called for the selected and
        the last epoch's model only: it reports, it never chooses.

        Raises
        ------
        OneShotFailed
            Fewer than ``quorum`` valid first releases, or any error after collection
            (training, selection, evaluation); it carries what was collected until then.
        """
        result = OneShotResult()
        self._stage = "collection"
        try:
            return self._run(result, grid=grid, node_ids=node_ids, row_shape=row_shape, num_classes=num_classes,
                             num_partitions=num_partitions, timeout=timeout, evaluate_fn=evaluate_fn)
        except OneShotFailed:
            raise
        except Exception as err:  # noqa: BLE001 - re-raised with what was collected, for the failed summary
            raise OneShotFailed(f"{self._stage}: {type(err).__name__}: {err}", stage=self._stage,
                                result=result) from err

    def _run(
        self,
        result: OneShotResult,
        *,
        grid: MeteredGrid,
        node_ids: list[int],
        row_shape: tuple[int, ...],
        num_classes: int,
        num_partitions: int | None,
        timeout: float,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None,
    ) -> OneShotResult:
        self.summary()
        partitions = num_partitions or len(node_ids)

        bound: dict[int, int] = {}  # node -> partition of its first release (later collections keep it)
        flagged: set[int] = set()  # nodes of a partition conflict in the first collection
        probe = MemoryProbe(self.device).start()
        announced = self._announce(grid, node_ids, row_shape=tuple(row_shape), num_classes=num_classes,
                                   num_partitions=partitions, timeout=timeout)
        probe.checkpoint("announced")  # a release refused here was never sent: the growth stays ~0
        result.union = {"train_rows": 0, "val_rows": 0, **announced.figures()}
        result.failures, result.rejections = list(announced.failures), list(announced.rejections)
        everyone = list(node_ids)  # the selection round asks every party, as before
        node_ids = [nid for nid in node_ids if nid in announced.accepted]  # only these are asked to upload
        if len(node_ids) < self.quorum:
            raise OneShotFailed(
                f"{len(node_ids)} accepted announcement(s), fewer than quorum = {self.quorum} "
                f"({len(announced.failures)} failed, {len(announced.rejections)} refused before transfer)",
                stage="collection", result=result)

        def check() -> UploadCheck:  # one per collection: a party uploads once per query
            return UploadCheck(row_shape=tuple(row_shape), num_classes=num_classes, input_dtype=self.upload_dtype,
                               num_partitions=partitions, max_bytes=self.max_upload_bytes, encoding=self.encoding,
                               value_bound=self.value_bound, party_figures=self.party_figures,
                               bound=dict(bound), flagged=set(flagged), announced=announced.accepted)

        first = self._collect(grid, node_ids, epoch=1, check=check(), timeout=timeout)
        result.releases = Counter(int(m["partition-id"]) for m in first.party_metrics)
        result.failures.extend(first.failures)
        result.rejections.extend(first.rejections)
        result.conflicts = list(first.conflicts)
        result.parties = sorted(first.party_metrics, key=lambda m: m["partition-id"])
        result.union = {"train_rows": first.train.filled, "val_rows": first.val.filled if first.val is not None else 0,
                        **announced.figures()}
        bound.update({int(m["node-id"]): int(m["partition-id"]) for m in first.party_metrics})
        flagged.update(n for c in first.conflicts for n in c["node-ids"])
        if len(first.party_metrics) < self.quorum:
            raise OneShotFailed(
                f"{len(first.party_metrics)} valid release(s) of {len(node_ids)} parties queried, fewer than "
                f"quorum = {self.quorum} ({len(first.failures)} failed, {len(first.rejections)} rejected)",
                stage="collection", result=result)
        probe.checkpoint("collected")  # assembling the union alone, before training allocates
        self._stage = "training"
        torch.manual_seed(self.seed)
        x, y, order = first.train.x, first.train.y, first.train.canonical_order()
        model = self.model_fn(in_dim=int(x[0].numel()), num_classes=y.shape[1]).to(self.device)
        trainer = CentralTrainer(model, rows=x.shape[0], epochs=self.central_epochs,
                                 generator=torch.Generator().manual_seed(self.seed), batch_size=self.batch_size,
                                 lr=self.lr, weight_decay=self.weight_decay)
        every = max(1, self.central_epochs // 10)
        best_state, best_loss = None, math.inf
        candidates: dict[int, dict[str, torch.Tensor]] = {}
        started = time.perf_counter()
        for epoch in range(1, self.central_epochs + 1):
            if epoch > 1 and self.release == "per-epoch":
                fresh = self._collect(grid, node_ids, epoch=epoch, check=check(), timeout=timeout)
                if fresh.train.filled == 0:
                    raise RuntimeError(f"epoch {epoch}: no party sent a release: {fresh.failures}")
                result.releases.update(int(m["partition-id"]) for m in fresh.party_metrics)
                result.failures.extend({**f, "epoch": epoch} for f in fresh.failures)
                result.rejections.extend(fresh.rejections)
                result.conflicts.extend(fresh.conflicts)
                result.later_epochs.append({"epoch": epoch, "parties": len(fresh.party_metrics),
                                            "rows": fresh.train.filled, "collect_seconds": fresh.seconds})
                x, y, order = fresh.train.x, fresh.train.y, fresh.train.canonical_order()
            train_loss = trainer.train_epoch(x, y, order)
            record = {"epoch": epoch, "train_loss": train_loss, "lr": trainer.lr}
            if self.selection == "mixed-validation":
                val_loss, val_acc = evaluate(model, first.val.x, first.val.y)
                record.update(val_loss=val_loss, val_accuracy=val_acc)
                if val_loss < best_loss:
                    best_loss, result.selected_epoch = val_loss, epoch
                    best_state = copy.deepcopy(model.state_dict())
            elif self.selection == "validation" and (epoch % self.selection_every == 0
                                                     or epoch == self.central_epochs):
                candidates[epoch] = copy.deepcopy(model.state_dict())
            result.history.append(record)
            result.train_metrics_clientapp[epoch] = MetricRecord(
                {k.replace("_", "-"): v for k, v in record.items() if k != "epoch"})
            if epoch % every == 0 or epoch == self.central_epochs:
                log.info("epoch %d/%d  train loss %.4f%s", epoch, self.central_epochs, train_loss,
                         f"  val loss {record['val_loss']:.4f} (mixed validation releases)" if "val_loss" in record
                         else "")
        result.train_seconds = time.perf_counter() - started
        result.last_epoch = self.central_epochs
        self._stage = "selection"
        last_arrays = ArrayRecord(model.state_dict())
        if self.selection == "mixed-validation":
            result.selected_val_loss = best_loss
            result.arrays = ArrayRecord(best_state) if best_state is not None else last_arrays
        elif self.selection == "validation":
            chosen = select_on_parties(grid, everyone, candidates, timeout=timeout)
            result.selection_round = chosen.figures
            result.selected_epoch, result.selected_val_loss = chosen.step, chosen.val_loss
            result.arrays = ArrayRecord(candidates[chosen.step])
        else:
            result.selected_epoch, result.arrays = self.central_epochs, last_arrays
        del candidates
        self._stage = "evaluation"
        if evaluate_fn is not None:
            for epoch, arrays in ((result.selected_epoch, result.arrays), (result.last_epoch, last_arrays)):
                metrics = evaluate_fn(epoch, arrays)
                if metrics is not None:
                    result.evaluate_metrics_serverapp[epoch] = metrics
        val_used = first.val.used_bytes if first.val is not None else 0
        result.memory = probe.stop(union_bytes=first.train.used_bytes + val_used)
        result.parties = sorted(first.party_metrics, key=lambda m: m["partition-id"])
        result.union = {
            "train_rows": first.train.filled, "val_rows": first.val.filled if first.val is not None else 0,
            "buffer_peak_bytes": first.train.peak_bytes + (first.val.peak_bytes if first.val is not None else 0),
            "buffer_used_bytes": first.train.used_bytes + val_used,
            "grow_events": first.train.grow_events + (first.val.grow_events if first.val is not None else 0),
            "collect_seconds": first.seconds, "device": str(self.device),
            "dtype": str(first.train.x.dtype).removeprefix("torch."), **announced.figures(),
        }
        return result
