"""Benchmark of the image pipeline at CIFAR-10 scale (issue: real image data at GPU scale).

Every figure is printed as a ratio against a reference measured in the same run, on the
same device, so results from different machines are comparable only through the ratios:

1. feature extraction, end to end (uint8 images on the host -> cached float16 features on
   disk) in images/s, against the raw bf16 channels-last forward of the same backbone on
   images already on the device (goal >= 0.8);
2. Algorithm 1 on a ``rows x dim`` float32 matrix on the device (50,000 x 25,088 at full
   scale; goal < 0.2 s), against one device copy of the same matrix;
3. one-shot collaboration through ``flwr run`` with P parties, from the first query to the
   trained and tested model, against the same work done in one process by a plain loop
   (the same release function per party, the same central training);
4. FedProx seconds per round (marginal: start-up excluded) and one-shot seconds per warm
   collection through ``flwr run`` with P parties, against Flower's floor (the no-op app
   moving the same payloads) plus a plain loop doing the same client work on the same
   device: the measurement code of :mod:`benchmarks.flower_overhead` (goal <= 1.3x);
5. the ServerApp's peak memory growth while collecting and training, over the union's size.

Every ``flwr run`` goes through the sweeps' session (:mod:`simulations.runtime.session`: one
warm Ray cluster, the app staged), so the same figures mean the same thing on every machine.

The data are random images written in CIFAR-10's own pickle format (``loaders.format_writers``)
and read back by the real loader: no download, nothing carried to the machine. The backbone
has random weights unless ``--backbone-weights`` names a file: throughput does not depend on
the weights, accuracy does (and is therefore not a result of this benchmark).

    python -m benchmarks.gpu_pipeline                      # full scale, needs a CUDA GPU
    python -m benchmarks.gpu_pipeline --scale smoke --device cpu   # minutes on a laptop

Writes ``<out>/gpu_pipeline-<device>-<scale>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

SCALES = {
    # train, test, parties, mix rows, mix dim, image size, central epochs, fedprox rounds
    "full": dict(n_train=50_000, n_test=10_000, parties=100, mix_rows=50_000, mix_dim=25_088,
                 image_size=224, central_epochs=5, rounds=3, ref_batches=20),
    "smoke": dict(n_train=600, n_test=200, parties=4, mix_rows=2_000, mix_dim=2_048,
                  image_size=64, central_epochs=2, rounds=2, ref_batches=3),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _timed(fn, device: torch.device, repeats: int = 3) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_extraction(cfg, data, device: torch.device, *, ref_batches: int) -> dict:
    from features.extraction import forward_features
    from features.pipeline import load_backbone, split_features

    backbone, _ = load_backbone(cfg.backbone, cfg.backbone_weights, cfg.feature_pool, str(device))
    batch = torch.randn(cfg.extract_batch_size, 3, cfg.image_size, cfg.image_size, device=device)

    def raw_forward():
        with torch.inference_mode():
            for _ in range(ref_batches):
                forward_features(backbone, batch, device=device)

    seconds = _timed(raw_forward, device, repeats=2)
    raw_ips = ref_batches * batch.shape[0] / seconds
    start = time.perf_counter()
    cache = split_features(cfg, data, "train", device=device)
    e2e_seconds = time.perf_counter() - start
    if cache.hit:
        raise RuntimeError(f"feature cache {cache.path} already existed: the benchmark needs a fresh cache dir")
    e2e_ips = data.train_x.shape[0] / e2e_seconds
    split_features(cfg, data, "test", device=device)  # needed by the runs below
    return {
        "raw_forward_images_per_second": raw_ips,
        "end_to_end_images_per_second": e2e_ips,
        "end_to_end_seconds": e2e_seconds,
        "ratio_end_to_end_over_raw": e2e_ips / raw_ips,
        "goal": ">= 0.8",
        "what": "uint8 host images -> resize/normalise on device -> backbone -> float16 memory-mapped cache file, "
        "vs backbone forward alone on device-resident images of the same batch size",
    }


def bench_mixing(device: torch.device, *, rows: int, dim: int) -> dict:
    from common.mixup import singularized_mixup

    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(rows, dim, device=device, generator=gen)
    y = torch.randint(0, 10, (rows,), device=device, generator=gen)
    copy_seconds = _timed(lambda: x.clone(), device)
    mix_seconds = _timed(
        lambda: singularized_mixup(x, y, radius=1e3, alpha=0.7, generator=gen, num_classes=10), device
    )
    return {
        "rows": rows,
        "dim": dim,
        "seconds": mix_seconds,
        "copy_seconds": copy_seconds,
        "ratio_over_one_copy": mix_seconds / copy_seconds,
        "goal": "< 0.2 s at 50,000 x 25,088",
    }


def plain_one_shot(cfg, num_parties: int, device: torch.device, test_x, test_y) -> dict:
    """The one-shot protocol without Flower: every party's release, then central training."""
    from client.party import load_party
    from client.release import make_release, to_upload_dtype
    from common.model import MixupClassifier
    from common.run_summary import percent
    from common.training import evaluate, train_centralized

    load_party.cache_clear()
    start = time.perf_counter()
    xs, ys, vxs, vys = [], [], [], []
    for pid in range(num_parties):
        made = make_release(cfg, load_party(cfg, pid, num_parties), device=device)
        xs.append(to_upload_dtype(made.train.x, cfg.upload_dtype))
        ys.append(made.train.y.float())
        vxs.append(to_upload_dtype(made.val.x, cfg.upload_dtype))
        vys.append(made.val.y.float())
    x, y, vx, vy = (torch.cat(t).to(device) for t in (xs, ys, vxs, vys))
    del xs, ys, vxs, vys
    torch.manual_seed(cfg.seed)
    model = MixupClassifier(in_dim=int(x[0].numel()), num_classes=y.shape[1]).to(device)
    train_centralized(model, x, y, val_x=vx, val_y=vy, epochs=cfg.central_epochs,
                      generator=torch.Generator().manual_seed(cfg.seed), batch_size=cfg.batch_size,
                      lr=cfg.lr, weight_decay=cfg.weight_decay)
    _, acc = evaluate(model, test_x, test_y)
    _sync(device)
    return {"seconds": time.perf_counter() - start, "test_accuracy": percent(acc)}  # percent, as everywhere


