"""The ServerApp: ``strategy`` in the run config picks the protocol.

* ``one-shot-mixup``: one ``query`` to every party, the union of the releases assembled as
  replies arrive, central training with epoch selection on the parties' held-out releases,
  one evaluation on the global test set. With ``release = "per-epoch"`` one more query per
  central epoch brings fresh mixtures (rounds = central epochs; exposures are counted).
* ``fedprox`` / ``fedavg``: Flower's strategies, central test evaluation every round, the
  round selected on the parties' validation loss.

Each run writes ``<output-dir>/<run-name>.json`` and logs a short table.
"""

from __future__ import annotations

import logging
import platform
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import flwr
import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config import ConfigError, RunConfig, parse_run_config
from features.pipeline import describe_inputs, resolve_device, split_inputs
from loaders import load_dataset
from server.federated import run_federated
from server.memory import MemoryProbe
from server.metered_grid import MeteredGrid
from server.one_shot import Collected, collect_releases, train_on_union
from server.validation import UploadCheck
from server.summary import mean_max, table_lines, write_json_atomic

log = logging.getLogger("flwr.mixupfl.server")  # child of flwr: shown in run logs

app = ServerApp()


def _wait_for_nodes(grid: Grid, *, expected: int, quorum: int, timeout: float, settle: float = 2.0) -> list[int]:
    """Node ids to run with.

    ``expected = 0`` (simulation): once at least ``quorum`` nodes are connected and the count
    has not changed for ``settle`` seconds (simulated nodes all register at start).
    ``expected > 0`` (deployment): as soon as ``expected`` nodes are connected; after
    ``timeout`` seconds, with those connected if they reach ``quorum``, else the run fails.
    """
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) != last:
            last, stable_since = len(ids), time.monotonic()
            if expected:
                log.info("%d of %d expected parties connected", len(ids), expected)
        if expected and len(ids) >= expected:
            return ids
        if not expected and len(ids) >= quorum and time.monotonic() - stable_since >= settle:
            return ids
        if time.monotonic() > deadline:
            if len(ids) >= quorum:
                log.warning("%d of %d expected parties connected after %.0f s: proceeding under quorum = %d",
                            len(ids), expected, timeout, quorum)
                return ids
            raise RuntimeError(f"only {len(ids)} node(s) connected after {timeout:.0f} s; quorum is {quorum}")
        time.sleep(0.2)


def _run_name(cfg: RunConfig, num_parties: int) -> str:
    if cfg.run_name:
        return cfg.run_name.removesuffix(".json")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{cfg.strategy}-{cfg.dataset}-P{num_parties}-{cfg.partitioner}-b{cfg.beta:g}-seed{cfg.seed}-{stamp}"


def _mixing_randomness(cfg: RunConfig) -> str:
    return "operating-system CSPRNG (os.urandom)" if cfg.secure_rng else f"seeded from seed = {cfg.seed}"


