"""Every party brings its own data, with real processes on 127.0.0.1.

One TLS + authenticated deployment (the launcher, the nginx proxy when installed, as in
``tests/test_deployment.py``) with three SuperNodes, each reading its own generated data
folder named by its node config: an image folder, an ``.npz`` archive, and an image folder
with a class the run does not name (dropped, as the run config says). A one-shot run and a
FedProx run complete on it; the union equals the sum of the parties' training parts; the
summaries name the data source, each party's sizes and format, and the size-weighted
federated test accuracy over the parties' own test parts (no shared test set exists).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.test_deployment import _deployment, _flwr_run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("deployment")]

CLASSES = ("cat", "dog", "owl")
CONTRACT = "data-source='node-local' classes='cat,dog,owl' input-shape='3x8x8' unknown-classes='drop'"


def _pixels(rng: np.random.Generator, label: int, count: int) -> np.ndarray:
    """(count, 8, 8, 3) uint8 images whose class shows in one bright channel (learnable)."""
    images = rng.integers(0, 120, (count, 8, 8, 3))
    images[..., label % 3] += 120
    return images.astype(np.uint8)


def _image_folder(root, counts: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        label = CLASSES.index(name) if name in CLASSES else 1
        for i, image in enumerate(_pixels(rng, label, count)):
            Image.fromarray(image).save(root / name / f"{i:03d}.png")


def _organisations(base) -> list[tuple[str, str, int, int]]:
    """Three organisations' data on 'their own disks': (data-path, data-format, rows, dropped)."""
    _image_folder(base / "org-a", {"cat": 30, "dog": 12, "owl": 18}, seed=1)
    rng = np.random.default_rng(2)
    labels = np.array(["dog"] * 25 + ["owl"] * 15 + ["cat"] * 5)
    x = np.concatenate([_pixels(rng, CLASSES.index(name), 1) for name in labels]).transpose(0, 3, 1, 2)
    np.savez(base / "org-b.npz", x=np.ascontiguousarray(x), y=labels)
    _image_folder(base / "org-c", {"cat": 8, "owl": 26, "zebra": 7}, seed=3)  # zebra: not the run's
    return [(str(base / "org-a"), "image-folder", 60, 0), (str(base / "org-b.npz"), "npz", 45, 0),
            (str(base / "org-c"), "image-folder", 34, 7)]


@pytest.fixture(scope="module")
def organisations(tmp_path_factory):
    base = tmp_path_factory.mktemp("node-local")
    (base / "data").mkdir()
    data = _organisations(base / "data")
    configs = [f"require-secure-rng=true data-path='{path}' data-format='{fmt}'" for path, fmt, _, _ in data]
    with _deployment(base, keys=3, node_configs=configs) as info:
        info["data"] = data
        yield info


def _check_node_local_summary(summary: dict, data) -> None:
    source = summary["data_source"]
    assert source["kind"] == "node-local" and source["description"].startswith("node-local: each party's own data")
    assert source["test"].startswith("federated: each party's own held-out test part")
    parties = sorted(source["parties"], key=lambda p: p["partition-id"])
    assert [p["partition-id"] for p in parties] == [0, 1, 2]
    for party, (_, fmt, rows, dropped) in zip(parties, data):
        assert party["data-format"] == fmt and party["dropped"] == dropped
        assert party["num-train"] + party["num-val"] + party["num-test"] == rows
    test = source["federated_test"]
    assert test["rows"] == sum(p["num-test"] for p in parties)
    weighted = sum(p["num-test"] * p["test-accuracy"] for p in parties) / test["rows"]
    assert test["accuracy"] == pytest.approx(weighted)
    assert summary["result"]["test_accuracy"] == pytest.approx(weighted)
    assert test["per_party_accuracy"] == {str(p["partition-id"]): p["test-accuracy"] for p in parties}
    assert summary["inputs"]["train_rows"] is None and summary["inputs"]["test_rows"] == test["rows"]


@pytest.mark.timeout(600)
def test_one_shot_and_fedprox_run_on_every_partys_own_data(organisations):
    out = organisations["base"] / "runs"
    data = organisations["data"]
    common = f"{CONTRACT} secure-rng=true expected-parties=3 batch-size=16 output-dir='{out}'"
    code, text = _flwr_run(organisations, f"{common} central-epochs=20 run-name='local-one-shot'")
    assert code == 0, text[-3000:]
    one_shot = json.loads((out / "local-one-shot.json").read_text())
    _check_node_local_summary(one_shot, data)
    parties = one_shot["data_source"]["parties"]
    # The union is exactly the parties' training parts (validation and test parts stay home).
    assert one_shot["union"]["train_rows"] == sum(p["num-train"] for p in parties)
    assert sorted(p["num-examples"] for p in one_shot["parties"]) == sorted(p["num-train"] for p in parties)
    assert "node-local" in text and "each party's test" in text

    code, text = _flwr_run(organisations, f"{common} strategy='fedprox' num-rounds=2 run-name='local-fedprox'")
    assert code == 0, text[-3000:]
    fedprox = json.loads((out / "local-fedprox.json").read_text())
    _check_node_local_summary(fedprox, data)
    # Same run seed and same data: every party draws the same hold-outs in both runs.
    sizes = lambda s: sorted((p["partition-id"], p["num-train"], p["num-val"], p["num-test"])  # noqa: E731
                             for p in s["data_source"]["parties"])
    assert sizes(fedprox) == sizes(one_shot)
    assert fedprox["result"]["selected_at"] == 2 and fedprox["history"][-1]["test_accuracy"] == pytest.approx(
        fedprox["result"]["test_accuracy"])
