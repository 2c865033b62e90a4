"""Where the server's test figures come from, one rule for both protocols.

* A partition run tests on the data set's test split, on the server, every step the
  strategy reports (it reports, it never chooses).
* A node-local run with ``server-test-path`` tests on the server's own labelled data.
* A node-local run without it keeps the reported (and last) model and, after training,
  asks every party for its accuracy on its own held-out test part
  (:func:`server.federated_evaluation.federated_test`); the figures are then written where the
  server-side evaluation would have put them, so that the summary reads them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, MetricRecord

from common.config import RunConfig
from common.model import MixupClassifier
from common.training import evaluate
from features.node_local import model_input_dim, node_local_splits, server_test_data
from features.pipeline import load_run_data, split_inputs
from loaders import LabelledSplits

__all__ = ["ServerTest", "deferred_models", "server_test", "test_evaluation"]


@dataclass
class ServerTest:
    """The server's view of the data: the splits (a data set, or the node-local contract
    holding the server's own test data), the test inputs on ``device`` (``None``: the
    parties test), the model's input size, and what the summary says about the test."""

    data: LabelledSplits
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    in_dim: int
    description: str

    @property
    def federated(self) -> bool:
        return self.test_x is None


def server_test(cfg: RunConfig, device: torch.device) -> ServerTest:
    """The run's test data on the server, if it has any (see the module docstring)."""
    if not cfg.node_local:
        data = load_run_data(cfg)
        # The test split in the parties' input space (features when a backbone is used: the
        # test split's extraction is cached like the training split's).
        test_x = split_inputs(cfg, data, "test", device=device).to(device)
        return ServerTest(data=data, test_x=test_x, test_y=data.test_y.to(device), in_dim=int(test_x[0].numel()),
                          description=f"the server's test split of {cfg.dataset} ({int(data.test_y.shape[0])} rows)")
    if not cfg.server_test_path:
        return ServerTest(data=node_local_splits(cfg), test_x=None, test_y=None, in_dim=model_input_dim(cfg),
                          description="federated: each party's own held-out test part (local-test-fraction = "
                                      f"{cfg.local_test_fraction:g}), size-weighted")
    own = server_test_data(cfg)
    data = node_local_splits(cfg, test=own)
    test_x = split_inputs(cfg, data, "test", device=device).to(device)
    return ServerTest(data=data, test_x=test_x, test_y=data.test_y.to(device), in_dim=model_input_dim(cfg),
                      description=f"the server's own test data ({cfg.server_test_format}, {int(own.y.shape[0])} rows)")


def test_evaluation(cfg: RunConfig, test: ServerTest, device: torch.device):  # noqa: ANN201
    """``evaluate_fn(step, arrays)`` on the server's test data (reports, never chooses). Its
    model is built on the first call, after the strategy has seeded and initialised its own."""
    holder: list[MixupClassifier] = []

    def evaluate_fn(step: int, arrays: ArrayRecord) -> MetricRecord:
        if not holder:
            holder.append(MixupClassifier(in_dim=test.in_dim, num_classes=test.data.num_classes,
                                          norm=cfg.model_norm).to(device))
        model = holder[0]
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, test.test_x, test.test_y)
        return MetricRecord({"test-loss": loss, "test-accuracy": acc})

    return evaluate_fn


def deferred_models(keep: Callable[[int], bool]) -> tuple[Callable[[int, ArrayRecord], None], dict[int, ArrayRecord]]:
    """An ``evaluate_fn`` that evaluates nothing and keeps the models of the steps ``keep``
    accepts (for the parties to test after training), and the dict it keeps them in."""
    kept: dict[int, ArrayRecord] = {}

    def evaluate_fn(step: int, arrays: ArrayRecord) -> None:
        if keep(step):
            kept[step] = arrays

    return evaluate_fn, kept
