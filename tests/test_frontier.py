"""The frontier study's tables, fronts and statements (no flwr, no attacks): the Pareto front
on a hand-checked fixture, the intervals over seeds, the dominance statements, the table,
CSV and figure made from RunSummary-valid summaries, and the shipped sweep file and its
--quick variant."""

from __future__ import annotations

import csv
import math

import pytest

from common.run_summary import RunSummary
from simulations.studies.frontier import QUICK_EPOCHS, collect_records, quick_spec, write_frontier
from simulations.studies.frontier_figure import write_figure
from simulations.studies.frontier_leakage import LeakageOptions
from simulations.studies.frontier_table import (
    aggregate,
    dominance_statements,
    dominates,
    front_statements,
    interval,
    pareto_front,
)

T_975_1 = 12.706204736174698  # Student t quantile, 1 degree of freedom (two seeds)


def summary_fixture(*, strategy: str = "one-shot-mixup", seed: int = 0, parties: int = 10, beta: float = 1.0,
                    accuracy: float = 90.0, encoding: str | None = "singularized", noise_mode: str = "strict",
                    tau: float | None = 2.0, release: str = "once", defence: str = "none", sigma: float | None = None,
                    epsilon: float | None = None, reid: float | None = 0.1, local: tuple | None = None,
                    config: dict | None = None, wall: float = 10.0) -> RunSummary:
    """A RunSummary of the shape the ServerApp writes (only what the frontier reads is varied)."""
    cfg = {"dataset": "digits", "seed": seed, "beta": beta, "strategy": strategy, "selection": "last",
           "public-fraction": 0.2, **(config or {})}
    one_shot = strategy == "one-shot-mixup"
    if one_shot and encoding != "singularized":
        cfg["encoding"] = encoding
    if encoding == "instahide":
        cfg.update({"instahide-k": 4, "instahide-k-private": 2})
    if one_shot and encoding == "singularized":
        cfg.update({"tau": tau, "noise-mode": noise_mode, "release": release})
    if defence != "none":
        cfg["defence"] = defence
    if sigma is not None:
        cfg["dp-noise-multiplier"] = sigma
    raw = {
        "strategy": strategy, "num_parties": parties, "rounds": 1 if one_shot else 30, "wall_seconds": wall,
        "result": {"test_accuracy": accuracy, "test_loss": 0.3, "selection": "last", "selected_by": "the last epoch",
                   "selected_at": 30, "last_test_accuracy": accuracy, "train_seconds": 1.0},
        "communication": {"bytes_uploaded": 1000 * parties if one_shot else 10**6 * parties,
                          "bytes_downloaded": 10 * parties, "bytes_uploaded_per_party": 1000.0,
                          "bytes_downloaded_per_party": 10.0, "messages_sent": parties, "messages_received": parties},
        "started_utc": "2026-12-02T00:00:00+00:00", "versions": {"flwr": "fake"}, "server_device": "cpu",
        "inputs": {"dataset": "digits", "test_rows": 360}, "config": cfg,
    }
    if one_shot:
        privacy = {"encoding": encoding, "release_mode": release, "noise_mode": "none", "tau": None,
                   "releases_per_party": {"mean": 1, "max": 1}, "exposures_per_sample": {"mean": 1, "max": 1}}
        if encoding == "singularized":
            privacy.update(noise_mode=noise_mode, tau=tau, snr_pc1={"mean": 0.1 * (tau or 1), "max": 1.0})
        if reid is not None and encoding != "pooled":
            privacy["reidentification_rate"] = {"mean": reid, "max": reid}
        raw["privacy"] = privacy
    elif strategy == "local-only":
        raw["local_only"] = {"per_party_test_accuracy": list(local), "mean": sum(local) / len(local),
                             "worst": min(local)}
    else:
        raw["defence"] = {"defence": defence, "model_norm": "layer" if sigma else "batch"}
        if epsilon is not None:
            raw["defence"].update(epsilon_max=epsilon, delta=1e-5)
    return RunSummary.model_validate(raw)


def leakage_fixture(*, loss_auc=None, lira_auc=None, tpr=None, gain=None, recovered=None, reid=None, epsilon=None):
    membership = {} if loss_auc is None else {
        "loss": {"auc": loss_auc, "tpr_at_low_fpr": tpr, "low_fpr": 0.05, "members": 1030, "nonmembers": 360},
        "lira": {"auc": lira_auc, "tpr_at_low_fpr": tpr, "low_fpr": 0.05, "members": 1030, "nonmembers": 360,
                 "reference_models": 8}}
    return {"membership": membership, "reconstruction": {"attack": "x", "snr_gain_db": gain,
                                                          "recovered_share": recovered},
            "reidentification_rate": reid, "epsilon": epsilon, "delta": None if epsilon is None else 1e-5}


