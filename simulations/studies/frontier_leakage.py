"""The leakage measures of the frontier study, the same for every method (issue 17).

For one finished run (its summary and the ``.weights.pt`` beside it):

1. **Membership inference on the reported model** (:mod:`attacks.membership`): the loss
   threshold and offline LiRA. Members: every party's private training rows; non-members:
   the run's test split (rows never used for training; the validation rows, used only for
   selection, and the public pool, the attacker's own data, are neither). LiRA's reference
   ("OUT") models are trained by the attacker on random halves of the run's public pool with
   the platform's central recipe (:class:`common.model.MixupClassifier` of the run's norm,
   :class:`common.training.CentralTrainer`: AdamW, cosine schedule, batch 128,
   ``central-epochs`` epochs, hard labels, the last epoch's weights). AUC and the TPR at the
   low FPR of :func:`attacks.membership.low_fpr_for`.
2. **Reconstruction** with the strongest attack for the method's traffic, on a fixed subset
   of parties (party 0 by default): linear inversion of appendix F for singularized releases
   (per-epoch releases: every epoch's release inverted and the estimates averaged per private
   sample), Carlini et al.'s attack for InstaHide, Inverting Gradients on a party's update
   from the round-1 global model for FedProx/FedAvg (with the run's own defence code,
   :mod:`simulations.studies.gradient_audit`); pooled data is total exposure (raw rows:
   gain = inf, recovered share = 1) and a party alone sends nothing to attack (n/a). Scored
   as the *SNR gain* (dB) over the prior-only guess (the public pool's mean image for every
   sample) and the share of attacked samples whose SSIM to the original exceeds a threshold.
   The SNR is computed *centred*: originals and estimates minus their batch's mean image,
   because a BatchNorm model's update is blind to a shift shared by the batch; raw SNR would
   credit FedProx with that blind spot rather than with privacy. Centred, the prior-only
   guess scores exactly 0 dB, so the gain is the attack's centred SNR. The raw SNR gain is
   kept beside it.
3. From the summary: the re-identification (nearest-source) rate where the encoding measures
   it, and DP-Mix's (epsilon, delta).

Every record is cached as ``<out>/leakage/<run name>.json`` with the options it was made
with, so a resumed study only attacks runs it has not attacked yet with the same options.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from common.config import RunConfig, parse_run_config
from common.io import write_json_atomic
from common.run_summary import RunSummary

__all__ = [
    "LeakageOptions", "ReferenceModels", "leakage_of_run", "load_run_weights", "membership_of_run",
    "reconstruction_of_run", "score_reconstruction",
]

WEIGHTS_SUFFIX = ".weights.pt"  # server.app.WEIGHTS_SUFFIX (not imported: flwr stays out of the tests)


@dataclass(frozen=True)
class LeakageOptions:
    """How the attacks are run (every record says which options made it)."""

    reference_models: int = 8
    linear_steps: int = 200
    linear_lr: float = 0.05
    carlini_steps: int = 500
    carlini_lr: float = 0.05
    ig_iterations: int = 200
    ig_restarts: int = 1
    attack_parties: tuple[int, ...] = (0,)
    ssim_threshold: float = 0.5
    per_epoch_releases: int | None = None  # None: every epoch's release

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


# ------------------------------------------------------------------------------ model weights


def load_run_weights(summary_path: Path) -> dict[str, Any]:
    """``<run>.weights.pt``: the reported model ("selected"), the round-1 model ("initial",
    iterative runs), the norm; ``FileNotFoundError`` names what is missing."""
    path = Path(summary_path).with_name(Path(summary_path).stem + WEIGHTS_SUFFIX)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the run did not save its model (rerun it)")
    return torch.load(path, map_location="cpu", weights_only=True)


def _model_builder(in_dim: int, num_classes: int, norm: str):  # noqa: ANN202
    from common.model import MixupClassifier

    return partial(MixupClassifier, in_dim=in_dim, num_classes=num_classes, norm=norm)


# --------------------------------------------------------------------------------- membership


def _public_rows(cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from client.party import load_public_pool, public_indices
    from features.pipeline import load_run_data

    data = load_run_data(cfg)
    rows = public_indices(cfg, int(data.train_y.shape[0]))
    return load_public_pool(cfg).float(), data.train_y[torch.as_tensor(rows)].long()


def _test_rows(cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from features.pipeline import load_run_data, split_inputs

    data = load_run_data(cfg)
    return split_inputs(cfg, data, "test", device=torch.device("cpu")).float(), data.test_y.long()


def train_reference(x: torch.Tensor, y: torch.Tensor, seed: int, *, build, epochs: int,  # noqa: ANN001
                    cfg: RunConfig) -> dict[str, torch.Tensor]:
    """One attacker model: the central recipe on ``(x, y)`` with hard labels, last epoch."""
    from common.training import CentralTrainer

    torch.manual_seed(seed)
    model = build()
    trainer = CentralTrainer(model, rows=x.shape[0], epochs=epochs, generator=torch.Generator().manual_seed(seed),
                             batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(epochs):
        trainer.train_epoch(x, y)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class ReferenceModels:
    """LiRA's reference models, trained once per public pool, norm and recipe."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._cache: dict[str, tuple] = {}

    @staticmethod
    def _pool_key(cfg: RunConfig, norm: str) -> str:
        fields = ("dataset", "data_dir", "test_fraction", "public_fraction", "seed", "backbone", "backbone_weights",
                  "feature_pool", "image_size", "central_epochs", "batch_size", "lr", "weight_decay")
        return json.dumps({**{f: getattr(cfg, f) for f in fields}, "norm": norm}, sort_keys=True)

    def states(self, cfg: RunConfig, *, build, norm: str) -> tuple:  # noqa: ANN001
        from attacks.membership import reference_states

        key = self._pool_key(cfg, norm)
        if key not in self._cache:
            public_x, public_y = _public_rows(cfg)
            train = partial(train_reference, build=build, epochs=cfg.central_epochs, cfg=cfg)
            self._cache[key] = reference_states(train, public_x, public_y, count=self.count, seed=cfg.seed)
        return self._cache[key]


