"""Node-local data in runs: the run config's contract, each party built from its own disk
(hold-outs drawn from the run seed and its own data, a wrong weights file refused with both
hashes named), and the federated test that replaces a shared test set."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from common.config import ConfigError, parse_run_config
from common.node_local import hold_out
from features.backbones import BackboneError, check_weights_file
from loaders.local import LocalDataError

CLASSES = "cat,dog,owl"
BASE = {"data-source": "node-local", "classes": CLASSES, "input-shape": "3x8x8", "output-dir": "/tmp/mixupfl-test-runs"}


def _cfg(**extra):
    return parse_run_config({**BASE, **{k.replace("_", "-"): v for k, v in extra.items()}})


def _image_folder(root, counts: dict[str, int], *, seed: int = 0):
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(autouse=True)
def _fresh_parties():
    from client.local_party import local_party

    local_party.cache_clear()
    yield
    local_party.cache_clear()


# ----------------------------------------------------------------------------- the contract

@pytest.mark.parametrize(("values", "message"), [
    ({"input-shape": ""}, "input-shape: positive integers"),
    ({"input-shape": "2x8x8"}, "input-shape: an image is channels x height x width with 1 or 3 channels"),
    ({"input-kind": "vector", "input-shape": "3x8x8", "classes": "a,b"}, "input-shape: a vector sample has one"),
    ({"classes": "", "num-classes": 0}, "classes: a node-local run names its classes"),
    ({"classes": "a,a,b"}, "classes: names must be distinct"),
    ({"num-classes": 4}, "num-classes: 4, but classes names 3"),
    ({"image-std": "0.5,0,0.5"}, "image-std: every value must be positive"),
    ({"image-mean": "0.1,0.2"}, r"image-mean: one value or one per channel \(3\)"),
    ({"input-kind": "vector", "input-shape": "4", "vector-range": "1,0"}, "vector-range: lo < hi"),
    ({"public-fraction": 0.1}, "public-fraction: a node-local run has no public pool"),
    ({"backbone": "resnet18"}, "backbone-sha256: a node-local backbone run names the weights file"),
    ({"strategy": "local-only"}, "strategy: 'local-only' tests every party's own model on the server"),
    ({"server-test-path": "relative/test"}, "server-test-path: must be an absolute path"),
])
def test_a_node_local_run_config_names_what_is_missing_or_inconsistent(values, message):
    key, problem = message.split(": ", 1)
    with pytest.raises(ConfigError, match=f"run config key '{key}'.*: {problem}"):
        parse_run_config({**BASE, **values})


def test_contract_keys_belong_to_node_local_runs_and_the_hash_to_a_weights_file():
    with pytest.raises(ConfigError, match="'classes': only used with data-source = 'node-local'"):
        parse_run_config({"classes": CLASSES})
    with pytest.raises(ConfigError, match="'server-test-path': only used with data-source = 'node-local'"):
        parse_run_config({"server-test-path": "/srv/test"})
    with pytest.raises(ConfigError, match="'backbone-sha256': 64 lower-case hex digits"):
        _cfg(backbone="resnet18", backbone_weights="/w/resnet18.pth", backbone_sha256="abc")
    cfg = _cfg(backbone="resnet18", backbone_weights="/w/resnet18.pth", backbone_sha256="a" * 64)
    assert cfg.node_local and cfg.uses_backbone
    contract = _cfg(classes="", num_classes=5, input_kind="vector", input_shape="64").data_contract
    assert (contract.classes, contract.num_classes, contract.kind, contract.shape) == ((), 5, "vector", (64,))


# ----------------------------------------------------------------------------- hold-outs

def test_hold_outs_partition_the_rows_and_follow_seed_party_and_data():
    parts = hold_out(100, run_seed=0, party=1, content_seed=7, val_fraction=0.1, test_fraction=0.2)
    joined = np.concatenate([parts.train, parts.val, parts.test])
    assert sorted(joined.tolist()) == list(range(100))
    assert (parts.train.size, parts.val.size, parts.test.size) == (70, 10, 20)
    same = hold_out(100, run_seed=0, party=1, content_seed=7, val_fraction=0.1, test_fraction=0.2)
    assert np.array_equal(same.test, parts.test)
    for other in ({"run_seed": 1, "party": 1, "content_seed": 7}, {"run_seed": 0, "party": 2, "content_seed": 7},
                  {"run_seed": 0, "party": 1, "content_seed": 8}):
        assert not np.array_equal(hold_out(100, **other, val_fraction=0.1, test_fraction=0.2).test, parts.test)
    assert hold_out(10, run_seed=0, party=0, content_seed=0, val_fraction=0.1, test_fraction=0.0).test.size == 0
    with pytest.raises(ValueError, match="too few to hold out 2 for validation and 1 for testing"):
        hold_out(4, run_seed=0, party=0, content_seed=0, val_fraction=0.1, test_fraction=0.2)


# ----------------------------------------------------------------------------- parties

def _node(path, index: int = 0, fmt: str = ""):
    node = {"partition-id": index, "num-partitions": 3, "data-path": str(path)}
    return {**node, "data-format": fmt} if fmt else node


def test_a_party_is_built_from_its_own_image_folder(tmp_path):
    from client.local_party import local_party

    folder = _image_folder(tmp_path / "org-a", {"cat": 12, "dog": 8, "owl": 10})
    cfg = _cfg(seed=3)
    party = local_party(cfg, _node(folder))  # the format is inferred: a folder
    sizes = (party.train_y.numel(), party.val_y.numel(), party.test_y.numel())
    assert sum(sizes) == 30 and sizes == (21, 3, 6)
    assert party.train_x.shape == (21, 3 * 8 * 8) and party.source == "image-folder"
    # Normalised with the run's image-mean/std (0.5, 0.5): pixels 0..255 land in [-1, 1].
    assert float(party.train_x.min()) >= -1.0 and float(party.train_x.max()) <= 1.0
    assert party.description() == {"source": "image-folder", "num-train": 21, "num-val": 3, "num-test": 6,
                                   "dropped": 0}
    # With a server test set the party holds out no test part.
    local_party.cache_clear()
    served = local_party(_cfg(seed=3, server_test_path=str(tmp_path / "server")), _node(folder))
    assert served.test_x is None and served.train_y.numel() + served.val_y.numel() == 30
    # Another party's data (one image changed) draws another hold-out from the same run seed.
    other = _image_folder(tmp_path / "org-b", {"cat": 12, "dog": 8, "owl": 10}, seed=1)
    local_party.cache_clear()
    assert not torch.equal(local_party(cfg, _node(other)).test_y, party.test_y) or \
        not torch.equal(local_party(cfg, _node(other)).val_y, party.val_y)


def test_a_party_whose_data_does_not_fit_refuses_naming_the_problem(tmp_path):
    from client.local_party import local_party

    extra = _image_folder(tmp_path / "org-c", {"cat": 5, "dog": 5, "zebra": 4})
    with pytest.raises(LocalDataError, match="zebra are not among the run's classes"):
        local_party(_cfg(), _node(extra))
    dropped = local_party(_cfg(unknown_classes="drop"), _node(extra))
    assert dropped.dropped == 4 and dropped.description()["dropped"] == 4
    with pytest.raises(LocalDataError, match="names no data-path"):
        local_party(_cfg(), {"partition-id": 0, "num-partitions": 3})
    rows = np.random.default_rng(0).random((20, 4)).astype(np.float32) * 2  # values up to 2
    np.savez(tmp_path / "rows.npz", x=rows, y=np.arange(20) % 3)
    vectors = _cfg(input_kind="vector", input_shape="4", classes="", num_classes=3)
    with pytest.raises(LocalDataError, match=r"outside the run's vector-range \[0, 1\]"):
        local_party(vectors, _node(tmp_path / "rows.npz"))
    party = local_party(_cfg(input_kind="vector", input_shape="4", classes="", num_classes=3, vector_range="0,2"),
                        _node(tmp_path / "rows.npz"))
    assert party.source == "npz" and party.input_bounds == (0.0, 2.0)


def test_a_wrong_weights_file_is_refused_with_both_hashes_named(tmp_path):
    from client.local_party import local_party

    weights = tmp_path / "resnet18.pth"
    weights.write_bytes(b"not the weights the run names")
    found = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert check_weights_file(str(weights), found) == found
    expected = "0" * 64
    with pytest.raises(BackboneError, match=f"has SHA-256 {found}, the run expects {expected}"):
        check_weights_file(str(weights), expected)
    with pytest.raises(BackboneError, match="no such file on this node"):
        check_weights_file(str(tmp_path / "missing.pth"), expected)
    # A party checks the file before it reads any data (here: none exists).
    cfg = _cfg(backbone="resnet18", backbone_weights=str(weights), backbone_sha256=expected)
    with pytest.raises(BackboneError, match=f"{found}, the run expects {expected}"):
        local_party(cfg, _node(tmp_path / "no-data-here", fmt="image-folder"))


# ----------------------------------------------------------------------------- federated test

class _PartiesGrid:
    """A grid whose parties are the ClientApp's evaluate handler over their own data."""

    def __init__(self, contexts: dict[int, object]) -> None:
        self.contexts = contexts
        self.total_bytes_sent = self.total_bytes_received = 0

    def iter_replies(self, messages, *, timeout):  # noqa: ARG002
        from client.app import evaluate

        for msg in messages:
            yield evaluate(msg, self.contexts[msg.metadata.dst_node_id])


