"""What the Flower path costs beyond the work itself, measured in one run (issue 18).

For each workload (digits; a synthetic 512-dim feature set: CIFAR-10-format generated images
through a random-weight ResNet-18 with average pooling, so the appendix-E classifier has
512 inputs) and each party count P, four things are timed back to back:

* **floor**: Flower's own cost, a no-op ServerApp/ClientApp pair (:mod:`benchmarks.noop_app`)
  moving exactly the platform's payloads (the classifier's arrays both ways per FedProx
  round; each party's release, same shapes and dtype, per one-shot collection);
* **ours**: the platform through ``flwr run`` (FedProx rounds; one-shot collections with
  ``release = "per-epoch"``, so that collections after the first are warm);
* **plain**: a plain in-process loop doing the same client work with the same functions
  (:func:`benchmarks.measure.plain_fedprox`, :func:`benchmarks.measure.plain_collect`).

Per-round figures are marginal (rounds after the first ``skip`` ones), so start-up does not
enter them; the ratio ``ours / (floor + plain)`` says what the platform adds. Then the
start-up of a default digits run (the sweep's settings, P = 10): ``flwr run .`` as a user
types it (a fresh Ray cluster per run, the app folder walked) against the sweep's session
(:class:`simulations.runtime.session.LocalSimulation`: staged app, one warm Ray cluster),
with the pieces measured alone (CLI import, FAB build, Ray start, ClientApp import); and the
ServerApp's peak memory while collecting a one-shot union of more than 100 MB (float32 and
float16 uploads). Every figure comes from this run on this machine; compare ratios, not
seconds, across machines.

    python -m benchmarks.flower_overhead            # full: P = 10, 50, 100, both workloads
    python -m benchmarks.flower_overhead --quick    # P = 10, digits only, fewer rounds

Writes ``benchmarks/results/flower_overhead-<device>.md`` and ``.json`` (``--quick`` adds
``-quick`` to the name).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks.measure import (
    NOOP_APP, marginal, mean_after, model_spec, noop_run, plain_collect, plain_fedprox, timed_flwr_run,
)
from benchmarks.overhead_report import machine, markdown, ratio

RESULTS = Path(__file__).resolve().parent / "results"

# Sweep defaults of simulations/sweeps/digits-default.toml: the "default digits run".
DEFAULT_RUN = {"dataset": "digits", "tau": 1e-6, "noise-mode": "clamped", "central-epochs": 30, "num-rounds": 30,
               "proximal-mu": 1e-3, "selection": "last"}


def noop_session(warm_ray: bool, path: str | None = None):  # noqa: ANN202
    """A session of the no-op app (``path``: the ``PATH`` the flwr commands need)."""
    from simulations.runtime.local_flower import flower_env
    from simulations.runtime.session import LocalSimulation

    if str(NOOP_APP) not in sys.path:
        sys.path.insert(0, str(NOOP_APP))  # the payload specs (flwr_noop.payload) are shared with the app
    base = flower_env(app_dir=NOOP_APP)
    if path:
        base["PATH"] = path
    return LocalSimulation(app_dir=NOOP_APP, warm_ray=warm_ray, base_env=base)


def workload_config(name: str, workdir: Path, *, device: str) -> dict[str, Any]:
    """Run-config values of a workload (the data written/extracted here if needed)."""
    base = {"selection": "last", "seed": 0, "device": device, "upload-dtype": "float32"}
    if name == "digits":
        return {**base, "dataset": "digits"}
    if name != "synthetic-512":
        raise ValueError(name)
    from common.config import parse_run_config
    from features.pipeline import load_run_data, split_features
    from loaders.format_writers import write_cifar10

    data_dir = workdir / "synthetic-512"
    values = {**base, "dataset": "cifar10", "data-dir": str(data_dir), "backbone": "resnet18",
              "backbone-weights": "none", "feature-pool": "avg", "image-size": 32, "radius-sample": 64,
              "feature-cache-dir": str(workdir / "feature-cache")}
    if not (data_dir / "cifar-10-batches-py").exists():
        write_cifar10(data_dir, n_train=10_000, n_test=2_000, seed=0, pixels="class-patterns")
    cfg = parse_run_config(values)
    data = load_run_data(cfg)
    for split in ("train", "test"):  # extracted once; every run reads the cache
        split_features(cfg, data, split, device=torch.device(device))
    return values


def _test_split(cfg):  # noqa: ANN001, ANN202
    from features.pipeline import load_run_data, split_inputs

    data = load_run_data(cfg)
    device = torch.device(cfg.device if cfg.device != "auto" else "cpu")
    return split_inputs(cfg, data, "test", device=device).to(device), data.test_y.to(device), data


def measure_point(sim, noop_sim, values: dict, parties: int, *, rounds: int, epochs: int, skip: int,  # noqa: ANN001
                  collect_skip: int, workdir: Path, tag: str) -> dict[str, Any]:
    """Floor, ours and plain for one workload and party count (FedProx round, one-shot collection)."""
    from client.party import load_party
    from common.config import parse_run_config
    from flwr_noop.payload import format_party_specs, format_spec

    device = torch.device(values["device"])
    fed_values = {**values, "strategy": "fedprox", "num-rounds": rounds}
    cfg = parse_run_config(fed_values)
    test_x, test_y, data = _test_split(cfg)
    in_dim = int(test_x[0].numel())
    spec = model_spec(in_dim=in_dim, num_classes=data.num_classes, norm=cfg.model_norm)
    point: dict[str, Any] = {"parties": parties, "rounds": rounds, "epochs": epochs, "skip": skip,
                             "collect_skip": collect_skip, "in_dim": in_dim,
                             "model_bytes": sum(torch.empty(s, dtype=getattr(torch, d)).nbytes for d, s in spec.values())}
    out = workdir / tag
    # FedProx: floor, ours, plain.
    floor = noop_run(noop_sim, mode="train", parties=parties, rounds=rounds, down=format_spec(spec),
                     out=out / "floor-train.json", log_path=out / "floor-train.log")
    ours = _ours(sim, fed_values, parties, out, "fedprox")
    load_party.cache_clear()
    plain = plain_fedprox(cfg, parties, rounds=rounds, device=device, test_x=test_x, test_y=test_y)
    if not all("train_loss" in h for h in ours.summary["history"]):  # a round without replies would look fast
        raise RuntimeError(f"FedProx run had rounds without replies; log {out / 'fedprox.log'}")
    ours_ends = [h["end_seconds"] for h in ours.summary["history"]]
    floor_ends = [t - floor.noop["first_push"] for t in floor.noop["round_ends"]]
    point["fedprox"] = {
        "floor": marginal(floor_ends, skip=skip), "ours": marginal(ours_ends, skip=skip),
        "plain": marginal(plain["round_ends"], skip=skip), "plain_torch_threads": plain["torch_threads"],
        "floor_bytes_per_message": floor.noop["down_asked_per_message"],
        "ours_bytes_per_round": (ours.summary["communication"]["bytes_uploaded"]
                                 + ours.summary["communication"]["bytes_downloaded"]) / rounds,
        "floor_bytes_per_round": (floor.noop["bytes_up"] + floor.noop["bytes_down"]) / rounds,
        "first_round": {"floor": floor_ends[0], "ours": ours_ends[0], "plain": plain["round_ends"][0]},
        "startup": {"floor": floor.phases(), "ours": ours.phases()},
    }
    point["fedprox"]["ratio"] = ratio(point["fedprox"])
    # One-shot collections: plain first (its release shapes are the floor's payload), floor, ours.
    one_values = {**values, "strategy": "one-shot-mixup", "release": "per-epoch", "central-epochs": epochs}
    one_cfg = parse_run_config(one_values)
    load_party.cache_clear()
    plain_one = plain_collect(one_cfg, parties, epochs=epochs, device=device)
    up = format_party_specs(plain_one["shapes"])
    floor_one = noop_run(noop_sim, mode="query", parties=parties, rounds=epochs, up=up,
                         out=out / "floor-query.json", log_path=out / "floor-query.log")
    ours_one = _ours(sim, one_values, parties, out, "one-shot")
    for run in (floor, floor_one):
        if run.noop["errors"] or run.noop["messages_up"] != run.noop["messages_down"]:
            raise RuntimeError(f"no-op run lost replies: {run.noop['errors'][:3]}")
    if ours_one.summary["failures"] or ours_one.summary["rejections"]:
        raise RuntimeError(f"one-shot run had failures; log {out / 'one-shot.log'}")
    floor_q = [t - floor_one.noop["first_push"] for t in floor_one.noop["round_ends"]]
    floor_q = [floor_q[0]] + [b - a for a, b in zip(floor_q, floor_q[1:])]
    ours_q = [ours_one.summary["union"]["collect_seconds"]] + [e["collect_seconds"]
                                                              for e in ours_one.summary["later_epochs"]]
    point["collection"] = {
        "floor": mean_after(floor_q, collect_skip), "ours": mean_after(ours_q, collect_skip),
        "plain": mean_after(plain_one["collect_seconds"], collect_skip),
        "all": {"floor": floor_q, "ours": ours_q, "plain": plain_one["collect_seconds"]},
        "first": {"floor": floor_q[0], "ours": ours_q[0], "plain": plain_one["collect_seconds"][0]},
        "union_bytes": plain_one["union_bytes"],
        "floor_bytes_up": floor_one.noop["bytes_up"] / epochs,
        "ours_bytes_up": ours_one.summary["communication"]["bytes_uploaded"] / epochs,
        "startup": {"floor": floor_one.phases(), "ours": ours_one.phases()},
    }
    point["collection"]["ratio"] = ratio(point["collection"])
    return point


def _ours(sim, values: dict, parties: int, out: Path, name: str):  # noqa: ANN001, ANN202
    run_values = {**values, "output-dir": str(out / "runs"), "run-name": name}
    return timed_flwr_run(sim.run_command(run_values, num_supernodes=parties), env=sim.env, cwd=sim.app,
                          log_path=out / f"{name}.log", summary_path=out / "runs" / f"{name}.json")


def startup_pieces(sim) -> dict[str, Any]:  # noqa: ANN001
    """Each start-up ingredient alone (a fresh process each, so imports are cold-cache-free)."""
    from flwr.cli.build import build_fab_from_disk

    from simulations.runtime.local_flower import PROJECT_ROOT, _flwr

    def wall(cmd: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(cmd, env=sim.env, cwd=PROJECT_ROOT, capture_output=True, check=True)
        return time.perf_counter() - start

    def fab(path: Path) -> dict[str, float]:
        start = time.perf_counter()
        size = len(build_fab_from_disk(path))
        return {"seconds": time.perf_counter() - start, "bytes": size}

    python = sys.executable
    return {
        "python_start": wall([python, "-c", "pass"]),
        "flwr_cli_help": wall([_flwr(sim.env), "--help"]),
        "import_client_app": wall([python, "-c", "import client.app"]),
        "import_server_app": wall([python, "-c", "import server.app"]),
        "import_flwr_simulation": wall([python, "-c", "import flwr.simulation.app, ray"]),
        "fab_project_root": fab(PROJECT_ROOT),
        "fab_staged": fab(sim.app),
        "ray_head_start": sim.ray.start_seconds if sim.ray is not None else None,
    }


def default_run_startup(workdir: Path, *, repeats: int) -> dict[str, Any]:
    """A default digits run (sweep settings, P = 10, FedProx and one-shot) as ``flwr run .``
    starts it (fresh Ray, the project folder as the app) and in the sweep's session (staged
    app, warm Ray); ``repeats`` runs of each, alternating."""
    from simulations.runtime.local_flower import PROJECT_ROOT, configure_simulation, flwr_run_command
    from simulations.runtime.session import LocalSimulation

    out: dict[str, Any] = {"cold": [], "warm": [], "pieces": None}
    with LocalSimulation(warm_ray=False) as cold, LocalSimulation(warm_ray=True) as warm:
        for sim in (cold, warm):
            configure_simulation(num_supernodes=10, env=sim.env, quiet=True)
        out["pieces"] = startup_pieces(warm)
        for rep in range(repeats):
            for strategy in ("fedprox", "one-shot-mixup"):
                for kind, sim in (("cold", cold), ("warm", warm)):
                    name = f"default-{kind}-{strategy}-{rep}"
                    values = {**DEFAULT_RUN, "strategy": strategy, "output-dir": str(workdir / "default"),
                              "run-name": name}
                    if kind == "cold":  # what a user's `flwr run .` does: the project folder is the app
                        cmd = flwr_run_command(values, num_supernodes=10, app_dir=PROJECT_ROOT, env=sim.env)
                    else:
                        cmd = sim.run_command(values, num_supernodes=10)
                    run = timed_flwr_run(cmd, env=sim.env, cwd=PROJECT_ROOT, log_path=workdir / "default" / f"{name}.log",
                                         summary_path=workdir / "default" / f"{name}.json")
                    out[kind].append({"strategy": strategy, "phases": run.phases(), "e2e": run.e2e_seconds,
                                      "startup": run.startup_seconds, "share": run.startup_seconds / run.e2e_seconds})
                    print(f"[bench] default {strategy} {kind}: e2e {run.e2e_seconds:.1f} s, start-up "
                          f"{run.startup_seconds:.1f} s", flush=True)
    return out


def memory_runs(sim, workdir: Path, *, n_train: int, parties: int) -> dict[str, Any]:  # noqa: ANN001
    """The ServerApp's peak memory growth while collecting a one-shot union of raw
    CIFAR-10-format images (3,072 values a row), float32 and float16 uploads."""
    from loaders.format_writers import write_cifar10

    data_dir = workdir / "memory-data"
    if not (data_dir / "cifar-10-batches-py").exists():
        write_cifar10(data_dir, n_train=n_train, n_test=500, seed=0, pixels="random")
    out = {}
    for dtype in ("float32", "float16"):
        values = {"strategy": "one-shot-mixup", "dataset": "cifar10", "data-dir": str(data_dir), "central-epochs": 1,
                  "upload-dtype": dtype, "device": "cpu", "output-dir": str(workdir / "memory"),
                  "run-name": f"memory-{dtype}"}
        run = _ours(sim, values, parties, workdir / "memory", f"memory-{dtype}")
        out[dtype] = {"memory": run.summary["memory"], "union": run.summary["union"], "parties": parties}
        print(f"[bench] memory {dtype}: {json.dumps(run.summary['memory'])}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="P = 10, digits only, fewer rounds (a first look)")
    parser.add_argument("--parties", type=int, nargs="+", help="override the party counts")
    parser.add_argument("--workloads", nargs="+", choices=["digits", "synthetic-512"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip", nargs="+", default=[], choices=["overhead", "startup", "memory"])
    parser.add_argument("--party-cpus", type=int, default=1,
                        help="CPUs Flower reserves for each simulated party in the per-round figures (default 1: "
                             "as many party actors as cores; 2 is Flower's own default: one actor on two cores)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a fresh temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quick = args.quick
    parties = args.parties or ([10] if quick else [10, 50, 100])
    workloads = args.workloads or (["digits"] if quick else ["digits", "synthetic-512"])
    # FedProx: rounds after the first `skip`; one-shot: collections after the first `collect_skip`
    # (each worker calibrates a party the first time it serves it: the first few are not warm).
    rounds, skip, epochs, collect_skip = (4, 1, 5, 2) if quick else (6, 2, 8, 4)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mixupfl-overhead-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(args.device), "quick": quick, "workdir": str(workdir),
                              "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "settings": {"parties": parties, "workloads": workloads, "rounds": rounds,
                                           "party_cpus": args.party_cpus,
                                           "epochs": epochs, "skip": skip, "collect_skip": collect_skip},
                              "points": {}}
    print(f"[bench] {report['machine']['cpu']}; scratch {workdir}", flush=True)
    started = time.perf_counter()
    from simulations.runtime.federation import gpu_share
    from simulations.runtime.local_flower import configure_simulation
    from simulations.runtime.session import LocalSimulation

    if "overhead" not in args.skip:
        with LocalSimulation(warm_ray=True) as sim, noop_session(warm_ray=True) as noop_sim:
            for name in workloads:
                values = workload_config(name, workdir, device=args.device)
                for p in parties:
                    gpus = gpu_share(p, os.cpu_count() or 1) if args.device == "cuda" else 0.0
                    for s in (sim, noop_sim):
                        configure_simulation(num_supernodes=p, num_cpus=args.party_cpus, num_gpus=gpus, env=s.env,
                                             quiet=True)
                    point = measure_point(sim, noop_sim, values, p, rounds=rounds, epochs=epochs, skip=skip,
                                          collect_skip=collect_skip, workdir=workdir, tag=f"{name}-P{p}")
                    report["points"][f"{name} P={p}"] = point
                    print(f"[bench] {name} P={p}: FedProx round ratio {point['fedprox']['ratio']:.2f} "
                          f"({json.dumps({k: round(v, 3) for k, v in point['fedprox'].items() if isinstance(v, float)})}); "
                          f"collection ratio {point['collection']['ratio']:.2f}", flush=True)
                    _write(report, args, quick)
    if "startup" not in args.skip:
        report["startup"] = default_run_startup(workdir, repeats=1 if quick else 2)
        _write(report, args, quick)
    if "memory" not in args.skip:
        with LocalSimulation(warm_ray=True) as sim:
            configure_simulation(num_supernodes=10, env=sim.env, quiet=True)
            report["memory"] = memory_runs(sim, workdir, n_train=4_000 if quick else 20_000, parties=10)
    report["machine_after"] = {"load_average": list(os.getloadavg())}
    report["seconds"] = time.perf_counter() - started
    path = _write(report, args, quick)
    print(markdown(report))
    print(f"[bench] wrote {path} and .json in {report['seconds'] / 60:.1f} min", flush=True)
    return 0


def _write(report: dict, args: argparse.Namespace, quick: bool) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"flower_overhead-{args.device}{'-quick' if quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    stem.with_suffix(".md").write_text(markdown(report))
    return stem.with_suffix(".md")


if __name__ == "__main__":
    sys.exit(main())