def membership_of_run(summary: RunSummary, weights: Mapping[str, Any], *, refs: ReferenceModels) -> dict[str, Any]:
    """Loss threshold and offline LiRA against the reported model of one run."""
    from attacks.membership import LossThreshold, MembershipKnowledge, ObservedModel, OfflineLiRA, membership_metrics
    from client.party import load_party

    cfg = parse_run_config(summary.config)
    parties = [load_party(cfg, pid, summary.num_parties) for pid in range(summary.num_parties)]
    member_x = torch.cat([p.train_x.float().reshape(p.train_x.shape[0], -1) for p in parties])
    member_y = torch.cat([p.train_y.long() for p in parties])
    test_x, test_y = _test_rows(cfg)
    x = torch.cat([member_x, test_x.reshape(test_x.shape[0], -1)])
    y = torch.cat([member_y, test_y])
    truth = torch.cat([torch.ones(member_x.shape[0], dtype=torch.bool), torch.zeros(test_x.shape[0], dtype=torch.bool)])
    norm = weights.get("norm") or cfg.model_norm
    build = _model_builder(int(x.shape[1]), parties[0].num_classes, norm)
    observed = ObservedModel(state=weights["selected"], build=build)
    started = time.perf_counter()
    out: dict[str, Any] = {}
    loss = LossThreshold().score(observed, MembershipKnowledge(candidates_x=x, candidates_y=y))
    out["loss"] = membership_metrics(loss.scores, truth)
    states = refs.states(cfg, build=build, norm=norm)
    lira = OfflineLiRA().score(observed, MembershipKnowledge(candidates_x=x, candidates_y=y, reference_states=states))
    out["lira"] = {**membership_metrics(lira.scores, truth), "reference_models": len(states)}
    out["seconds"] = time.perf_counter() - started
    return out


# ----------------------------------------------------------------------------- reconstruction


def _sample_shape(party) -> tuple[int, ...]:  # noqa: ANN001
    return tuple(party.image_shape) if party.image_shape is not None else (int(party.train_x[0].numel()),)


def _data_range(bounds, shape: tuple[int, ...]):  # noqa: ANN001, ANN202
    lo, hi = bounds
    if torch.is_tensor(lo) or torch.is_tensor(hi):
        width = (torch.as_tensor(hi) - torch.as_tensor(lo)).reshape(shape)
        return [float(w) for w in width.reshape(shape[0], -1)[:, 0]]
    return float(hi) - float(lo)