def _privacy_summary(cfg: RunConfig, parties: list[dict], releases: Counter) -> dict:
    """What each party's releases exposed, aggregated over parties (mean / max / min / std)."""
    if cfg.encoding == "instahide":
        return _instahide_privacy_summary(cfg, parties, releases)
    return {
        "encoding": "singularized",
        "release_mode": cfg.release,
        "releases_per_party": mean_max(releases.values()),
        "exposures_per_private_sample": {
            "as_clean_component": mean_max(releases.values()),
            "as_noisy_partner": mean_max(releases.values()),
            "validation_sample": 1,
            "note": "Algorithm 1 pairs by a derangement: every release of a party makes each of its "
            "private training samples the clean (un-noised) component of exactly one released row and the "
            "noisy partner of exactly one other; per-epoch releases the same samples once per epoch; the "
            "validation part is released once",
        },
        "noise_mode": cfg.noise_mode,
        "mf_formula": cfg.mf_formula,
        "radius_space": "feature space, mapped from image space (mean ||f(x+e) - f(x)||)"
        if cfg.uses_backbone else "input space",
        "image_radius": mean_max(m["image-radius"] for m in parties),
        "mixing_randomness": _mixing_randomness(cfg),
        "tau": cfg.tau,
        "alpha": cfg.alpha,
        "noise_multiplier": mean_max(m["noise-multiplier"] for m in parties),
        "radius": mean_max(m["radius"] for m in parties),
        "snr_pc1": mean_max(m["snr-pc1"] for m in parties),
        "snr_bound_pc1": mean_max(m["snr-bound-pc1"] for m in parties),
        "snr_random": mean_max(m["snr-random"] for m in parties),
        "snr_bound_random": mean_max(m["snr-bound-random"] for m in parties),
        "reidentification_rate": mean_max(m["reid-rate"] for m in parties),
        "reidentification_note": "share of each party's released rows whose nearest private row "
        "(Euclidean, in the space it was mixed in) is one of the row's two sources; chance is about 2/n; "
        "measured by the party on its own data",
        "theorem1_mse_min": mean_max(m["theorem1-mse-min"] for m in parties),
        "theorem1_relative_min": mean_max(m["theorem1-relative-min"] for m in parties),
        "theorem1_relative_median": mean_max(m["theorem1-relative-median"] for m in parties),
        "theorem1_note": "Theorem 1: minimax lower bound r^2 T_i on E||x_i - x_hat_i||^2 against any "
        "estimator knowing the mixing weights, per sample; 'relative' divides by the party's mean "
        "squared row norm; holds for strict noise only (noise mode above)",
        "snr_note": "measured on each party's own release, in the space it was mixed in: energy of "
        "w1 (x - mean) over that of the noisy partner term, along the party's first principal direction "
        "and random directions; Theorem 2's bound holds for strict noise in the space it was calibrated in",
        "upload_dtype": cfg.upload_dtype,
    }


def _instahide_privacy_summary(cfg: RunConfig, parties: list[dict], releases: Counter) -> dict:
    """The InstaHide comparator's exposure figures: no noise, so no radius, SNR or Theorem 1."""
    per_release = cfg.instahide_k_private
    return {
        "encoding": "instahide",
        "release_mode": cfg.release,
        "k": cfg.instahide_k,
        "k_private": cfg.instahide_k_private,
        "public_fraction": cfg.public_fraction,
        "public_pool_size": mean_max(m["public-pool-size"] for m in parties),
        "noise_mode": "none",
        "tau": None,
        "releases_per_party": mean_max(releases.values()),
        "exposures_per_private_sample": {
            "as_private_component": mean_max(per_release * r for r in releases.values()),
            "validation_sample": per_release,
            "note": f"every InstaHide release puts each private training sample into exactly k_private = "
            f"{per_release} encoded rows (once as the row's own sample, once per further private slot); "
            "this repeated component is what Carlini et al. (2021) cluster on",
        },
        "mixing_randomness": _mixing_randomness(cfg),
        "reidentification_rate": mean_max(m["reid-rate"] for m in parties),
        "reidentification_note": "share of each party's released rows whose absolute values |x~| are nearest to "
        "|x| of one of the row's k_private private sources; chance is about k_private/n; measured by the party",
        "upload_dtype": cfg.upload_dtype,
    }

WEIGHTS_SUFFIX = ".weights.pt"