def flwr_runs(cfg_values: dict, num_parties: int, workdir: Path, device: torch.device, *, rounds: int,
              epochs: int) -> dict:
    """Through ``flwr run`` in the sweeps' session: the one-shot run (release once, end to end,
    its memory figures), then floor / ours / plain for a FedProx round and a warm one-shot
    collection (:func:`benchmarks.flower_overhead.measure_point`)."""
    from benchmarks.flower_overhead import noop_session, _ours, measure_point
    from simulations.runtime.federation import gpu_share
    from simulations.runtime.local_flower import configure_simulation, ensure_flower_scripts, flower_env
    from simulations.runtime.session import LocalSimulation

    gpus = gpu_share(num_parties, os.cpu_count() or 1) if device.type == "cuda" else 0.0
    base = flower_env()
    ensure_flower_scripts(workdir / "bin", base)  # a bundle without bin/ (the GPU machine's)
    results = {"gpu_share_per_party": gpus}
    with LocalSimulation(warm_ray=True, base_env=base) as sim, noop_session(warm_ray=True, path=base["PATH"]) as noop_sim:
        for s in (sim, noop_sim):
            configure_simulation(num_supernodes=num_parties, num_cpus=1, num_gpus=gpus, env=s.env, quiet=True)
        run = _ours(sim, {**cfg_values, "strategy": "one-shot-mixup"}, num_parties, workdir / "one-shot", "bench-one-shot")
        results["one-shot-mixup"] = {"summary": run.summary, "client_seconds": run.e2e_seconds,
                                     "startup_seconds": run.startup_seconds}
        values = {k: v for k, v in cfg_values.items() if k not in ("output-dir", "run-name", "central-epochs")}
        results["overhead"] = measure_point(sim, noop_sim, values, num_parties, rounds=rounds, epochs=epochs, skip=1,
                                            collect_skip=min(2, epochs - 1), workdir=workdir, tag="overhead")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--parties", type=int, help="override the scale's number of parties")
    parser.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50"])
    parser.add_argument("--backbone-weights", default="none", help="'none' (random) or an absolute .pth path")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a fresh temporary one)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--skip-flwr", action="store_true", help="only the in-process parts (1 and 2)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible")
    scale = dict(SCALES[args.scale])
    if args.parties:
        scale["parties"] = args.parties
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mixupfl-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"[bench] {args.scale} scale on {_device_name(device)}; scratch {workdir}", flush=True)

    from common.config import parse_run_config
    from loaders import load_dataset
    from loaders.format_writers import write_cifar10

    data_dir = workdir / "data"
    shutil.rmtree(workdir / "cache", ignore_errors=True)
    start = time.perf_counter()
    write_cifar10(data_dir, n_train=scale["n_train"], n_test=scale["n_test"], seed=0)
    print(f"[bench] wrote {scale['n_train']}+{scale['n_test']} CIFAR-10-format images in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    cfg_values = {
        "dataset": "cifar10", "data-dir": str(data_dir), "backbone": args.backbone,
        "backbone-weights": args.backbone_weights, "feature-pool": "flatten", "image-size": scale["image_size"],
        "feature-cache-dir": str(workdir / "cache"), "central-epochs": scale["central_epochs"],
        "num-rounds": scale["rounds"], "device": args.device, "output-dir": str(workdir / "runs"),
        "upload-dtype": "float16", "round-timeout": 3000.0,
    }
    cfg = parse_run_config(cfg_values)
    data = load_dataset("cifar10", data_dir=str(data_dir))

    report: dict = {
        "device": _device_name(device),
        "scale": args.scale,
        "parameters": {**scale, "backbone": args.backbone, "backbone_weights": args.backbone_weights,
                       "upload_dtype": "float16", "noise_mode": cfg.noise_mode, "release_mode": "once"},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": "random pixels in CIFAR-10's pickle format, read by the real loader",
    }
    report["extraction"] = bench_extraction(cfg, data, device, ref_batches=scale["ref_batches"])
    print(f"[bench] extraction: {report['extraction']}", flush=True)
    report["algorithm1"] = bench_mixing(device, rows=scale["mix_rows"], dim=scale["mix_dim"])
    print(f"[bench] Algorithm 1: {report['algorithm1']}", flush=True)

    if not args.skip_flwr:
        from features.pipeline import split_inputs

        p = scale["parties"]
        test_x = split_inputs(cfg, data, "test", device=device).to(device)
        test_y = data.test_y.to(device)
        runs = flwr_runs(cfg_values, p, workdir, device, rounds=max(3, scale["rounds"]),
                         epochs=max(3, scale["central_epochs"]))
        one = runs["one-shot-mixup"]["summary"]
        plain = plain_one_shot(cfg, p, device, test_x, test_y)
        report["one_shot"] = {
            "parties": p,
            "flwr_server_wall_seconds": one["wall_seconds"],
            "flwr_run_seconds": runs["one-shot-mixup"]["client_seconds"],
            "startup_seconds": runs["one-shot-mixup"]["startup_seconds"],
            "collect_seconds": one["union"]["collect_seconds"],
            "train_seconds": one["result"]["train_seconds"],
            "central_epochs": scale["central_epochs"],
            "plain_loop_seconds": plain["seconds"],
            "ratio_flwr_over_plain": one["wall_seconds"] / plain["seconds"],
            "bytes_uploaded": one["communication"]["bytes_uploaded"],
        }
        report["memory"] = one["memory"]
        point = runs["overhead"]
        report["fedprox"] = {"parties": p, **{k: v for k, v in point["fedprox"].items() if k != "startup"},
                             "goal": "<= 1.3"}
        report["collection"] = {"parties": p, **{k: v for k, v in point["collection"].items()
                                                 if k not in ("startup", "all")}, "goal": "<= 1.3"}
        report["gpu_share_per_party"] = runs["gpu_share_per_party"]

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_pipeline-{args.device}-{args.scale}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"[bench] wrote {args.out / stem}.json and .md", flush=True)
    return 0