def score_reconstruction(originals: torch.Tensor, estimate: torch.Tensor, prior: torch.Tensor, *,
                         data_range, ssim_threshold: float) -> dict[str, Any]:  # noqa: ANN001
    """Centred SNR gain over the prior-only guess, raw SNR gain, and the share of samples
    recovered (SSIM above ``ssim_threshold``; images only), for one attacked batch."""
    from attacks.metrics import snr_db, ssim

    originals, estimate = originals.double(), estimate.double().reshape(originals.shape)
    prior = prior.double().reshape(1, *originals.shape[1:]).expand_as(originals)

    def centred(t: torch.Tensor) -> torch.Tensor:
        return t - t.mean(dim=0, keepdim=True)

    gain = snr_db(centred(originals), centred(estimate)) - snr_db(centred(originals), centred(prior))
    raw_gain = snr_db(originals, estimate) - snr_db(originals, prior)
    image = originals.ndim in (3, 4)
    out: dict[str, Any] = {"n": int(originals.shape[0]), "snr_gain_db": float(gain.mean()),
                           "raw_snr_gain_db": float(raw_gain.mean()), "recovered_share": None,
                           "prior_recovered_share": None, "ssim_mean": None}
    if image:
        s = ssim(originals, estimate, data_range=data_range)
        p = ssim(originals, prior, data_range=data_range)
        out.update(recovered_share=float((s > ssim_threshold).double().mean()),
                   prior_recovered_share=float((p > ssim_threshold).double().mean()), ssim_mean=float(s.mean()))
    return out


def _linear(cfg: RunConfig, party, opts: LeakageOptions, prior: torch.Tensor) -> dict[str, Any]:  # noqa: ANN001
    from attacks.linear import LinearInversionAttack
    from attacks.threat_model import grant_knowledge, observe
    from client.release import make_release

    shape = _sample_shape(party)
    originals = party.train_x.float().reshape(-1, *shape)
    attack = LinearInversionAttack(steps=opts.linear_steps, lr=opts.linear_lr, seed=0)
    epochs = 1 if cfg.release == "once" else cfg.central_epochs
    if opts.per_epoch_releases is not None:
        epochs = min(epochs, opts.per_epoch_releases)
    total = torch.zeros_like(originals, dtype=torch.float64)
    for epoch in range(1, epochs + 1):
        made = make_release(cfg, party, device=torch.device("cpu"), epoch=epoch, with_validation=False)
        knowledge = grant_knowledge(made.train, noise_mode=cfg.noise_mode, valid_range=party.input_bounds)
        total += attack.reconstruct(observe(made.train, sample_shape=shape), knowledge).x.reshape(originals.shape)
    scores = score_reconstruction(originals, total / epochs, prior, data_range=_data_range(party.input_bounds, shape),
                                  ssim_threshold=opts.ssim_threshold)
    return {**scores, "releases_attacked": epochs}


def _carlini(cfg: RunConfig, party, opts: LeakageOptions, prior: torch.Tensor,  # noqa: ANN001
             public: torch.Tensor) -> dict:
    from attacks.instahide import CarliniInstaHideAttack, grant_instahide_knowledge
    from attacks.threat_model import observe
    from client.release import make_release

    shape = _sample_shape(party)
    originals = party.train_x.float().reshape(-1, *shape)
    made = make_release(cfg, party, device=torch.device("cpu"), with_validation=False)
    knowledge = grant_instahide_knowledge(made.train, public_pool=public, valid_range=party.input_bounds)
    attack = CarliniInstaHideAttack(steps=opts.carlini_steps, lr=opts.carlini_lr)
    rec = attack.reconstruct(observe(made.train, sample_shape=shape), knowledge)
    return score_reconstruction(originals, rec.x, prior, data_range=_data_range(party.input_bounds, shape),
                                ssim_threshold=opts.ssim_threshold)


def _inverting_gradients(cfg: RunConfig, summary: RunSummary, weights: Mapping[str, Any], pid: int,
                         opts: LeakageOptions, prior: torch.Tensor) -> dict[str, Any]:
    from client.party import load_party
    from simulations.studies.gradient_audit import AuditProtocol, audit_party

    if weights.get("initial") is None:
        raise ValueError("the run saved no round-1 global model")
    protocol = AuditProtocol(iterations=opts.ig_iterations, restarts=opts.ig_restarts)
    _, images = audit_party(cfg, party_id=pid, num_parties=summary.num_parties, global_state=weights["initial"],
                            protocol=protocol)
    party = load_party(cfg, pid, summary.num_parties)
    shape = _sample_shape(party)
    return {**score_reconstruction(images["original"], images["reconstruction"], prior,
                                   data_range=_data_range(party.input_bounds, shape),
                                   ssim_threshold=opts.ssim_threshold), "protocol": protocol.describe()}