# ------------------------------------------------------------------------------------ fronts


def test_the_pareto_front_keeps_exactly_the_undominated_points_by_hand():
    points = [(90, 0.6), (85, 0.5), (80, 0.55), (95, 0.9), (95, 0.8), (70, None), (85, 0.5), (60, 0.1)]
    # (80, 0.55) is beaten by (85, 0.5); (95, 0.9) by (95, 0.8); None is never on a front; the two
    # (85, 0.5) tie and neither beats the other; (60, 0.1) has the lowest leakage.
    assert pareto_front(points) == [True, True, False, False, True, False, True, True]
    assert pareto_front([(50, math.inf), (40, 1.0)]) == [True, True]
    assert pareto_front([]) == []


def test_intervals_over_seeds_are_student_t_and_say_what_they_cannot_measure():
    two = interval([90.0, 94.0])
    assert two["mean"] == 92.0 and two["n"] == 2
    assert two["high"] - two["mean"] == pytest.approx(T_975_1 * 2.0)  # s = 2 sqrt(2), half = t s / sqrt(2)
    one = interval([90.0, None])
    assert one["mean"] == 90.0 and math.isinf(one["low"]) and math.isinf(one["high"])
    assert interval([None]) is None
    exposed = interval([math.inf, math.inf])
    assert exposed == {"mean": math.inf, "low": math.inf, "high": math.inf, "n": 2}


def _row(acc, **measures):
    def iv(v, half=0.01):
        return None if v is None else {"mean": v, "low": v - half, "high": v + half, "n": 3}
    return {"accuracy": iv(acc, 1.0), **{k: iv(v) for k, v in measures.items()}}


def test_dominance_needs_higher_accuracy_and_lower_leakage_on_every_shared_measure():
    a = _row(95, mia_loss_auc=0.50, recon_snr_gain=1.0, reid=0.2)
    b = _row(90, mia_loss_auc=0.55, recon_snr_gain=3.0)
    assert dominates(a, b) == ["mia_loss_auc", "recon_snr_gain"]  # reid: b has none, not compared
    assert dominates(b, a) is None
    assert dominates(a, b, separated=True) == ["mia_loss_auc", "recon_snr_gain"]
    close = _row(90.5, mia_loss_auc=0.549, recon_snr_gain=2.999)
    assert dominates(close, b) is not None and dominates(close, b, separated=True) is None
    worse_somewhere = _row(99, mia_loss_auc=0.40, recon_snr_gain=3.5)
    assert dominates(worse_somewhere, b) is None
    assert dominates(_row(99, reid=0.1), _row(90, epsilon=1.0)) is None  # nothing shared: no claim


# ------------------------------------------------------------------------ table and figure


def _fixture_runs():
    """Two seeds of: FedProx, singularized tau 2 and 5.44, clamped, InstaHide, DP-Mix, the references."""
    runs = []
    for seed in (0, 1):
        d = 1.0 * seed  # accuracies in percent, as the ServerApp writes them
        runs += [
            (summary_fixture(strategy="fedprox", seed=seed, accuracy=95 + d, encoding=None),
             leakage_fixture(loss_auc=0.60, lira_auc=0.62, tpr=0.10, gain=8.0 + seed, recovered=0.75)),
            (summary_fixture(seed=seed, accuracy=60 + d, tau=2.0),
             leakage_fixture(loss_auc=0.50, lira_auc=0.51, tpr=0.05, gain=0.1, recovered=0.0, reid=0.10)),
            (summary_fixture(seed=seed, accuracy=97 + d, tau=5.44),
             leakage_fixture(loss_auc=0.55, lira_auc=0.56, tpr=0.06, gain=5.0, recovered=0.50, reid=0.90)),
            (summary_fixture(seed=seed, accuracy=90 + d, tau=1e-6, noise_mode="clamped"),
             leakage_fixture(loss_auc=0.52, lira_auc=0.53, tpr=0.05, gain=9.0, recovered=0.80, reid=0.60)),
            (summary_fixture(seed=seed, accuracy=20 + d, encoding="instahide", tau=None),
             leakage_fixture(loss_auc=0.51, lira_auc=0.50, tpr=0.05, gain=-1.0, recovered=0.0, reid=0.05)),
            (summary_fixture(strategy="fedprox", seed=seed, accuracy=60 + d, encoding=None, defence="dp-mix-self",
                             sigma=4.0, epsilon=6.8),
             leakage_fixture(loss_auc=0.49, lira_auc=0.50, tpr=0.04, gain=0.5, recovered=0.0, epsilon=6.8)),
            (summary_fixture(seed=seed, accuracy=98 + d, encoding="pooled", tau=None),
             leakage_fixture(loss_auc=0.58, lira_auc=0.60, tpr=0.09, gain=math.inf, recovered=1.0, reid=1.0)),
            (summary_fixture(strategy="local-only", seed=seed, accuracy=70 + d, encoding=None,
                             local=(60 + d, 80 + d)), leakage_fixture()),
        ]
    return runs


