r"""The non-linear reconstruction attack of the paper (section 5.1, appendix F): a U-Net.

Threat model
------------
The attacker owns a *public* image set (Tiny-ImageNet restricted to CIFAR-10-like classes in
the paper) and knows the mechanism: Algorithm 1 with the same ``alpha``, the same privacy
parameter ``tau`` and the same noise mode as the attacked release. It mixes its own public
images exactly as a party would (radius calibrated with Theorem 2 *on the public data*,
``r = m_f D``; :mod:`attacks.public_mixtures`), trains a U-Net (:mod:`attacks.unet_model`)
to map a mixed input back to the row's clean component ``x_i``, and applies that network
**zero-shot** to the private release. The attack uses no private sample, no mixing weight,
no partner index and no radius of the release; of
:class:`~attacks.threat_model.AttackerKnowledge` it reads only ``valid_range`` (to clamp its
output) and, when it trains lazily, ``noise_mode`` (the mechanism it imitates). One U-Net
is trained per ``tau`` (the paper's Table 3), and per seed: the paper repeats every
experiment over five seeds and reports mean +- std and the best SNR.

As every attack of the package, :class:`UNetAttack` is an
:class:`~attacks.base.Attack` with ``reconstruct(observed, knowledge)``. The public data
and the trained network belong to the attacker, not to the attacked party, so they are
constructor arguments: either an already trained network (:func:`train_unet_attacker`,
:meth:`TrainedUNet.attack`) or the public data and training settings, in which case the
network is trained on the first ``reconstruct`` (:meth:`UNetAttack.fit`).

Loss (appendix F)
-----------------
``L = mean |x_hat - x| + lambda_tv * TV(x_hat)`` with ``lambda_tv = 1e-4`` and the
anisotropic total variation ``TV(z) = mean |z[..., 1:, :] - z[..., :-1, :]| +
mean |z[..., :, 1:] - z[..., :, :-1]|`` (:func:`attacks.regularisers.total_variation`);
Adam, learning rate ``1e-3``, batch size 32, 30 epochs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from common.seeds import Stream, derive_seed

from .base import ATTACKS, Attack
from .optim import adam
from .public_mixtures import MixturePairs, MixtureSampler, public_mixtures
from .regularisers import total_variation
from .threat_model import AttackerKnowledge, ObservedRelease, Reconstruction
from .unet_model import Bounds, DoubleConv, UNet, _clamp, _image_bound, _image_shape

__all__ = [
    "DoubleConv",
    "MixturePairs",
    "MixtureSampler",
    "TrainedUNet",
    "UNet",
    "UNetAttack",
    "nonlinear_attack_over_seeds",
    "public_mixtures",
    "total_variation",
    "train_unet_attacker",
    "unet_loss",
]


# ------------------------------------------------------------------------------ training


def unet_loss(pred: Tensor, target: Tensor, *, tv_weight: float = 1e-4) -> tuple[Tensor, Tensor]:
    """``(L1(pred, target) + tv_weight * TV(pred), L1(pred, target))``, L1 being the mean."""
    l1 = F.l1_loss(pred, target)
    return l1 + tv_weight * total_variation(pred), l1


@dataclass
class TrainedUNet:
    """A U-Net attacker and how it was trained.

    Attributes
    ----------
    model : UNet
        The trained network (eval mode).
    history : list[float]
        Mean training loss (L1 + TV) of every epoch.
    l1_history : list[float]
        Mean L1 term of every epoch.
    image_shape : (C, H, W)
        Shape the samples were viewed as.
    tau, alpha, radius, noise_mode, mf_formula, seed :
        The mechanism imitated on the public data and the attacker's seed.
    """

    model: UNet
    history: list[float]
    l1_history: list[float]
    image_shape: tuple[int, int, int]
    tau: float
    alpha: float
    radius: float
    noise_mode: str
    mf_formula: str
    seed: int
    config: dict = field(default_factory=dict)

    def attack(self, *, device: str | torch.device = "cpu", batch_size: int = 256) -> UNetAttack:
        """The zero-shot attack that applies this network to a release."""
        return UNetAttack(self, device=device, batch_size=batch_size)


def train_unet_attacker(
    public_x: Tensor,
    *,
    tau: float,
    alpha: float = 0.7,
    noise_mode: str,
    valid_range: Bounds | None,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    tv_weight: float = 1e-4,
    base: int = 48,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    remix_every_epoch: bool = True,
    mf_formula: str = "paper",
    image_shape: tuple[int, int, int] | None = None,
) -> TrainedUNet:
    """Train appendix F's U-Net to undo singularized mixup on public data.

    Loss ``mean |x_hat - x| + tv_weight * TV(x_hat)`` (anisotropic TV, see
    :func:`total_variation`), Adam with learning rate ``lr``, ``epochs`` passes over the
    public set in shuffled batches of ``batch_size`` (paper: 30 epochs, batch 32, lr 1e-3,
    TV weight 1e-4, base width 48). Inputs are the mixtures of :class:`MixtureSampler`
    (same ``tau``, ``alpha`` and noise mode as the attacked release, radius calibrated on
    the public data), targets the public samples; the output is clamped to ``valid_range``.

    Parameters
    ----------
    public_x : Tensor
        Public samples ``(n, C, H, W)``, ``(n, H, W)`` or flat ``(n, d)`` (then viewed as
        ``image_shape``, by default square single-channel images).
    tau, alpha, noise_mode, valid_range, mf_formula :
        The attacked mechanism (see :class:`MixtureSampler`).
    seed : int
        Seeds the initialisation, the mixtures and the batch order (independent streams).
        Mixtures of epoch ``e`` use a generator seeded from ``(seed, e)`` only, so the same
        public samples are paired identically whatever ``tau``.
    remix_every_epoch : bool
        Draw fresh mixtures of the public data every epoch (default) rather than one set
        reused for all epochs. This is a choice *of the attacker*, not a property of the
        attacked release: remixing its own public data costs the attacker nothing and gives
        it more (input, target) pairs, i.e. a stronger attack. It exposes no private data
        (unlike a party that re-releases fresh mixtures of its private samples). The
        paper's appendix does not say which one it used.
    progress : bool
        Show a tqdm progress bar over the training batches.

    Returns
    -------
    TrainedUNet
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    device = torch.device(device)
    public_x = public_x.detach().to(torch.float32)
    shape = _image_shape(public_x.shape[1:], channels=None) if image_shape is None else tuple(image_shape)
    if len(shape) != 3 or math.prod(shape) != math.prod(public_x.shape[1:]):
        raise ValueError(f"image_shape {shape} does not match public samples of shape {tuple(public_x.shape[1:])}")
    sampler = MixtureSampler(
        public_x, tau=tau, alpha=alpha, noise_mode=noise_mode, valid_range=valid_range, mf_formula=mf_formula
    )
    channels = shape[0]
    # Three independent streams of the attacker's seed (common.seeds): initialisation,
    # mixtures (one per epoch) and batch order.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, Stream.ATTACK_INIT))
        model = UNet(in_channels=channels, out_channels=channels, base=base)
    if valid_range is not None:
        model.set_bounds(tuple(_image_bound(v, channels=channels, image_shape=shape) for v in valid_range))
    model.to(device)
    optimiser = adam(model.parameters(), lr=lr)  # PyTorch's default kernel, as for the committed audits
    shuffle = torch.Generator().manual_seed(derive_seed(seed, Stream.ATTACK_SHUFFLE))
    targets = public_x.reshape(-1, *shape).to(device)
    n = targets.shape[0]
    batches = math.ceil(n / batch_size)

    def mixtures(epoch: int) -> Tensor:
        gen = torch.Generator(device=public_x.device).manual_seed(derive_seed(seed, Stream.ATTACK_MIX, epoch))
        return sampler.sample(generator=gen).inputs.reshape(-1, *shape).to(device)

    history: list[float] = []
    l1_history: list[float] = []
    inputs = None
    model.train()
    with tqdm(total=epochs * batches, desc=f"U-Net tau={tau:g} seed={seed}", disable=not progress, leave=False) as bar:
        for epoch in range(epochs):
            if inputs is None or remix_every_epoch:
                inputs = mixtures(epoch if remix_every_epoch else 0)
            order = torch.randperm(n, generator=shuffle).to(device)
            total = total_l1 = 0.0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                pred = model(inputs[idx])
                loss, l1 = unet_loss(pred, targets[idx], tv_weight=tv_weight)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * idx.numel()
                total_l1 += float(l1.detach()) * idx.numel()
                bar.update(1)
            history.append(total / n)
            l1_history.append(total_l1 / n)
            bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.4f}")
    model.eval()
    return TrainedUNet(
        model=model,
        history=history,
        l1_history=l1_history,
        image_shape=shape,  # type: ignore[arg-type]
        tau=float(tau),
        alpha=float(alpha),
        radius=sampler.radius,
        noise_mode=noise_mode,
        mf_formula=mf_formula,
        seed=int(seed),
        config={
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "tv_weight": tv_weight, "base": base,
            "remix_every_epoch": remix_every_epoch, "num_public": n,
            "public_D": sampler.statistics.D, "public_c": sampler.statistics.c,
            "noise_multiplier": sampler.noise_multiplier,
        },
    )


