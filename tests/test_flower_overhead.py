"""What the per-round and start-up cuts of issue 18 rely on: parties, parsed config and model
built once per simulation worker; weights and releases read from the message buffers without
copies; the no-op app moving exactly the payload asked; the benchmark's arithmetic; the
session's staged app and its clean-up. No timing is asserted (figures live in the benchmark).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, RecordDict

from benchmarks.measure import NOOP_APP, marginal, model_spec, read_timeline
from client.party import PARTIES, PartyCache, load_party
from common.config import parse_run_config
from common.npy import npy_view
from server.union import UnionBuffer

sys.path.insert(0, str(NOOP_APP))
from flwr_noop.payload import (  # noqa: E402
    arrays_for, format_party_specs, format_spec, parse_party_specs, parse_spec, spec_bytes,
)


# -- built once per worker -----------------------------------------------------------------------
def test_every_party_is_built_once_per_worker_whatever_the_party_count():
    """P = 12 parties served in shuffled order for three rounds (the old cache held 8)."""
    load_party.cache_clear()
    cfg = parse_run_config({"strategy": "fedprox"})
    rng = np.random.default_rng(0)
    for _ in range(3):
        for pid in rng.permutation(12):
            load_party(cfg, int(pid), 12)
    assert PARTIES.builds == {(pid, 12): 1 for pid in range(12)}
    assert PARTIES.hits == 24
    other = parse_run_config({"strategy": "fedprox", "seed": 1})
    load_party(other, 0, 12)
    assert PARTIES.builds[(0, 12)] == 2  # another run config is another party
    load_party.cache_clear()
    assert len(PARTIES) == 0 and not PARTIES.builds


def test_party_cache_drops_least_recently_used_past_its_budget():
    cfg = parse_run_config({})
    cache = PartyCache(max_bytes=1)  # every party is over budget: only the last one is kept
    first = cache.get(cfg, 0, 4)
    assert cache.get(cfg, 0, 4) is first and len(cache) == 1
    cache.get(cfg, 1, 4)
    assert len(cache) == 1
    cache.get(cfg, 0, 4)
    assert cache.builds[(0, 4)] == 2 and cache.builds[(1, 4)] == 1


def test_a_party_is_the_same_whether_cached_or_built_again():
    cfg = parse_run_config({"partitioner": "dirichlet", "beta": 0.5})
    load_party.cache_clear()
    cached = load_party(cfg, 3, 7)
    fresh = PartyCache(max_bytes=2**40).get(cfg, 3, 7)
    assert torch.equal(cached.train_x, fresh.train_x) and torch.equal(cached.val_y, fresh.val_y)


def test_run_config_is_parsed_once_per_worker():
    from client.app import _parsed, run_config_of

    _parsed.cache_clear()
    values = {"strategy": "fedprox", "num-rounds": 7}
    contexts = [Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config=dict(values))
                for n in range(5)]
    configs = {id(run_config_of(c)) for c in contexts}
    assert len(configs) == 1 and _parsed.cache_info().misses == 1
    assert run_config_of(contexts[0]).num_rounds == 7


def _party(cfg):
    load_party.cache_clear()
    return load_party(cfg, 0, 4)


def test_one_model_per_worker_holds_exactly_the_received_weights():
    from client.app import _model
    from common.model import MixupClassifier

    cfg = parse_run_config({"strategy": "fedprox"})
    party = _party(cfg)
    torch.manual_seed(1)
    reference = MixupClassifier(in_dim=64, num_classes=10)
    reference.net[2].running_mean.uniform_()
    state = reference.state_dict()
    # Flower's weighted average turns the integer counter into float64: it must load as load_state_dict does.
    record = ArrayRecord({k: Array(v.numpy().astype(np.float64) if v.dtype == torch.int64 else v.numpy())
                          for k, v in state.items()})
    first = _model(cfg, party, record)
    second = _model(cfg, party, record)
    assert first is second
    loaded = first.state_dict()
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    fresh = _model(cfg, party, record, reuse=False)
    assert fresh is not first and all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


def test_loading_weights_refuses_a_record_that_does_not_fit():
    from client.app import load_arrays
    from common.model import MixupClassifier

    model = MixupClassifier(in_dim=64, num_classes=10)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    missing = ArrayRecord({k: Array(v) for k, v in list(state.items())[1:]})
    with pytest.raises(KeyError, match="missing"):
        load_arrays(model, missing)
    wrong = dict(state)
    first = next(iter(wrong))
    wrong[first] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        load_arrays(model, ArrayRecord({k: Array(v) for k, v in wrong.items()}))


# -- buffers read in place -----------------------------------------------------------------------------
@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros((0, 5), np.float16),
                                   np.array(2.5), np.arange(6, dtype=np.int64)], ids=["2d", "empty", "scalar", "int"])
def test_npy_view_is_the_array_without_a_copy(array):
    data = Array(array).data
    view = npy_view(data)
    assert view.dtype == array.dtype and view.shape == array.shape and np.array_equal(view, array)
    assert not view.flags.writeable
    if view.size:
        assert np.shares_memory(view, np.frombuffer(data, dtype=np.uint8))


def test_npy_view_refuses_what_it_cannot_view():
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.asfortranarray(np.ones((3, 2))))
    with pytest.raises(ValueError):
        npy_view(buffer.getvalue())
    with pytest.raises(ValueError):
        npy_view(Array(np.ones(10)).data[:-8])


def test_union_copies_read_only_views_once_without_warnings():
    union = UnionBuffer(expected_parties=2)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for pid in range(2):
            x = np.random.default_rng(pid).random((5, 3)).astype(np.float16)
            rows.append(x)
            union.add(pid, npy_view(Array(x).data), npy_view(Array(np.ones((5, 2), np.float32)).data))
    assert union.x.dtype == torch.float16 and np.array_equal(union.x.numpy(), np.concatenate(rows))


def test_collection_reads_releases_in_place():
    from server.collection import _view

    x = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    array = Array(x)
    view = _view(array)
    assert np.array_equal(view, x) and np.shares_memory(view, np.frombuffer(array.data, dtype=np.uint8))


# -- the no-op app ---------------------------------------------------------------------------------------
def test_noop_specs_round_trip_and_size():
    spec = {"w": ("float32", (64, 1024)), "n": ("int64", ())}
    assert parse_spec(format_spec(spec)) == spec
    parties = {0: {"x": ("float16", (120, 64)), "y": ("float32", (120, 10))}, 3: {"x": ("float16", (7, 64))}}
    assert parse_party_specs(format_party_specs(parties)) == parties
    assert spec_bytes(spec) == 64 * 1024 * 4 + 8
    arrays = arrays_for(format_spec(spec))
    assert arrays["w"].shape == (64, 1024) and arrays["n"].dtype == np.int64


def test_noop_clientapp_answers_with_exactly_the_payload_asked():
    from flwr.app import ConfigRecord, Message, MessageType
    from flwr.supercore.task_identity import TaskIdentity
    from flwr_noop import client_app

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    model = model_spec(in_dim=64, num_classes=10)
    down = ArrayRecord({k: Array(v) for k, v in arrays_for(format_spec(model)).items()})
    parties = {0: {"x": ("float32", (11, 64)), "y": ("float32", (11, 10))},
               1: {"x": ("float16", (5, 64)), "y": ("float32", (5, 10))}}
    run_config = {"up": format_party_specs(parties)}
    for pid, spec in parties.items():
        context = Context(run_id=1, node_id=pid + 1, node_config={"partition-id": pid}, state=RecordDict(),
                          run_config=run_config)
        for kind, content in ((MessageType.TRAIN, {"arrays": down, "config": ConfigRecord({"server-round": 1})}),
                              (MessageType.QUERY, {"config": ConfigRecord({"epoch": 1})})):
            msg = Message(RecordDict(content), dst_node_id=pid + 1, message_type=kind)
            msg.metadata.__dict__["_message_id"] = "m"
            msg.metadata.__dict__["_src_node_id"] = 0
            handler = client_app.train if kind == MessageType.TRAIN else client_app.query
            reply = handler(msg, context)
            record = reply.content["arrays" if kind == MessageType.TRAIN else "release"]
            want = model if kind == MessageType.TRAIN else spec
            assert {k: (str(v.dtype), tuple(v.shape)) for k, v in record.items()} == want
            assert record.count_bytes() >= spec_bytes(want)
            assert record.count_bytes() - spec_bytes(want) < 200 * len(want)  # .npy headers only


# -- the benchmark's arithmetic ------------------------------------------------------------------------
def test_marginal_cost_leaves_the_first_rounds_out():
    ends = [10.0, 11.0, 12.5, 14.0, 15.5]
    assert marginal(ends, skip=2) == pytest.approx(1.5)
    assert marginal(ends, skip=1) == pytest.approx(1.375)
    with pytest.raises(ValueError):
        marginal(ends, skip=5)


def test_timeline_line_is_read_from_a_run_log():
    log = "INFO: something\nINFO :      timeline " + json.dumps({"first_push": 5.5, "first_reply": None}) + "\n"
    assert read_timeline(log) == {"first_push": 5.5}
    assert read_timeline("no timeline here") == {}


def test_model_spec_lists_every_array_of_the_classifier():
    spec = model_spec(in_dim=512, num_classes=10)
    assert spec["net.1.weight"] == ("float32", (1024, 512))
    assert spec["net.2.num_batches_tracked"] == ("int64", ())


# -- start-up pieces ----------------------------------------------------------------------------------
def test_digits_loads_without_importing_scikit_learn():
    code = ("import sys; from loaders import load_dataset; d = load_dataset('digits'); "
            "print(d.train_x.shape[0] + d.test_x.shape[0], 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["1797", "False"]


def test_digits_read_directly_equal_scikit_learns():
    from sklearn.datasets import load_digits

    from loaders.registry import _digits_arrays

    pixels, labels = _digits_arrays()
    bunch = load_digits()
    assert np.array_equal(pixels, bunch.data) and np.array_equal(labels, bunch.target)


def test_simulation_grid_is_recognised_through_the_metering_wrapper():
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    from server.metered_grid import MeteredGrid, is_simulation
    from server.nodes import SIMULATION_SETTLE

    simulated = InMemoryGrid.__new__(InMemoryGrid)  # no state needed to know its type
    assert is_simulation(MeteredGrid(simulated)) and is_simulation(simulated)
    assert not is_simulation(MeteredGrid(object()))
    assert SIMULATION_SETTLE < 2.0


def test_staged_app_holds_only_the_runtime_packages_and_follows_edits(tmp_path):
    from simulations.runtime.session import stage_app

    app = tmp_path / "app"
    (app / "client").mkdir(parents=True)
    (app / "results").mkdir()
    (app / ".venv" / "lib").mkdir(parents=True)
    (app / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (app / "client" / "app.py").write_text("A = 1\n")
    (app / "client" / "notes.md").write_text("not code\n")
    (app / "results" / "big.json").write_text("{}")
    (app / ".venv" / "lib" / "site.py").write_text("")
    staged = stage_app(app, tmp_path / "staged", packages=("client",))
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert files == ["client/app.py", "pyproject.toml"]
    (app / "client" / "app.py").write_text("A = 22\n")
    (app / "client" / "extra.py").write_text("")
    stage_app(app, staged, packages=("client",))
    assert (staged / "client" / "app.py").read_text() == "A = 22\n" and (staged / "client" / "extra.py").exists()
    (app / "client" / "extra.py").unlink()
    stage_app(app, staged, packages=("client",))
    assert not (staged / "client" / "extra.py").exists()


def test_stale_sessions_of_dead_owners_are_removed_and_live_ones_kept(tmp_path):
    from simulations.runtime.session import SESSION_PREFIX, reap_stale_sessions

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale, live = tmp_path / f"{SESSION_PREFIX}stale", tmp_path / f"{SESSION_PREFIX}live"
    for folder, pid in ((stale, int(dead.stdout)), (live, os.getpid())):
        folder.mkdir()
        (folder / "owner.json").write_text(json.dumps({"pid": pid, "ray_pgid": None}))
    assert reap_stale_sessions(tmp_path) == [stale]
    assert not stale.exists() and live.exists()


def test_a_process_group_without_the_sessions_marker_is_never_signalled():
    from simulations.runtime.processes import stop_group

    assert stop_group(os.getpgid(0), marker="/no/such/session/marker") == 0


# -- through flwr run ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_noop_app_through_flwr_run_moves_exactly_what_it_is_asked(tmp_path):
    from benchmarks.flower_overhead import noop_session
    from benchmarks.measure import noop_run
    from simulations.runtime.local_flower import configure_simulation

    parties, rounds = 3, 2
    model = model_spec(in_dim=64, num_classes=10)
    up = {pid: {"x": ("float32", (10 + pid, 64)), "y": ("float32", (10 + pid, 10))} for pid in range(parties)}
    with noop_session(warm_ray=True) as sim:  # the benchmark's own session: one Ray cluster for both runs
        configure_simulation(num_supernodes=parties, env=sim.env, quiet=True)
        train = noop_run(sim, mode="train", parties=parties, rounds=rounds, down=format_spec(model),
                         out=tmp_path / "train.json", log_path=tmp_path / "train.log")
        query = noop_run(sim, mode="query", parties=parties, rounds=rounds, up=format_party_specs(up),
                         out=tmp_path / "query.json", log_path=tmp_path / "query.log")
    per_message = spec_bytes(model)
    t = train.noop
    assert t["messages_down"] == t["messages_up"] == parties * rounds and not t["errors"]
    assert t["down_asked_per_message"] == per_message
    assert per_message * parties * rounds <= t["bytes_down"] == t["bytes_up"] < 1.01 * per_message * parties * rounds
    assert len(t["round_ends"]) == rounds
    q = query.noop
    assert {int(k): v for k, v in q["up_asked"].items()} == {pid: spec_bytes(s) for pid, s in up.items()}
    for pid, got in q["up_received"].items():
        assert spec_bytes(up[int(pid)]) <= got < spec_bytes(up[int(pid)]) + 512
    assert q["messages_up"] == parties * rounds


@pytest.mark.slow
def test_sweep_session_runs_on_a_warm_cluster_and_leaves_nothing_running(tmp_path):
    """Two runs in one session share one Ray cluster (its address in the SuperLink's
    environment); closing the session stops its SuperLink and every Ray process."""
    from simulations.runtime.executor import FlowerExecutor
    from simulations.runtime.local_flower import flower_env, local_superlink_pids
    from simulations.runtime.processes import pids_in_group
    from simulations.sweep.plan import SweepRun

    executor = FlowerExecutor(env=flower_env(), timeout=600)
    try:
        executor.prepare(3)
        session = executor.session
        assert session is not None and session.ray_address and session.env["RAY_ADDRESS"] == session.ray_address
        pgid = session.ray.pgid
        home = session.home
        for name in ("a", "b"):
            run = SweepRun.__new__(SweepRun)
            object.__setattr__(run, "parties", 3)
            code = executor.execute(run, run_config={"strategy": "one-shot-mixup", "central-epochs": 2,
                                                     "output-dir": str(tmp_path), "run-name": name},
                                    log_path=tmp_path / f"{name}.log", note=lambda _: None)
            assert code == 0 and (tmp_path / f"{name}.json").exists(), (tmp_path / f"{name}.log").read_text()[-2000:]
        superlink = local_superlink_pids(home)
        assert superlink
        environ = Path(f"/proc/{superlink[0]}/environ").read_bytes().split(b"\0")
        assert f"RAY_ADDRESS={session.ray_address}".encode() in environ
    finally:
        executor.close()
    assert local_superlink_pids(home) == [] and pids_in_group(pgid) == []
    assert not home.exists()


def test_a_cluster_named_in_the_environment_is_used_and_never_stopped():
    from simulations.runtime.local_flower import flower_env
    from simulations.runtime.session import LocalSimulation

    base = {**flower_env(), "RAY_ADDRESS": "10.0.0.7:6379"}
    sim = LocalSimulation(base_env=base).start()
    try:
        assert sim.ray is None and sim.ray_address == "10.0.0.7:6379" and sim.env["RAY_ADDRESS"] == "10.0.0.7:6379"
        assert sim.env["FLWR_HOME"] == str(sim.home) and (sim.app / "pyproject.toml").exists()
        assert not (sim.app / "tests").exists() and (sim.app / "client" / "app.py").exists()
    finally:
        root = sim.root
        sim.close()
    assert not root.exists()


def test_processes_naming_the_session_folder_are_stopped_and_no_others(tmp_path):
    import subprocess
    import sys

    from simulations.runtime.processes import processes_naming, stop_processes_naming

    folder = str(tmp_path / "mixupfl-sim-test")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    named = subprocess.Popen(sleeper, env={"FLWR_HOME": folder + "/flwr"})
    other = subprocess.Popen(sleeper, env={"FLWR_HOME": str(tmp_path / "someone-else")})
    try:
        import time

        time.sleep(0.2)
        assert processes_naming(folder) == [named.pid]
        assert stop_processes_naming(folder, grace=5) == 0
        assert named.wait(timeout=5) != 0 and other.poll() is None
    finally:
        for proc in (named, other):
            proc.kill()
            proc.wait()
