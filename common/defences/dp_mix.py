"""DP-Mix: DP-SGD whose per-sample gradient averages views of that sample alone.

``dp-mix-self`` mixes self-augmentations of each record (DP-Mix_self); ``dp-mix-diff`` also
mixes with samples of a local text-to-image diffusion model (DP-Mix_diff). The maths and the
Opacus wiring are in :mod:`common.dp_mix`. The party's (epsilon, delta) after ``server_round``
rounds is accounted from the steps it has taken (RDP accountant, Poisson sampling); the
proximal term is added after clipping and noise, so it costs no privacy.

Privacy caveats: seeded noise (``secure-rng = false``) is for simulation only, the guarantee
assumes true randomness; each party's size and the clean validation figures it reports for
model selection are outside the guarantee; the unprivatised training loss is never sent.
"""

from __future__ import annotations

from functools import lru_cache

from common.defences.base import DEFENCES, Defence, LocalUpdate

__all__ = ["DPMixDiff", "DPMixSelf", "dp_mix_epsilon"]


def dp_mix_epsilon(cfg, num_examples: int, *, rounds: int) -> float:  # noqa: ANN001
    """The party's epsilon at ``dp-delta`` after ``rounds`` rounds of ``local-epochs`` epochs.

    Record-level DP of the party's own training rows against anyone who sees all its
    updates (the server, or an eavesdropper), by the RDP accountant for the Poisson-sampled
    Gaussian mechanism. It counts every round as taken (an upper bound when the party missed
    one) and assumes the noise is truly random: seeded simulation noise is not.
    """
    from common.dp_mix import dp_epsilon, steps_per_epoch  # Opacus is imported only by runs that use it

    steps = rounds * cfg.local_epochs * steps_per_epoch(num_examples, cfg.batch_size)
    rate = min(1.0, cfg.batch_size / num_examples)
    return dp_epsilon(noise_multiplier=cfg.dp_noise_multiplier, sample_rate=rate, steps=steps, delta=cfg.dp_delta)


@lru_cache(maxsize=2)
def _diffusion_samples(cfg, num_classes: int, image_shape: tuple[int, int, int]):  # noqa: ANN001, ANN202
    from common.dp_mix import load_diffusion_samples

    # Class names are not part of the data sets' tensors; the prompts use the class indices.
    names = [str(i) for i in range(num_classes)]
    return load_diffusion_samples(
        cfg.diffusion_model_path, class_names=names, per_class=cfg.diffusion_samples_per_class,
        image_shape=image_shape, seed=cfg.seed, device="cuda" if cfg.device == "cuda" else "cpu",
    )


@DEFENCES.register
class DPMixSelf(Defence):
    """DP-SGD on self-augmentations and self-mixups of each Poisson-sampled record."""

    name = "dp-mix-self"
    label = "DP-Mix_self"
    model_norm = "layer"
    needs_raw_inputs = True
    extreme_metrics = ("dp-epsilon",)
    uses_diffusion = False

    def local_update(self, cfg, party, model, *, lr, proximal_mu, generator, server_round, x, y, epochs,
                     batch_size, optimizer, own_rows) -> LocalUpdate:  # noqa: ANN001
        if party.image_shape is None:
            raise ValueError(f"defence = {self.name} augments raw images; this party holds backbone features")
        from common.dp_mix import train_local_dp_mix

        synthetic = (_diffusion_samples(cfg, party.num_classes, party.image_shape)
                     if self.uses_diffusion else None)
        result = train_local_dp_mix(
            model, x, y,
            sample_shape=party.image_shape, epochs=epochs, lr=lr, batch_size=batch_size,
            noise_multiplier=cfg.dp_noise_multiplier, max_grad_norm=cfg.dp_max_grad_norm,
            num_augmentations=cfg.dpmix_augmentations, num_mixups=cfg.dpmix_mixups, alpha=cfg.dpmix_alpha,
            generator=generator, proximal_mu=proximal_mu, weight_decay=cfg.weight_decay, optimizer=optimizer,
            secure_mode=cfg.secure_rng, max_shift=cfg.dpmix_max_shift, flip=cfg.dpmix_flip, synthetic=synthetic,
        )
        # Only data-independent figures leave the party: the training loss and the share of
        # clipped gradients are computed from the private rows without noise, outside the
        # guarantee, so a DP party keeps them to itself (``local_metrics``).
        metrics = {"dp-steps": float(result.steps), "dp-sample-rate": float(result.sample_rate)}
        if own_rows:  # the run's own update: account the party's privacy so far
            metrics["dp-epsilon"] = dp_mix_epsilon(cfg, int(x.shape[0]), rounds=server_round)
        return LocalUpdate(
            train_loss=None, metrics=metrics,
            local_metrics={"train-loss": float(result.mean_loss), "dp-clipped-share": float(result.clipped_share)},
        )

    def summary(self, cfg, history) -> dict:  # noqa: ANN001
        last = next((r for r in reversed(history) if "dp_epsilon_max" in r), {})
        return {
            "defence": self.name,
            "model_norm": self.model_norm,
            "dp_sgd": {
                "noise_multiplier": cfg.dp_noise_multiplier,
                "max_grad_norm": cfg.dp_max_grad_norm,
                "expected_batch_size": cfg.batch_size,
                "sampling": "Poisson, rate batch-size / party size",
                "per_sample_gradient": f"mean over {cfg.dpmix_augmentations} self-augmentations and "
                f"{cfg.dpmix_mixups} mixups of the sample alone" + (
                    " or with diffusion samples" if self.uses_diffusion else ""),
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

    def log_rows(self, summary) -> list[tuple[str, str]]:  # noqa: ANN001
        eps = summary.get("epsilon_max")
        return [("defence", f"{summary['defence']}: DP-SGD sigma = {summary['dp_sgd']['noise_multiplier']:g}, "
                 f"C = {summary['dp_sgd']['max_grad_norm']:g}; epsilon <= "
                 f"{'n/a' if eps is None else f'{eps:.2f}'} at delta = {summary['delta']:g} (worst party)")]


@DEFENCES.register
class DPMixDiff(DPMixSelf):
    """DP-Mix_diff: the views also mix with samples of a local diffusion model."""

    name = "dp-mix-diff"
    label = "DP-Mix_diff"
    uses_diffusion = True

    def check_config(self, cfg) -> None:  # noqa: ANN001
        super().check_config(cfg)
        if not cfg.diffusion_model_path:
            raise ValueError(
                "diffusion-model-path: DP-Mix_diff mixes with samples of a text-to-image diffusion model, which is "
                "only read from a local folder (nothing is downloaded); set its absolute path, or use dp-mix-self"
            )