def markdown(report: dict) -> str:
    p = report["parameters"]
    lines = [
        f"# Image pipeline benchmark: {report['scale']} scale",
        "",
        f"Device: **{report['device']}**; torch {report['versions']['torch']}; {report['date_utc']}.",
        f"Data: {report['data']}: {p['n_train']:,} train + {p['n_test']:,} test, 32x32 resized to "
        f"{p['image_size']}; backbone {p['backbone']} (weights: {p['backbone_weights']}), flatten pooling; "
        f"uploads {p['upload_dtype']}; release {p['release_mode']}, noise mode {p['noise_mode']}.",
        "",
        "| measure | value | reference (same run) | ratio | goal |",
        "|---|---|---|---|---|",
    ]
    e = report["extraction"]
    lines.append(f"| feature extraction, end to end | {e['end_to_end_images_per_second']:,.0f} img/s | "
                 f"raw forward (bf16 on CUDA, fp32 on CPU) {e['raw_forward_images_per_second']:,.0f} img/s | "
                 f"{e['ratio_end_to_end_over_raw']:.2f} | {e['goal']} |")
    a = report["algorithm1"]
    lines.append(f"| Algorithm 1, {a['rows']:,} x {a['dim']:,} | {a['seconds']:.3f} s | one copy {a['copy_seconds']:.3f} s | "
                 f"{a['ratio_over_one_copy']:.1f} | {a['goal']} |")
    if "one_shot" in report:
        o = report["one_shot"]
        lines.append(f"| one-shot, P = {o['parties']}, query to tested model ({o['central_epochs']} epochs) | "
                     f"{o['flwr_server_wall_seconds']:.1f} s (collect {o['collect_seconds']:.1f} s, "
                     f"train {o['train_seconds']:.1f} s) | plain loop {o['plain_loop_seconds']:.1f} s | "
                     f"{o['ratio_flwr_over_plain']:.2f} | - |")
        for key, label in (("fedprox", "FedProx round"), ("collection", "one-shot collection (warm)")):
            f = report[key]
            lines.append(f"| {label}, P = {f['parties']} | {f['ours']:.3f} s | floor {f['floor']:.3f} s + plain "
                         f"{f['plain']:.3f} s | {f['ratio']:.2f} | {f['goal']} |")
        m = report["memory"]
        host = m.get("host_peak_growth_over_union")
        cuda = m.get("cuda_peak_growth_over_union")
        anon = m.get("peak_growth_until_collected_anon_over_union")
        lines.append(f"| server peak memory growth / union size ({m['union_bytes'] / 2**20:,.0f} MiB) | "
                     f"host {host if host is None else f'{host:.2f}x'} (collection, own memory: "
                     f"{'-' if anon is None else f'{anon:.2f}x'})"
                     f"{'' if cuda is None else f', GPU {cuda:.2f}x'} | union size | - | <= 1.25x in collection |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
