"""The sweep runner: grid files, run identity, resumption after interruption, outputs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from simulations.report import read_runs_csv
from simulations.sweep import (
    DEFAULT_SWEEP,
    SWEEPS_DIR,
    SweepError,
    expand_runs,
    load_sweep,
    main,
    row_from_summary,
    run_sweep,
    unique_runs,
)
from common.run_summary import RunSummary
from sweep_fakes import JournalingExecutor, fake_summary, journal

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
seeds = [0, 1]
[settings]
dataset = "digits"
central-epochs = 3
num-rounds = 2
[[table]]
name = "table5"
layout = "table5"
parties = [3, 4]
beta = [1.0, 0.1]
[[table]]
name = "table6"
layout = "table6"
parties = [4]
beta = [0.5]
rho = [1.0, 0.1]
[[table]]
name = "release"
layout = "table5"
parties = [4]
beta = [0.1]
strategies = ["one-shot-mixup"]
releases = ["once", "per-epoch"]
"""


def _sweep_file(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_sweeps_expand_to_the_papers_grids():
    default = load_sweep(DEFAULT_SWEEP)
    runs = expand_runs(default)
    assert default.settings["dataset"] == "digits"
    assert {r.layout for r in runs} == {"table5", "table6"}
    # P {5, 10} x beta {1, 0.1} and P 10 x beta 0.1 x rho {1, 0.1}, two strategies, plus the
    # per-epoch release of one cell; the release block's "once" run is table 5's own run.
    assert len(unique_runs(runs)) == 5 * (4 * 2 + 2 * 2 + 1)  # 5 seeds
    assert len(runs) == len(unique_runs(runs)) + 5
    assert {r.run_config["selection"] for r in runs} == {"last"}  # one rule for both protocols
    gpu = expand_runs(load_sweep(SWEEPS_DIR / "cifar10-resnet18-gpu.toml"))
    assert len(gpu) == 3 * (9 + 9) * 2
    table5 = {(r.parties, r.beta) for r in gpu if r.layout == "table5"}
    assert table5 == {(p, b) for p in (10, 50, 100) for b in (1.0, 0.5, 0.1)}
    table6 = {(r.parties, r.beta, r.rho) for r in gpu if r.layout == "table6"}
    assert table6 == {(50, b, r) for b in (1.0, 0.5, 0.1) for r in (1.0, 0.1, 0.01)}
    assert all(r.run_config["partitioner"] == "size-skew" for r in gpu if r.layout == "table6")
    assert all(r.run_config["backbone"] == "resnet18" for r in gpu)


def test_run_identity_hashes_the_whole_config(tmp_path):
    spec = load_sweep(_sweep_file(tmp_path))
    first = expand_runs(spec)
    assert [r.key for r in first] == [r.key for r in expand_runs(spec)]  # stable
    changed = expand_runs(spec, overrides={"tau": 1e-4})
    assert not {r.key for r in first} & {r.key for r in changed}
    run = next(r for r in first if r.layout == "table6" and r.rho == 0.1)
    assert run.run_config["rho"] == 0.1 and run.run_config["poor-party"] == 0
    assert "release" not in next(r for r in first if r.strategy == "fedprox").run_config
    names = [r.name for r in unique_runs(first)]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nseeds = [0]\n[[table]]\nname = "t"\nlayout = "table6"\nparties = [3]\nbeta = [1.0]\n', "needs rho"),
        ('name = "x"\nseeds = [0]\n[[table]]\nname = "t"\nlayout = "table5"\nparties = [3]\nbeta = [1.0]\nrho = [0.1]\n',
         "remove rho"),
        ('name = "x"\nseeds = [0]\n[settings]\nseed = 3\n[[table]]\nname = "t"\nlayout = "table5"\nparties = [3]\nbeta = [1.0]\n',
         "set by the sweep"),
        ('name = "x"\nseeds = [0]\nbogus = 1\n[[table]]\nname = "t"\nlayout = "table5"\nparties = [3]\nbeta = [1.0]\n',
         "bogus"),
        ('name = "x"\nseeds = [0, 0]\n[[table]]\nname = "t"\nlayout = "table5"\nparties = [3]\nbeta = [1.0]\n', "distinct"),
        ('name = "x"\nseeds = [0]\n[[table]]\nname = "t"\nlayout = "table5"\nparties = [1]\nbeta = [1.0]\n', "2 parties"),
    ],
)
def test_bad_sweep_files_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(SweepError, match=message):
        load_sweep(_sweep_file(tmp_path, text))