def attack_name(summary: RunSummary) -> str:
    """The attack the frontier uses on this run's traffic."""
    if summary.strategy == "local-only":
        return "none (nothing leaves a party)"
    if summary.privacy is None:
        return "Inverting Gradients on the round-1 update"
    return {"singularized": "linear inversion (appendix F)", "instahide": "Carlini et al. (InstaHide)",
            "pooled": "none needed (raw rows uploaded)"}.get(summary.privacy.encoding, "none")


def reconstruction_of_run(summary: RunSummary, weights: Mapping[str, Any] | None, *,
                          opts: LeakageOptions) -> dict[str, Any]:
    """The run's reconstruction figures, averaged over the attacked parties (``n/a`` with a
    reason where there is no traffic to attack or the attack does not apply)."""
    from client.party import load_party, load_public_pool

    name = attack_name(summary)
    if summary.strategy == "local-only":
        return {"attack": name, "snr_gain_db": None, "recovered_share": None, "na": "nothing leaves a party"}
    encoding = summary.privacy.encoding if summary.privacy is not None else None
    if encoding == "pooled":
        return {"attack": name, "snr_gain_db": math.inf, "raw_snr_gain_db": math.inf, "recovered_share": 1.0,
                "exposure": "total: every private training row uploaded in the clear"}
    cfg = parse_run_config(summary.config)
    public = load_public_pool(cfg).float()
    prior = public.mean(dim=0)
    started = time.perf_counter()
    per_party = []
    for pid in opts.attack_parties:
        if pid >= summary.num_parties:
            continue
        try:
            if encoding is None:
                per_party.append(_inverting_gradients(cfg, summary, weights or {}, pid, opts, prior))
                continue
            party = load_party(cfg, pid, summary.num_parties)
            if encoding == "singularized":
                per_party.append(_linear(cfg, party, opts, prior))
            elif encoding == "instahide":
                per_party.append(_carlini(cfg, party, opts, prior, public))
            else:
                return {"attack": name, "snr_gain_db": None, "recovered_share": None,
                        "na": f"no attack for encoding {encoding!r}"}
        except ValueError as err:  # e.g. the gradient audit on backbone features
            return {"attack": name, "snr_gain_db": None, "recovered_share": None, "na": str(err)}
    out: dict[str, Any] = {"attack": name, "parties": [p for p in opts.attack_parties if p < summary.num_parties],
                           "seconds": time.perf_counter() - started}
    for key in ("snr_gain_db", "raw_snr_gain_db", "recovered_share", "prior_recovered_share", "ssim_mean"):
        values = [r[key] for r in per_party if r.get(key) is not None]
        out[key] = sum(values) / len(values) if values else None
    out["n"] = sum(r["n"] for r in per_party)
    if per_party and "releases_attacked" in per_party[0]:
        out["releases_attacked"] = per_party[0]["releases_attacked"]
    return out


# ------------------------------------------------------------------------------------ the run


def leakage_of_run(summary_path: Path, summary: RunSummary, *, opts: LeakageOptions, refs: ReferenceModels,
                   cache_dir: Path | None) -> dict[str, Any]:
    """Membership, reconstruction, re-identification and epsilon of one run; read from
    ``cache_dir`` when it holds a record made with the same options."""
    cache = None if cache_dir is None else Path(cache_dir) / f"{Path(summary_path).stem}.json"
    if cache is not None and cache.exists():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("options_key") == opts.key():
            return cached
    weights = None
    if summary.strategy != "local-only":
        weights = load_run_weights(summary_path)
    record: dict[str, Any] = {"options_key": opts.key(), "options": asdict(opts)}
    if summary.strategy == "local-only":
        record["membership"] = {"na": "each party keeps its own model: no shared model to attack"}
    else:
        record["membership"] = membership_of_run(summary, weights, refs=refs)
    record["reconstruction"] = reconstruction_of_run(summary, weights, opts=opts)
    privacy = summary.privacy
    reid = privacy.reidentification_rate.get("mean") if privacy is not None and privacy.reidentification_rate else None
    if privacy is not None and privacy.encoding == "pooled":
        reid = 1.0  # every released row is its own source
    record["reidentification_rate"] = reid
    extra = (summary.defence.model_extra or {}) if summary.defence is not None else {}
    record["epsilon"] = extra.get("epsilon_max")
    record["delta"] = extra.get("delta")
    if cache is not None:
        write_json_atomic(cache, record)
    return record