def test_the_frontier_table_csv_and_figure_from_summaries(tmp_path):
    runs = _fixture_runs()
    pairs = [(tmp_path / f"run{i}.json", s) for i, (s, _) in enumerate(runs)]
    by_path = {p: leak for (p, _), (_, leak) in zip(pairs, runs)}
    records = collect_records(pairs, leakage=lambda path, summary: by_path[path], progress=False)
    config = {"dataset": "digits", "central-epochs": 30, "num-rounds": 30, "public-fraction": 0.2}
    rows, written = write_frontier(records, out=tmp_path, opts=LeakageOptions(), config=config, title="fixture")
    assert [p.name for p in written] == ["frontier.md", "frontier.csv", "frontier.png"]
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    table = {(r["family"], r["setting"]): r for r in csv.DictReader((tmp_path / "frontier.csv").open())}
    assert len(table) == 8 and {r["n"] for r in table.values()} == {"2"}
    fedprox = table[("fedprox", "")]
    assert float(fedprox["accuracy_mean"]) == pytest.approx(95.5)
    assert 95.5 - float(fedprox["accuracy_low"]) == pytest.approx(T_975_1 * 0.5)  # values 95 and 96
    assert float(fedprox["accuracy_high"]) == 100.0  # 95.5 + 6.35, clipped: an accuracy cannot pass 100 %
    assert float(fedprox["recon_snr_gain_mean"]) == pytest.approx(8.5) and fedprox["reid_mean"] == ""
    assert float(table[("local-only", "")]["worst_party_accuracy_mean"]) == pytest.approx(60.5)
    assert table[("pooled", "")]["recon_snr_gain_mean"] == "inf" and table[("pooled", "")]["reference"] == "pooled"
    # Fronts by hand. LiRA AUC: tau 5.44 (97.5 %, 0.56) and pooled aside, FedProx (95.5, 0.62) is beaten
    # by tau 5.44; clamped (90.5, 0.53) stands; tau 2 (60.5, 0.51) is beaten by DP-Mix (60.5, 0.50)?
    # no: equal accuracy, lower leakage -> DP-Mix beats tau 2; InstaHide (20.5, 0.50) is beaten by DP-Mix.
    lira_front = {k for k, r in table.items() if "LiRA AUC" in r["on_front_of"].split("; ")}
    assert lira_front == {("singularized-strict-once", "tau = 5.44"),
                          ("singularized-clamped-once", "tau = 1e-06, nominal"),
                          ("fedprox+dp-mix-self", "sigma = 4")}
    # Re-identification: FedProx and DP-Mix release no rows, the others do.
    reid_front = {k for k, r in table.items() if "re-id" in r["on_front_of"].split("; ")}
    assert reid_front == {("singularized-strict-once", "tau = 5.44"), ("singularized-clamped-once",
                                                                       "tau = 1e-06, nominal"),
                          ("singularized-strict-once", "tau = 2"), ("instahide", "k = 4, k_private = 2")}
    assert table[("pooled", "")]["on_front_of"] == ""  # references are lines, never on a front
    md = (tmp_path / "frontier.md").read_text()
    # tau 5.44 beats FedProx on accuracy (97.5 > 95.5) and on every measure both have.
    assert ("one-shot settings that dominate FedProx (higher accuracy and lower leakage on every measure both "
            "have): singularized mixup, strict noise, released once (tau = 5.44) [on loss AUC, loss TPR@FPR, LiRA "
            "AUC, LiRA TPR@FPR, SNR gain (dB), recovered; not separated by the intervals]") in md
    assert "One-shot settings FedProx dominates: singularized mixup, strict noise, released once (tau = 2)" not in md
    assert "mean party 70.5" in md and "worst party 60.5" in md
    assert "tau = 1e-06, nominal; measured SNR_pc1" in md
    # The figure draws exactly the table's fronts.
    drawn = write_figure(rows, path=tmp_path / "again.png", title="again")
    cell = (10, 1.0, 1.0)
    flat = [v for point in drawn[(cell, "mia_lira_auc")] for v in point]
    assert flat == pytest.approx([0.50, 60.5, 0.53, 90.5, 0.56, 97.5])
    assert [v for point in drawn[(cell, "epsilon")] for v in point] == pytest.approx([6.8, 60.5])