# -------------------------------------------------------------------------------- attack


@ATTACKS.register
class UNetAttack(Attack[ObservedRelease, AttackerKnowledge]):
    """Zero-shot non-linear attack: a U-Net trained on public mixtures applied to a release.

    Parameters
    ----------
    model : UNet or TrainedUNet, optional
        The network (a :class:`TrainedUNet` also fixes the image shape it was trained on).
        Leave it out to train on ``public_x`` instead.
    public_x : Tensor, optional
        The attacker's public samples; with it (and no ``model``) the network is trained by
        :func:`train_unet_attacker` on the first :meth:`reconstruct` (or :meth:`fit`).
    training : mapping, optional
        With ``public_x``: keyword arguments of :func:`train_unet_attacker` (``tau``
        required; ``seed``, ``epochs``, ``batch_size``, ``base``, ...; not ``device``).
        ``noise_mode`` and ``valid_range`` default to the attacked knowledge's, as the
        attacker imitates the attacked mechanism.
    device : str or torch.device
        Where the network is trained and runs.
    batch_size : int
        Rows per forward pass when attacking.

    Notes
    -----
    As in the paper, the network is trained on mixtures of *public* data and applied
    unchanged to the private release: it uses no private sample and ignores the
    attacker's knowledge of weights, partners and radius. Only ``knowledge.valid_range``
    is used, to clamp the estimate (and, when training lazily, ``knowledge.noise_mode``).
    Once trained, the network is kept: later calls of :meth:`reconstruct` reuse it.
    """

    name = "unet"
    observes = ObservedRelease
    requires = AttackerKnowledge

    def __init__(
        self,
        model: UNet | TrainedUNet | None = None,
        *,
        public_x: Tensor | None = None,
        training: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.public_x = public_x
        self.training = dict(training or {})
        self.trained: TrainedUNet | None = None
        self.model: UNet | None = None
        if model is None:
            if public_x is None:
                raise ValueError("UNetAttack needs a trained model, or public_x and training={'tau': ...}")
            if "tau" not in self.training:
                raise ValueError("training on public_x needs training['tau'] (one U-Net is trained per tau)")
            if "device" in self.training:
                raise ValueError("pass device=... once, not in training: it is where the network trains and runs")
            return
        if public_x is not None or training:
            raise ValueError("give either a trained model or public_x and training settings, not both")
        self._use(model)

    def _use(self, model: UNet | TrainedUNet) -> None:
        self.trained = model if isinstance(model, TrainedUNet) else None
        self.model = model.model if isinstance(model, TrainedUNet) else model
        if not isinstance(self.model, UNet):
            raise TypeError(f"model must be a UNet or TrainedUNet, got {type(self.model).__name__}")

    def fit(self, knowledge: AttackerKnowledge | None = None) -> TrainedUNet | None:
        """Train the network on the public data if it is not trained yet; return it.

        ``knowledge`` supplies ``noise_mode`` and ``valid_range`` where the training settings
        do not (the attacked mechanism); nothing else of it is read. Returns ``None`` for an
        attack built on a bare :class:`UNet`.
        """
        if self.model is not None:
            return self.trained
        kwargs = dict(self.training)
        if knowledge is not None:
            kwargs.setdefault("noise_mode", knowledge.noise_mode)
            kwargs.setdefault("valid_range", knowledge.valid_range)
        missing = [k for k in ("noise_mode", "valid_range") if k not in kwargs]
        if missing:
            raise ValueError(f"training needs {', '.join(missing)}: pass them or the attacked knowledge")
        self._use(train_unet_attacker(self.public_x, device=self.device, **kwargs))
        return self.trained

    def _image_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
        channels = self.model.in_channels
        if self.trained is not None and math.prod(self.trained.image_shape) == math.prod(sample_shape):
            shape = self.trained.image_shape
            if len(sample_shape) == 3 and tuple(sample_shape) != tuple(shape):
                raise ValueError(f"release samples {sample_shape} differ from the training images {shape}")
            return shape
        return _image_shape(sample_shape, channels=channels)

    def reconstruct(self, observed: ObservedRelease, knowledge: AttackerKnowledge) -> Reconstruction:
        """Estimate every row's clean component ``x_i`` from the mixed inputs alone.

        Trains the network first when the attack was built from public data.

        Returns a :class:`Reconstruction` whose ``x`` has ``observed.x``'s shape.

        Raises
        ------
        ValueError
            If ``observed.x`` does not hold ``(n, *sample_shape)`` samples, or the samples do
            not fit the network's channels.
        """
        self.fit(knowledge)  # trains on the public data on the first call only
        sample_shape = tuple(int(s) for s in observed.sample_shape)
        x = observed.x
        if x.ndim < 1 or x.numel() != x.shape[0] * math.prod(sample_shape):
            raise ValueError(
                f"observed.x of shape {tuple(x.shape)} does not hold (n, *sample_shape) rows "
                f"with sample_shape={sample_shape}"
            )
        shape = self._image_shape(sample_shape)
        images = x.reshape(x.shape[0], *shape)
        bounds = None
        if knowledge.valid_range is not None:
            bounds = tuple(
                _image_bound(v, channels=shape[0], image_shape=shape).to(self.device) for v in knowledge.valid_range
            )
        model = self.model.to(self.device).eval()
        out = torch.empty(images.shape, dtype=torch.float32)
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                batch = images[start : start + self.batch_size].to(self.device, torch.float32)
                pred = model(batch)
                if bounds is not None:
                    pred = _clamp(pred, *bounds)
                out[start : start + batch.shape[0]] = pred.cpu()
        details = {"zero_shot": True, "image_shape": shape, "base": self.model.base}
        if self.trained is not None:
            t = self.trained
            details.update(
                tau=t.tau, seed=t.seed, noise_mode=t.noise_mode, public_radius=t.radius,
                mf_formula=t.mf_formula, final_loss=t.history[-1] if t.history else None,
            )
        return Reconstruction(
            x=out.reshape(x.shape).to(device=x.device, dtype=x.dtype if torch.is_floating_point(x) else torch.float32),
            method=self.name,
            details=details,
        )


def nonlinear_attack_over_seeds(
    public_x: Tensor,
    observed: ObservedRelease,
    knowledge: AttackerKnowledge,
    *,
    seeds: Iterable[int],
    attack_batch_size: int = 256,
    **train_kwargs,
) -> list[Reconstruction]:
    """Train one U-Net per seed on public mixtures and attack ``observed`` with each.

    The paper repeats the non-linear attack over five seeds and reports mean +- std and the
    best SNR over them. ``train_kwargs`` go to :func:`train_unet_attacker` and must include
    ``tau``; ``noise_mode`` and ``valid_range`` default to ``knowledge.noise_mode`` and
    ``knowledge.valid_range`` (see :class:`UNetAttack`, which trains lazily). Each
    reconstruction's ``details["seed"]`` names its seed.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must not be empty")
    if "tau" not in train_kwargs:
        raise ValueError("train_kwargs must include tau (one U-Net is trained per tau)")
    if "seed" in train_kwargs:
        raise ValueError("pass seeds=..., not seed=")
    device = train_kwargs.pop("device", "cpu")
    results = []
    for seed in seeds:
        training = {**train_kwargs, "seed": seed}
        attack = UNetAttack(public_x=public_x, training=training, device=device, batch_size=attack_batch_size)
        results.append(attack.reconstruct(observed, knowledge))
    return results