def _defence_summary(cfg: RunConfig, history: list[dict]) -> dict:
    """What the parties' client-side defence was and, for DP-Mix, the privacy it bought."""
    if cfg.defence == "none":
        return {"defence": "none", "model_norm": cfg.model_norm}
    if cfg.defence == "fed-augmix":
        shares = [r["js_large_weight_share"] for r in history if "js_large_weight_share" in r]
        return {
            "defence": "fed-augmix",
            "model_norm": cfg.model_norm,
            "augmix": {"severity": cfg.augmix_severity, "width": cfg.augmix_width, "depth": cfg.augmix_depth,
                       "alpha": cfg.augmix_alpha},
            "js_weight": cfg.js_weight,
            "loss_scaling": (
                {"large_weight": cfg.js_large_weight, "scale": cfg.js_scale,
                 "rule": "lambda = js-large-weight while L_c > js-scale * D_JS, else js-weight"}
                if cfg.loss_scaling else None
            ),
            "large_weight_share_per_round": shares,
            "formal_guarantee": "none: augmentation noise is not a differential-privacy mechanism",
        }
    last = next((r for r in reversed(history) if "dp_epsilon_max" in r), {})
    return {
        "defence": cfg.defence,
        "model_norm": cfg.model_norm,
        "dp_sgd": {
            "noise_multiplier": cfg.dp_noise_multiplier,
            "max_grad_norm": cfg.dp_max_grad_norm,
            "expected_batch_size": cfg.batch_size,
            "sampling": "Poisson, rate batch-size / party size",
            "per_sample_gradient": f"mean over {cfg.dpmix_augmentations} self-augmentations and "
            f"{cfg.dpmix_mixups} mixups of the sample alone" + (
                " or with diffusion samples" if cfg.defence == "dp-mix-diff" else ""),
            "noise_source": "operating-system CSPRNG (Opacus secure mode)" if cfg.secure_rng
            else f"seeded from seed = {cfg.seed} (simulation only: the guarantee assumes true randomness)",
        },
        "epsilon_max": last.get("dp_epsilon_max"),
        "epsilon_min": last.get("dp_epsilon_min"),
        "delta": cfg.dp_delta,
        "accountant": "RDP (Opacus), all rounds counted, record level per party",
        "outside_the_guarantee": "each party's size (num-examples) and the clean validation loss/accuracy it "
        "reports for model selection; the unprivatised training loss is not sent",
        "diffusion_model_path": cfg.diffusion_model_path or None,
    }


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    try:
        cfg = parse_run_config(context.run_config)
    except ConfigError as err:
        for line in str(err).splitlines():
            log.error(line)
        raise SystemExit(f"invalid run config: {err}") from None
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction, download=cfg.download)
    # The server evaluates on the test split in the parties' input space (features when a
    # backbone is used: the test split's extraction is cached like the training split's).
    test_x = split_inputs(cfg, data, "test", device=device).to(device)
    test_y = data.test_y.to(device)
    metered = MeteredGrid(grid)
    node_ids = _wait_for_nodes(
        metered, expected=cfg.expected_parties, quorum=cfg.quorum,
        timeout=cfg.connect_timeout if cfg.expected_parties else cfg.round_timeout,
    )
    log.info("%s on %s with %d parties, server device %s", cfg.strategy, cfg.dataset, len(node_ids), device)

    summary: dict = {
        "strategy": cfg.strategy,
        "num_parties": len(node_ids),
        "config": cfg.model_dump(by_alias=True),
        "started_utc": datetime.now(timezone.utc).isoformat(),
        "versions": {"flwr": flwr.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "server_device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "inputs": describe_inputs(cfg, data, input_dim=int(test_x[0].numel()), device=device),
    }
    if cfg.strategy == "one-shot-mixup":
        probe = MemoryProbe(device).start()

        def upload_check() -> UploadCheck:  # one per collection: a party uploads once per query
            return UploadCheck(
                row_shape=tuple(test_x.shape[1:]), num_classes=data.num_classes, input_dtype=cfg.upload_dtype,
                num_partitions=max(cfg.expected_parties, len(node_ids)), max_bytes=int(cfg.max_upload_mb * 2**20),
                encoding=cfg.encoding,
            )

        collected = collect_releases(metered, node_ids, timeout=cfg.round_timeout, device=device, check=upload_check())
        if len(collected.party_metrics) < cfg.quorum:
            raise RuntimeError(
                f"{len(collected.party_metrics)} valid release(s), fewer than quorum = {cfg.quorum}; "
                f"failures: {collected.failures}; rejections: {collected.rejections}"
            )
        probe.checkpoint("collected")  # assembling the union alone, before training allocates
        releases = Counter(int(m["partition-id"]) for m in collected.party_metrics)
        failures = list(collected.failures)
        rejections = list(collected.rejections)
        later_epochs: list[dict] = []

        def next_release(epoch: int) -> Collected:
            fresh = collect_releases(
                metered, node_ids, timeout=cfg.round_timeout, device=device, epoch=epoch, with_validation=False,
                check=upload_check(),
            )
            releases.update(int(m["partition-id"]) for m in fresh.party_metrics)
            failures.extend({**f, "epoch": epoch} for f in fresh.failures)
            rejections.extend(fresh.rejections)
            later_epochs.append({"epoch": epoch, "parties": len(fresh.party_metrics),
                                 "rows": fresh.train.filled, "collect_seconds": fresh.seconds})
            return fresh

        outcome = train_on_union(
            collected, cfg, test_x=test_x, test_y=test_y, device=device,
            next_release=next_release if cfg.release == "per-epoch" else None,
        )
        memory = probe.stop(union_bytes=collected.train.used_bytes + collected.val.used_bytes)
        parties = sorted(collected.party_metrics, key=lambda m: m["partition-id"])
        summary.update(
            rounds=1 + len(later_epochs),
            result={**{k: v for k, v in outcome.items() if k != "history"},
                    "selected_by": "lowest loss on the parties' held-out mixed validation releases"},
            privacy=_privacy_summary(cfg, parties, releases),
            union={
                "train_rows": collected.train.filled,
                "val_rows": collected.val.filled,
                "buffer_peak_bytes": collected.train.peak_bytes + collected.val.peak_bytes,
                "buffer_used_bytes": collected.train.used_bytes + collected.val.used_bytes,
                "grow_events": collected.train.grow_events + collected.val.grow_events,
                "collect_seconds": collected.seconds,
                "device": str(device),
                "dtype": str(collected.train.x.dtype).removeprefix("torch."),
            },
            memory=memory,
            parties=parties,
            later_epochs=later_epochs,
            failures=failures,
            rejections=rejections,
            participation={
                "expected": cfg.expected_parties or len(node_ids),
                "connected": len(node_ids),
                "quorum": cfg.quorum,
                "contributed_partitions": [m["partition-id"] for m in parties],
                "contributed_nodes": [m["node-id"] for m in parties],
                "not_contributing_nodes": sorted(
                    {f["node-id"] for f in collected.failures} | {r["node-id"] for r in collected.rejections}
                ),
            },
            history=outcome["history"],
        )
    else:
        outcome = run_federated(
            metered, cfg, node_ids, test_x=test_x, test_y=test_y, num_classes=data.num_classes, device=device
        )
        states = {"initial": outcome.pop("initial_state"), "selected": outcome.pop("selected_state")}
        summary.update(
            rounds=cfg.num_rounds,
            result={**{k: v for k, v in outcome.items() if k != "history"},
                    "selected_by": "round with the lowest size-weighted validation loss of the parties"},
            defence=_defence_summary(cfg, outcome["history"]),
            history=outcome["history"],
        )
    summary["communication"] = {
        "bytes_uploaded": metered.total_bytes_received,
        "bytes_downloaded": metered.total_bytes_sent,
        "bytes_uploaded_per_party": metered.total_bytes_received / len(node_ids),
        "bytes_downloaded_per_party": metered.total_bytes_sent / len(node_ids),
        "messages_sent": metered.messages_sent,
        "messages_received": metered.messages_received,
        "note": "payload bytes: array buffers plus serialised metric/config records",
    }
    summary["wall_seconds"] = time.perf_counter() - started
    path = write_json_atomic(Path(cfg.output_dir) / f"{_run_name(cfg, len(node_ids))}.json", summary)
    if cfg.strategy != "one-shot-mixup":
        # The round-1 and the selected global model, for the gradient-leakage audit
        # (simulations.gradient_audit); model weights, so never committed (.gitignore).
        weights = path.with_name(path.stem + WEIGHTS_SUFFIX)
        torch.save({**states, "selected_round": summary["result"]["selected_round"], "norm": cfg.model_norm}, weights)
        log.info("global models written to %s", weights)
    for line in table_lines(summary):
        log.info(line)
    log.info("summary written to %s", path)