def test_front_and_dominance_statements_name_the_settings():
    from simulations.studies.frontier_table import run_record

    runs = _fixture_runs()
    rows = aggregate([run_record(s, name=f"r{i}", leakage=leak) for i, (s, leak) in enumerate(runs)])
    fronts = "\n".join(front_statements(rows))
    assert "  - epsilon: FedProx + DP-Mix_self (sigma = 4)" in fronts
    # Make FedProx dominate tau 2 on every measure: then the reverse statement names it.
    for row in rows:
        if row["family"] == "fedprox":
            for key in ("mia_loss_auc", "mia_loss_tpr", "mia_lira_auc", "mia_lira_tpr", "recon_snr_gain",
                        "recon_recovered"):
                row[key] = {"mean": -5.0, "low": -5.0, "high": -5.0, "n": 2}
    text = "\n".join(dominance_statements(rows))
    assert "One-shot settings FedProx dominates: singularized mixup, strict noise, released once (tau = 2)" in text
    assert "InstaHide (k = 4, k_private = 2)" in text


# ------------------------------------------------------------------------------ sweep file


def test_the_sweep_file_runs_every_method_on_the_same_cells_and_seeds_and_quick_is_small():
    from simulations.sweep import DEFAULT_SWEEP, expand_runs, load_sweep, unique_runs
    from simulations.studies.frontier import DEFAULT_FILE

    assert DEFAULT_FILE.parent == DEFAULT_SWEEP.parent
    spec = load_sweep(DEFAULT_FILE)
    runs = unique_runs(expand_runs(spec))
    assert len(spec.seeds) >= 3
    cells = {(r.parties, r.beta) for r in runs}
    assert cells == {(10, 1.0), (10, 0.1), (100, 1.0)}
    methods = {(r.strategy, r.run_config.get("encoding", ""), r.run_config.get("defence", "")) for r in runs}
    # Every method in every cell, for every seed; DP-Mix only at P = 10 (its runs cost 4-7x the
    # others': the sweep file leaves it out of the P = 100 cell and says so).
    dp_mix = ("fedprox", "", "dp-mix-self")
    assert dp_mix in methods
    for cell in cells:
        for seed in spec.seeds:
            here = {(r.strategy, r.run_config.get("encoding", ""), r.run_config.get("defence", ""))
                    for r in runs if (r.parties, r.beta) == cell and r.seed == seed}
            assert here == (methods if cell[0] == 10 else methods - {dp_mix})
    assert {r.run_config["selection"] for r in runs} == {"last"}
    assert {r.run_config["public-fraction"] for r in runs} == {0.2}
    assert {r.run_config["party-figures"] for r in runs} == {"exact"}  # re-identification measured, not rounded
    taus = sorted({r.run_config["tau"] for r in runs if r.run_config.get("noise-mode") == "strict"})
    assert taus[0] <= 1.0 and 5.3 <= taus[-1] <= 0.7**2 / 0.3**2
    assert {"pooled", "instahide"} <= {r.run_config.get("encoding") for r in runs}
    assert "local-only" in {r.strategy for r in runs}

    quick, overrides = quick_spec(spec)
    qruns = unique_runs(expand_runs(quick, overrides=overrides))
    assert overrides == {"central-epochs": QUICK_EPOCHS, "num-rounds": QUICK_EPOCHS}
    assert {(r.parties, r.beta, r.seed) for r in qruns} == {(10, 1.0, spec.seeds[0])}
    qtaus = sorted({r.run_config["tau"] for r in qruns if r.run_config.get("noise-mode") == "strict"
                    and r.release == "once"})
    assert qtaus == [taus[0], taus[len(taus) // 2], taus[-1]]
    assert len({r.run_config.get("dp-noise-multiplier") for r in qruns if r.defence == "dp-mix-self"}) == 1
    assert len(qruns) < 15 and {r.run_config["central-epochs"] for r in qruns} == {QUICK_EPOCHS}
