"""The in-process scans that chose the frontier's ladders (issue 17), re-runnable.

* **tau ladder** (singularized mixup, strict noise, released once): every party's release is
  made with the run's own code (:func:`client.release.make_release`), and the server's recipe
  (:class:`common.training.CentralTrainer`, ``central-epochs`` epochs, the last epoch's model)
  is trained on the union in this process, then tested on the run's test split. No Flower,
  so a tau costs seconds; the accuracies are what the sweep's runs should reproduce.
* **sigma ladder** (DP-Mix_self): the epsilon each noise multiplier gives a party of each size
  the sweep has, at ``dp-delta`` after ``num-rounds`` rounds
  (:func:`common.defences.dp_mix.dp_mix_epsilon`, the accountant the runs use).

    python -m simulations.studies.frontier_scan                      # digits, P = 10, seed 0
    python -m simulations.studies.frontier_scan --taus 1 2 3 4.5 5.44 --sigmas 0.85 4 22
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["scan_sigmas", "scan_taus", "theorem2_tau_max"]

BASE = {"dataset": "digits", "public-fraction": 0.2, "selection": "last", "central-epochs": 30, "num-rounds": 30}


def theorem2_tau_max(alpha: float) -> float:
    """The tau at which Theorem 2's noise multiplier m_f vanishes: ``alpha^2 / (1 - alpha)^2``."""
    return alpha**2 / (1 - alpha) ** 2


def scan_taus(base: Mapping[str, Any], *, taus: Sequence[float], parties: int, seed: int = 0, beta: float = 1.0,
              noise_mode: str = "strict") -> list[dict[str, Any]]:
    """Test accuracy of the one-shot recipe on the union of every party's release, per tau."""
    from client.party import load_party
    from client.release import make_release
    from common.config import parse_run_config
    from common.model import MixupClassifier
    from common.training import CentralTrainer, evaluate
    from features.pipeline import load_run_data, split_inputs

    out = []
    for tau in taus:
        started = time.perf_counter()
        cfg = parse_run_config({**base, "seed": seed, "beta": beta, "tau": float(tau), "noise-mode": noise_mode})
        xs, ys, snr, mf = [], [], [], []
        for pid in range(parties):
            made = make_release(cfg, load_party(cfg, pid, parties), device=torch.device("cpu"), with_validation=False)
            xs.append(made.train.x.float())
            ys.append(made.train.y.float())
            snr.append(float(made.metrics.get("snr-pc1", float("nan"))))
            mf.append(float(made.metrics.get("noise-multiplier", float("nan"))))
        x, y = torch.cat(xs), torch.cat(ys)
        data = load_run_data(cfg)
        test_x = split_inputs(cfg, data, "test", device=torch.device("cpu")).float()
        torch.manual_seed(seed)
        model = MixupClassifier(in_dim=int(x[0].numel()), num_classes=data.num_classes, norm=cfg.model_norm)
        trainer = CentralTrainer(model, rows=x.shape[0], epochs=cfg.central_epochs,
                                 generator=torch.Generator().manual_seed(seed), batch_size=cfg.batch_size, lr=cfg.lr,
                                 weight_decay=cfg.weight_decay)
        for _ in range(cfg.central_epochs):
            trainer.train_epoch(x, y)
        _, acc = evaluate(model, test_x, data.test_y)
        out.append({"tau": float(tau), "noise_mode": noise_mode, "parties": parties, "beta": beta, "seed": seed,
                    "test_accuracy": 100 * acc, "test_rows": int(test_x.shape[0]), "snr_pc1_mean": sum(snr) / len(snr),
                    "noise_multiplier_mean": sum(mf) / len(mf), "seconds": time.perf_counter() - started})
    return out


def scan_sigmas(base: Mapping[str, Any], *, sigmas: Sequence[float], party_sizes: Sequence[int]) -> list[dict]:
    """Epsilon (at ``dp-delta``, after ``num-rounds`` rounds) per noise multiplier and party size."""
    from common.config import parse_run_config
    from common.defences.dp_mix import dp_mix_epsilon

    out = []
    for sigma in sigmas:
        cfg = parse_run_config({**base, "strategy": "fedprox", "defence": "dp-mix-self",
                                "dp-noise-multiplier": float(sigma)})
        for n in sorted(set(party_sizes)):
            out.append({"sigma": float(sigma), "party_rows": int(n), "rounds": cfg.num_rounds, "delta": cfg.dp_delta,
                        "epsilon": dp_mix_epsilon(cfg, int(n), rounds=cfg.num_rounds)})
    return out


def party_sizes(base: Mapping[str, Any], *, parties: int, seeds: Sequence[int], beta: float) -> list[int]:
    """Training rows of every party of the sweep's partitions."""
    from client.party import load_party
    from common.config import parse_run_config

    sizes = []
    for seed in seeds:
        cfg = parse_run_config({**base, "seed": seed, "beta": beta})
        sizes += [int(load_party(cfg, pid, parties).train_x.shape[0]) for pid in range(parties)]
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--taus", type=float, nargs="+", default=[0.1, 1, 2, 3, 4, 4.5, 5, 5.3, 5.44])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.85, 4.0, 22.0])
    parser.add_argument("--parties", type=int, nargs="+", default=[10])
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=BASE["central-epochs"], help="central epochs = rounds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = {**BASE, "central-epochs": args.epochs, "num-rounds": args.epochs}
    print(f"Theorem 2: m_f = 0 from tau = alpha^2/(1-alpha)^2 = {theorem2_tau_max(0.7):.3f} (alpha = 0.7)")
    print("| P | beta | tau | test accuracy (%) | mean m_f | measured SNR_pc1 | seconds |")
    print("|---|---|---|---|---|---|---|")
    for parties in args.parties:
        for beta in args.betas:
            for r in scan_taus(base, taus=args.taus, parties=parties, seed=args.seed, beta=beta):
                print(f"| {parties} | {beta:g} | {r['tau']:g} | {r['test_accuracy']:.1f} | "
                      f"{r['noise_multiplier_mean']:.3g} | {r['snr_pc1_mean']:.3g} | {r['seconds']:.1f} |", flush=True)
            clamped = scan_taus(base, taus=[1e-6], parties=parties, seed=args.seed, beta=beta, noise_mode="clamped")[0]
            print(f"| {parties} | {beta:g} | 1e-06 clamped (nominal) | {clamped['test_accuracy']:.1f} | "
                  f"{clamped['noise_multiplier_mean']:.3g} | {clamped['snr_pc1_mean']:.3g} | "
                  f"{clamped['seconds']:.1f} |")
    sizes = [n for parties in args.parties for beta in args.betas
             for n in party_sizes(base, parties=parties, seeds=[args.seed], beta=beta)]
    print("\n| sigma | party training rows | rounds | delta | epsilon |\n|---|---|---|---|---|")
    for r in scan_sigmas(base, sigmas=args.sigmas, party_sizes=sizes):
        print(f"| {r['sigma']:g} | {r['party_rows']} | {r['rounds']} | {r['delta']:g} | {r['epsilon']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
