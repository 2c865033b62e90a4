"""The InstaHide comparison's attack half: same parties, same threat model, both encodings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from simulations.studies import instahide_compare
from simulations.sweep import SweepError, load_sweep

SWEEP = """
name = "tiny-instahide"
seeds = [0]
strategies = ["one-shot-mixup"]
encodings = {encodings}

[settings]
dataset = "digits"
central-epochs = 2
public-fraction = 0.2

[[table]]
name = "table4"
layout = "table5"
parties = [3]
beta = [1.0]
"""


def _sweep(tmp_path: Path, encodings: str = '["singularized", "instahide"]') -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SWEEP.format(encodings=encodings), encoding="utf-8")
    return path


def test_cells_pair_the_two_encodings_of_the_same_partitions(tmp_path):
    cells = instahide_compare.paired_cells(load_sweep(_sweep(tmp_path)))
    assert len(cells) == 1
    configs = cells[0]["configs"]
    assert "encoding" not in configs["singularized"] and configs["instahide"]["encoding"] == "instahide"
    # Everything but the encoding is the same run config: same seed, partitions, public pool.
    assert {k: v for k, v in configs["instahide"].items() if k != "encoding"} == configs["singularized"]
    with pytest.raises(SweepError, match="both encodings"):
        instahide_compare.paired_cells(load_sweep(_sweep(tmp_path, '["singularized"]')))


def test_attacks_on_both_encodings_are_scored_against_the_same_parties(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep_report.md").write_text("the sweep's report\n", encoding="utf-8")
    (out / "report.md").write_text("an earlier index\n", encoding="utf-8")
    code = instahide_compare.main([str(_sweep(tmp_path)), "--skip-sweep", "--out", str(out), "--no-progress",
                                   "--linear-steps", "60", "--carlini-steps", "200"])
    assert code == 0
    with (out / "attacks.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    # 3 parties x (InstaHide, singularized in the run's noise mode, singularized strict).
    assert len(rows) == 9
    assert sorted({r["variant"] for r in rows}) == ["instahide", "singularized", "singularized-strict"]
    by_party = {}
    for r in rows:
        by_party.setdefault(r["party"], set()).add((r["n"], r["prior_only_snr_db"]))
    assert all(len(v) == 1 for v in by_party.values())  # same private rows and prior for every variant
    insta = [r for r in rows if r["variant"] == "instahide"]
    strict = [r for r in rows if r["variant"] == "singularized-strict"]
    # InstaHide with its graph known: clearly above the prior-only guess, and its clustering on
    # |x~| finds rows that share a private sample far above chance. Strict singularized mixup:
    # below the prior, clustering at chance level.
    assert all(float(r["snr_db"]) > float(r["prior_only_snr_db"]) + 2.0 for r in insta)
    assert all(float(r["cluster_precision"]) > 4 * float(r["cluster_chance"]) for r in insta)
    assert all(float(r["snr_db"]) < float(r["prior_only_snr_db"]) for r in strict)
    assert all(float(r["cluster_precision"]) < 4 * float(r["cluster_chance"]) for r in strict)
    text = (out / "attacks.md").read_text(encoding="utf-8")
    assert "| InstaHide k = 4, k_private = 2 | carlini-instahide |" in text
    assert "never the sign mask" in text and "falls" in text and "beats the prior-only guess" in text
    assert json.loads((out / "attacks.json").read_text())["settings"]["seeds"] == [0]
    assert (out / "attack_panels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "attacks.md" in (out / "report.md").read_text(encoding="utf-8")
    # --skip-sweep: the earlier index is replaced, the sweep's own report is left alone.
    assert (out / "sweep_report.md").read_text(encoding="utf-8") == "the sweep's report\n"


def test_the_sweep_step_never_writes_over_the_studys_index(tmp_path):
    """A sweep with a failed run stops the study, keeps its earlier index and puts the sweep's
    own report beside it; the next call resumes (only the failed run again) and finishes."""
    from sweep_fakes import JournalingExecutor, journal

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("an earlier index\n", encoding="utf-8")
    args = [str(_sweep(tmp_path)), "--out", str(out), "--no-progress", "--linear-steps", "5", "--carlini-steps", "5"]
    failing = JournalingExecutor(tmp_path / "journal", fail={"instahide"})
    assert instahide_compare.main(args, executor=failing) == 1
    assert (out / "report.md").read_text(encoding="utf-8") == "an earlier index\n"
    assert "# Sweep tiny-instahide" in (out / "sweep_report.md").read_text(encoding="utf-8")
    assert not list(out.glob(".sweep-report-*"))
    assert instahide_compare.main(args, executor=JournalingExecutor(tmp_path / "journal")) == 0
    starts = [name for event, name in journal(tmp_path / "journal") if event == "start"]
    assert len(starts) == 3 and starts[1] == starts[2] and "-instahide-" in starts[2]
    assert "[table4.md](table4.md)" in (out / "sweep_report.md").read_text(encoding="utf-8")
    index = (out / "report.md").read_text(encoding="utf-8")
    assert "python -m simulations.studies.instahide_compare" in index and "## Attack success" in index