def test_bad_run_config_is_refused_before_anything_runs(tmp_path, capsys):
    code = main([str(_sweep_file(tmp_path)), "--out", str(tmp_path / "out"), "--set", "beta-typo=1.0"],
                executor=JournalingExecutor(tmp_path / "journal"))
    assert code == 2
    assert "unknown key" in capsys.readouterr().err
    assert journal(tmp_path / "journal") == []


def test_sweep_runs_every_run_once_and_a_rerun_computes_nothing(tmp_path):
    spec = load_sweep(_sweep_file(tmp_path))
    out = tmp_path / "out"
    executor = JournalingExecutor(tmp_path / "journal")
    outcome = run_sweep(spec, out_dir=out, executor=executor, progress=False)
    planned = len(unique_runs(expand_runs(spec)))
    assert len(outcome.computed) == planned and not outcome.failed
    starts = Counter(name for event, name in journal(tmp_path / "journal") if event == "start")
    assert set(starts.values()) == {1} and len(starts) == planned
    rows = read_runs_csv(out / "runs.csv")
    assert len(rows) == len(expand_runs(spec))  # one row per run and table
    per_epoch = [r for r in rows if r["release"] == "per-epoch"]
    assert per_epoch and all(r["exposures_per_sample"] == 3 and r["rounds"] == 3 for r in per_epoch)
    assert all(r["exposures_per_sample"] == 1 for r in rows if r["release"] == "once")
    assert all(r["exposures_per_sample"] == 0 for r in rows if r["strategy"] == "fedprox")

    again = run_sweep(spec, out_dir=out, executor=executor, progress=False)
    assert again.computed == [] and len(again.reused) == planned
    assert len(journal(tmp_path / "journal")) == 2 * planned  # start + done each, nothing new


