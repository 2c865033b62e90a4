"""A third one-shot encoding defined in this test file only runs through `flwr run` to a
summary and a report row: adding an encoding needs its module and one registry line, and no
other file of the platform changes.

The toy encoding releases every private row plus Gaussian noise with hard labels (a weak
privacy mechanism, here only to exercise the interface).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
import torch

from common.encodings import ENCODINGS, Encoding, EncodingOutput
from common.seeds import Stream, derive_seed
from common.stats import mean_max

NOISE_STD = 0.5
REFERENCE = "tests.test_encoding_plugin:ToyNoise"


@dataclass(frozen=True)
class _Rows:
    x: torch.Tensor
    y: torch.Tensor


@ENCODINGS.register
class ToyNoise(Encoding):
    """Each row plus N(0, NOISE_STD^2) noise; one-hot labels."""

    name = "toy-noise"
    label = "toy noise"
    first_release_metrics = ("noise-std",)
    later_release_metrics = ("noise-std",)

    def input_bound(self, cfg, *, value_bound, dim):  # noqa: ANN001
        return None  # Gaussian noise has no largest value: the default (the data's range) would refuse it

    def encode(self, cfg, party, *, device, epoch, with_validation) -> EncodingOutput:  # noqa: ANN001
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, party.partition_id, Stream.MIXUP, epoch))

        def noisy(x: torch.Tensor, y: torch.Tensor) -> _Rows:
            x = x.float()
            labels = torch.nn.functional.one_hot(y.long(), party.num_classes).float()
            return _Rows(x=x + NOISE_STD * torch.randn(x.shape, generator=gen), y=labels)

        val = noisy(party.val_x, party.val_y) if with_validation else None
        return EncodingOutput(train=noisy(party.train_x, party.train_y), val=val, metrics={"noise-std": NOISE_STD})

    def privacy_summary(self, cfg, parties, releases: Counter) -> dict:  # noqa: ANN001
        per_party = mean_max(releases.values())
        return {"encoding": self.name, "release_mode": cfg.release, "noise_mode": "none", "tau": None,
                "releases_per_party": per_party, "exposures_per_sample": per_party,
                "noise_std": mean_max(m["noise-std"] for m in parties)}


def test_the_registry_resolves_an_encoding_defined_elsewhere():
    from common.config import parse_run_config

    cfg = parse_run_config({"encoding": REFERENCE})
    assert cfg.encoding_spec.name == "toy-noise" and "toy-noise" in ENCODINGS.names()
    with pytest.raises(ValueError, match="cannot import"):
        parse_run_config({"encoding": "tests.no_such_module:Nothing"})


@pytest.mark.slow
def test_a_toy_encoding_from_a_test_file_runs_through_flwr_to_a_summary_and_a_report_row(flower, tmp_path):
    from common.run_summary import read_summary
    from simulations.report import write_report
    from simulations.sweep import SweepRun, row_from_summary
    from simulations.runtime.local_flower import flwr_run

    home, env = flower
    config = {"encoding": REFERENCE, "central-epochs": 3, "output-dir": str(tmp_path / "runs"), "run-name": "toy"}
    proc = flwr_run(config, num_supernodes=3, log_path=tmp_path / "toy.log", env=env, timeout=420, app_dir=flower.app)
    log = (tmp_path / "toy.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    summary = read_summary(tmp_path / "runs" / "toy.json")
    assert summary.privacy.encoding == "toy-noise" and summary.privacy.noise_std["max"] == NOISE_STD
    # Every private training row once; the parties' validation parts stay home (selection = last).
    assert summary.union.train_rows == sum(p["num-examples"] for p in summary.parties) > 1438 * 0.85
    assert summary.union.val_rows == 0
    assert [p["noise-std"] for p in summary.parties] == [NOISE_STD] * 3
    assert summary.result.test_accuracy > 50  # percent; noise of std 0.5 on [0, 1] pixels still teaches digits
    run = SweepRun(table="toy", layout="table5", strategy="one-shot-mixup", release="once", encoding="toy-noise",
                   parties=3, beta=1.0, rho=1.0, seed=0, run_config=config, key="toy", name="toy")
    row = row_from_summary(run, summary, summary_path=tmp_path / "runs" / "toy.json")
    assert row["encoding"] == "toy-noise" and row["tau"] is None
    files = write_report([row], out_dir=tmp_path / "report", title="toy", settings={})
    table = files.one_shot_vs_iterative_md.read_text()
    assert "toy noise" in table and f"{row['test_accuracy']:.2f}" in table