def test_the_federated_test_is_the_size_weighted_accuracy_of_the_parties_own_test_parts(tmp_path, monkeypatch):
    from flwr.app import ArrayRecord, Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from client.local_party import local_party
    from common.model import MixupClassifier
    from common.training import evaluate
    from server.federated_evaluation import federated_test

    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    run_config = {**BASE, "unknown-classes": "drop"}
    cfg = parse_run_config(run_config)
    folders = [_image_folder(tmp_path / "a", {"cat": 20, "dog": 5}, seed=1),
               _image_folder(tmp_path / "b", {"dog": 9, "owl": 12, "zebra": 3}, seed=2),
               _image_folder(tmp_path / "c", {"cat": 6, "owl": 30}, seed=3)]
    contexts = {10 + i: Context(run_id=1, node_id=10 + i, node_config=_node(folder, i), state=RecordDict(),
                                run_config=run_config) for i, folder in enumerate(folders)}
    torch.manual_seed(0)
    models = {}
    for step in (3, 5):
        model = MixupClassifier(in_dim=192, num_classes=3)
        models[step] = ArrayRecord(model.state_dict())
    tested = federated_test(_PartiesGrid(contexts), list(contexts), models, timeout=10)
    # Each party's figures, checked against the model evaluated directly on its test part.
    parties = [local_party(cfg, ctx.node_config) for ctx in contexts.values()]
    for step in (3, 5):
        model = MixupClassifier(in_dim=192, num_classes=3)
        model.load_state_dict(models[step].to_torch_state_dict())
        direct = [evaluate(model, p.test_x, p.test_y)[1] for p in parties]
        sizes = [p.test_y.numel() for p in parties]
        assert tested.per_step[step][1] == pytest.approx(np.dot(direct, sizes) / sum(sizes))
        assert [a[f"test-accuracy-{step}"] for a in tested.parties] == pytest.approx(direct)
    assert tested.rows == sum(p.test_y.numel() for p in parties)
    assert [(a["data-format"], a["num-train"], a["dropped"]) for a in tested.parties] == \
        [("image-folder", p.train_y.numel(), p.dropped) for p in parties]
    assert tested.parties[1]["dropped"] == 3