def test_an_earlier_attempts_failure_record_is_set_aside_beside_the_logs_not_left_with_the_results(tmp_path):
    """A run cut off by the sweep's stop can leave ``<name>.failed.json`` among the summaries;
    the attempt that follows moves it to ``logs/`` (content unchanged) before it runs."""
    spec = load_sweep(_sweep_file(tmp_path))
    out = tmp_path / "out"
    first = unique_runs(expand_runs(spec))[0]
    (out / "summaries").mkdir(parents=True)
    record = {"status": "failed", "reason": "round 1 (train): 0 accepted replies of 3 sent; quorum is 2"}
    (out / "summaries" / f"{first.name}.failed.json").write_text(json.dumps(record))
    outcome = run_sweep(spec, out_dir=out, executor=JournalingExecutor(tmp_path / "journal"), progress=False)
    assert first.name in outcome.computed and (out / "summaries" / f"{first.name}.json").exists()
    assert not list((out / "summaries").glob("*.failed.json"))
    kept = list((out / "logs").glob(f"{first.name}.earlier-*.failed.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text()) == record


def test_every_cell_and_seed_gets_a_partition_figure_and_its_label_skew(tmp_path):
    """The figure and the skew come from the parties' own partitioning code: the counts in
    partitions.json are exactly the parties' rows, and every row of a cell and seed carries
    that partition's skew, whatever the strategy."""
    import numpy as np

    from client.party import load_party
    from common.config import parse_run_config
    from common.partition.skew import label_skew

    spec = load_sweep(_sweep_file(tmp_path))
    out = tmp_path / "out"
    run_sweep(spec, out_dir=out, executor=JournalingExecutor(tmp_path / "journal"), progress=False)
    facts = {item["name"]: item for item in json.loads((out / "partitions" / "partitions.json").read_text())}
    runs = expand_runs(spec)
    cells = {(r.parties, r.beta, r.rho, r.seed) for r in runs}
    assert len(facts) == len(cells) and len(list((out / "partitions").glob("*.png"))) == len(cells)
    item = facts["P4-b0.5-rho0.1-seed1"]
    run = next(r for r in runs if r.name.startswith("fedprox-P4-b0.5-rho0.1-seed1"))
    cfg = parse_run_config(run.run_config)
    parties = [load_party(cfg, pid, 4) for pid in range(4)]
    held = np.array([np.bincount(np.concatenate([p.train_y.numpy(), p.val_y.numpy()]), minlength=10)
                     for p in parties])
    assert np.array_equal(np.array(item["counts"]), held) and item["poor_party"] == 0
    assert item["label_skew"] == pytest.approx(label_skew(held))
    rows = [r for r in read_runs_csv(out / "runs.csv") if (r["parties"], r["beta"], r["rho"], r["seed"]) == (4, 0.5, 0.1, 1)]
    assert len({r["strategy"] for r in rows}) == 2 and {r["label_skew"] for r in rows} == {item["label_skew"]}


def test_failed_run_is_recorded_kept_and_retried(tmp_path):
    spec = load_sweep(_sweep_file(tmp_path))
    out = tmp_path / "out"
    outcome = run_sweep(spec, out_dir=out, executor=JournalingExecutor(tmp_path / "j1", fail={"P3-b0.1-seed1"}),
                        progress=False)
    failed = [f["name"] for f in outcome.failed]
    assert failed and all("P3-b0.1-seed1" in name for name in failed)
    assert json.loads((out / "failures.json").read_text())[0]["name"] == failed[0]
    assert (out / "logs" / f"{failed[0]}.log").exists()
    retry = run_sweep(spec, out_dir=out, executor=JournalingExecutor(tmp_path / "j2"), progress=False)
    assert sorted(retry.computed) == sorted(failed) and not retry.failed


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path):
    import fcntl

    spec = load_sweep(_sweep_file(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    with (out / "sweep.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SweepError, match="another sweep"):
            run_sweep(spec, out_dir=out, executor=JournalingExecutor(tmp_path / "j"), progress=False)


def _start_sweep(tmp_path: Path, out: Path, *, delay: float) -> subprocess.Popen:
    script = tmp_path / "drive.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        from pathlib import Path
        from simulations.sweep import main
        from sweep_fakes import JournalingExecutor
        sys.exit(main([{str(tmp_path / 'sweep.toml')!r}, "--out", {str(out)!r}, "--no-progress"],
                      executor=JournalingExecutor(Path({str(tmp_path / 'journal')!r}), delay={delay})))
    """))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=ROOT, text=True)


def _wait_for_done(path: Path, count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for e, _ in journal(path) if e == "done") < count:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "sweep made no progress"
        time.sleep(0.05)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_killed_sweep_resumes_without_recomputing_a_finished_run(tmp_path, how):
    _sweep_file(tmp_path)
    out = tmp_path / "out"
    proc = _start_sweep(tmp_path, out, delay=0.4)
    _wait_for_done(tmp_path / "journal", 3, proc)
    time.sleep(0.1)  # inside the fourth run
    proc.send_signal(how)
    proc.wait(timeout=30)
    if how == signal.SIGTERM:
        assert proc.returncode == 130  # clean stop: "run the same command again to continue"
    before = journal(tmp_path / "journal")
    finished_before = {n for e, n in before if e == "done"}
    cut_off = {n for e, n in before if e == "start"} - finished_before

    proc = _start_sweep(tmp_path, out, delay=0.0)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    events = journal(tmp_path / "journal")[len(before):]
    restarted = [n for e, n in events if e == "start"]
    assert not finished_before & set(restarted), "a finished run was computed again"
    assert cut_off <= set(restarted)
    if how == signal.SIGKILL:  # no chance to clean up: the marker tells the next start
        assert {n for e, n in events if e == "recover"} == cut_off
        assert any(p.name.startswith(next(iter(cut_off))) and ".interrupted-" in p.name
                   for p in (out / "logs").iterdir())
    spec = load_sweep(tmp_path / "sweep.toml")
    planned = {r.name for r in unique_runs(expand_runs(spec))}
    assert {n for e, n in journal(tmp_path / "journal") if e == "done"} == planned
    assert not list((out / "inflight").iterdir())
    assert (out / "report.md").exists() and (out / "table5.md").exists()


def test_row_from_summary_reads_the_figures_that_name_how_a_number_was_made(tmp_path):
    spec = load_sweep(_sweep_file(tmp_path))
    run = next(r for r in expand_runs(spec) if r.release == "per-epoch")
    summary = fake_summary(run, run.run_config)
    row = row_from_summary(run, RunSummary.model_validate(summary), summary_path=tmp_path / "s.json")
    assert row["test_accuracy"] == summary["result"]["test_accuracy"]  # percent in both
    assert row["selected_at"] == 2 and row["noise_mode"] == "clamped" and row["tau"] == 1e-6
    assert row["releases_per_party"] == row["exposures_per_sample"] == 3
    assert row["bytes_uploaded_per_party"] == pytest.approx(summary["communication"]["bytes_uploaded"] / run.parties)
    fl = next(r for r in expand_runs(spec) if r.strategy == "fedprox")
    fl_row = row_from_summary(fl, RunSummary.model_validate(fake_summary(fl, fl.run_config)),
                              summary_path=tmp_path / "f.json")
    assert fl_row["release"] == "" and fl_row["tau"] is None and fl_row["exposures_per_sample"] == 0


def test_tables_option_selects_blocks(tmp_path):
    from simulations.sweep import select_tables

    spec = load_sweep(_sweep_file(tmp_path))
    only = select_tables(spec, ["table6"])
    assert {r.table for r in expand_runs(only)} == {"table6"}
    with pytest.raises(SweepError, match="no such block"):
        select_tables(spec, ["table7"])


# ------------------------------------------------------------------ encodings (Table 4: InstaHide)

ENCODINGS = """
name = "enc"
seeds = [0, 1]
encodings = ["singularized", "instahide"]
[settings]
dataset = "digits"
central-epochs = 3
num-rounds = 2
public-fraction = 0.2
[[table]]
name = "table4"
layout = "table5"
parties = [3]
beta = [1.0, 0.1]
[[table]]
name = "plain"
layout = "table5"
parties = [4]
beta = [1.0]
strategies = ["one-shot-mixup"]
encodings = ["singularized"]
"""

# Names (with run keys) of runs of simulations/sweeps/digits-default.toml as computed before
# encodings existed; a run key that changed would recompute every finished result.


def test_one_shot_runs_expand_over_encodings_and_fedprox_does_not(tmp_path):
    runs = expand_runs(load_sweep(_sweep_file(tmp_path, ENCODINGS)))
    table4 = [r for r in runs if r.table == "table4"]
    # 2 seeds x 2 cells x (fedprox + one-shot in 2 encodings); the plain block only singularized.
    assert len(table4) == 2 * 2 * 3
    assert Counter((r.strategy, r.encoding) for r in table4) == {
        ("fedprox", ""): 4, ("one-shot-mixup", "singularized"): 4, ("one-shot-mixup", "instahide"): 4}
    assert {r.encoding for r in runs if r.table == "plain"} == {"singularized"}
    instahide = [r for r in runs if r.encoding == "instahide"]
    assert all(r.run_config["encoding"] == "instahide" for r in instahide)
    assert all(r.name.startswith(f"one-shot-mixup-instahide-once-P3-b{r.beta:g}-seed{r.seed}-") for r in instahide)
    # Only the non-default encoding enters the run config, so singularized keys stay as they were.
    assert all("encoding" not in r.run_config for r in runs if r.encoding != "instahide")
    assert all(r.run_config["public-fraction"] == 0.2 for r in runs)  # both encodings: same partitions
    names = [r.name for r in unique_runs(runs)]
    assert len(set(names)) == len(names)
    # Each InstaHide run differs from its singularized twin in exactly the encoding key.
    for run in instahide:
        twin = next(r for r in runs if r.encoding == "singularized" and (r.table, r.beta, r.seed) ==
                    (run.table, run.beta, run.seed))
        assert {k: v for k, v in run.run_config.items() if k != "encoding"} == twin.run_config
        assert run.key != twin.key


def test_encoding_is_set_by_the_sweep_and_checked_by_the_app(tmp_path, capsys):
    fixed = ENCODINGS.replace('public-fraction = 0.2\n', 'public-fraction = 0.2\nencoding = "instahide"\n')
    with pytest.raises(SweepError, match="encoding are set by the sweep"):
        load_sweep(_sweep_file(tmp_path, fixed))
    with pytest.raises(SweepError, match="encodings"):
        load_sweep(_sweep_file(tmp_path, ENCODINGS.replace('"instahide"]', '"instahyde"]')))
    # InstaHide with k = 4 > k-private = 2 needs a public pool: the app's own parser refuses it up front.
    no_pool = ENCODINGS.replace("public-fraction = 0.2\n", "")
    code = main([str(_sweep_file(tmp_path, no_pool)), "--out", str(tmp_path / "out"), "--dry-run"])
    assert code == 2 and "public-fraction" in capsys.readouterr().err


def test_default_variants_stay_out_of_run_keys_and_the_committed_results_are_the_shipped_sweep():
    """Only a non-default encoding or defence enters a run config, so naming the default
    explicitly never changes a run's key; the committed results are exactly the shipped sweep."""
    runs = expand_runs(load_sweep(DEFAULT_SWEEP))
    assert {r.encoding for r in runs if r.strategy == "one-shot-mixup"} == {"singularized"}
    assert all(r.encoding == "" for r in runs if r.strategy != "one-shot-mixup")
    assert not any("encoding" in r.run_config or "defence" in r.run_config for r in runs)
    committed = ROOT / "simulations" / "results" / "digits-default" / "runs.csv"
    assert {row["run_key"] for row in read_runs_csv(committed)} == {r.key for r in runs}

def test_shipped_instahide_sweep_pairs_the_encodings_on_the_same_partitions(tmp_path):
    spec = load_sweep(SWEEPS_DIR / "instahide-digits.toml")
    runs = expand_runs(spec)
    assert len(runs) == len(unique_runs(runs)) == 3 * 2 * 3  # seeds x beta x (fedprox + two encodings)
    assert {r.table for r in runs} == {"table4"} and {r.parties for r in runs} == {5}
    assert Counter(r.encoding for r in runs) == {"": 6, "singularized": 6, "instahide": 6}
    assert {r.run_config["public-fraction"] for r in runs} == {0.2}
    from simulations.sweep import validate_runs

    validate_runs(runs, summaries_dir=tmp_path)  # the app accepts every run config


def test_rows_carry_the_encoding_and_instahide_has_no_noise_columns(tmp_path):
    spec = load_sweep(_sweep_file(tmp_path, ENCODINGS))
    out = tmp_path / "out"
    outcome = run_sweep(spec, out_dir=out, executor=JournalingExecutor(tmp_path / "journal"), progress=False)
    assert not outcome.failed
    rows = read_runs_csv(out / "runs.csv")
    assert Counter(r["encoding"] for r in rows) == {"": 4, "singularized": 6, "instahide": 4}
    for row in rows:
        if row["encoding"] == "instahide":
            assert row["noise_mode"] == "" and row["tau"] is None and row["snr_pc1_mean"] is None
            assert (row["instahide_k"], row["instahide_k_private"]) == (4, 2)
            assert row["exposures_per_sample"] == 3  # as a private component, not as a clean one
            assert "-instahide-" in row["summary_path"]
        elif row["encoding"] == "singularized":
            assert row["noise_mode"] == "clamped" and row["tau"] == 1e-6 and row["snr_pc1_mean"] == 3.0
            assert row["instahide_k"] is None and row["exposures_per_sample"] == 1
        else:
            assert row["strategy"] == "fedprox" and row["instahide_k"] is None
        assert row["public_fraction"] == 0.2
    # The report of the sweep compares the encodings in table4.md; Table 5 holds no InstaHide run.
    report = main([str(tmp_path / "sweep.toml"), "--out", str(out), "--report-only"])
    assert report == 0 and (out / "table4.md").exists() and (out / "table4.csv").exists()
    assert "[table4.md](table4.md)" in (out / "report.md").read_text()


def test_summaries_of_the_previous_schema_are_read_by_the_one_adapter(tmp_path):
    """A summary as the ServerApp wrote it before the typed summary (selected_epoch /
    last_epoch_test_accuracy, no schema version, no generic exposure figure, and, older
    still, no encoding) reads as singularized mixup with the same figures."""
    from common.run_summary import read_summary

    spec = load_sweep(_sweep_file(tmp_path))
    run = next(r for r in expand_runs(spec) if r.release == "once")
    summary = fake_summary(run, run.run_config)
    result = summary["result"]
    summary["result"] = {"test_accuracy": result["test_accuracy"] / 100, "test_loss": 0.5,  # then a fraction
                         "selected_epoch": 4, "selected_val_loss": 0.7,
                         "last_epoch_test_accuracy": result["last_test_accuracy"] / 100, "train_seconds": 1.0,
                         "selected_by": result["selected_by"]}
    del summary["schema_version"], summary["privacy"]["exposures_per_sample"], summary["privacy"]["encoding"]
    del summary["config"]["encoding"], summary["config"]["public-fraction"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(summary))
    read = read_summary(path)
    assert read.schema_version == 3 and read.result.selected_at == 4
    assert read.result.test_accuracy == pytest.approx(result["test_accuracy"])  # back in percent
    assert read.result.last_test_accuracy == pytest.approx(result["last_test_accuracy"])
    row = row_from_summary(run, read, summary_path=path)
    assert row["encoding"] == "singularized" and row["public_fraction"] == 0.0 and row["tau"] == 1e-6
    assert row["exposures_per_sample"] == 1 and row["selected_at"] == 4


def test_schema_2_fractions_are_read_in_percent_and_a_newer_schema_is_refused(tmp_path):
    """Schema 2 stored every accuracy as a fraction; reading it gives percent everywhere the
    ServerApp now writes percent (result, history, each party alone, the federated test), and
    nothing else changes (losses, counts, the reidentification rate, which is not an accuracy)."""
    from common.run_summary import SCHEMA_VERSION, read_summary

    spec = load_sweep(_sweep_file(tmp_path))
    run = next(r for r in expand_runs(spec) if r.strategy == "fedprox")
    summary = fake_summary(run, run.run_config)
    summary.update(schema_version=2, strategy="local-only")
    summary["result"].update(test_accuracy=0.75, last_test_accuracy=0.5, test_loss=0.25)
    summary["history"] = [{"round": 1, "val_loss": 0.5, "val_accuracy": 0.25, "test_accuracy": 0.125}]
    summary["local_only"] = {"per_party_test_accuracy": {"0": 0.5, "1": 1.0}, "mean": 0.75, "worst": 0.5,
                             "epochs": 3}
    summary["data_source"] = {
        "kind": "node-local", "description": "node-local", "test": "the parties' own test parts",
        "parties": [{"partition-id": 0, "num-test": 8, "test-accuracy": 0.5, "test-loss": 0.75}],
        "federated_test": {"accuracy": 0.625, "loss": 0.75, "rows": 8, "per_party_accuracy": {"0": 0.5}}}
    path = tmp_path / "schema2.json"
    path.write_text(json.dumps(summary))
    read = read_summary(path)
    assert read.schema_version == SCHEMA_VERSION == 3 and read.accuracy_unit == "percent"
    assert (read.result.test_accuracy, read.result.last_test_accuracy, read.result.test_loss) == (75.0, 50.0, 0.25)
    assert read.history == [{"round": 1, "val_loss": 0.5, "val_accuracy": 25.0, "test_accuracy": 12.5}]
    assert read.local_only == {"per_party_test_accuracy": {"0": 50.0, "1": 100.0}, "mean": 75.0, "worst": 50.0,
                               "epochs": 3}
    assert read.data_source.parties == [{"partition-id": 0, "num-test": 8, "test-accuracy": 50.0, "test-loss": 0.75}]
    assert read.data_source.federated_test == {"accuracy": 62.5, "loss": 0.75, "rows": 8,
                                               "per_party_accuracy": {"0": 50.0}}
    assert row_from_summary(run, read, summary_path=path)["test_accuracy"] == 75.0
    # a summary of the current schema is read as written (no second conversion)
    current = tmp_path / "current.json"
    read.write(current)
    assert read_summary(current) == read
    summary["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="summary schema 4 is newer than this mixupfl reads"):
        read_summary(path)
