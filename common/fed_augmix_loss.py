"""Fed-AugMix's client loss (Algorithm 1, lines 4-9): cross-entropy plus lambda times the
Jensen-Shannon consistency of the predictions on an image and two AugMix views of it::

    L = L_c(p_orig, y) + lambda * D_JS(p_orig; p_augmix1; p_augmix2)                          (5)

(equation 6 for D_JS), with lambda from the loss-scaling rule of section IV-E.
:class:`FedAugMixObjective` is that loss as a :data:`common.training.LocalObjective`; the
AugMix draws come from :mod:`common.augmix`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import torch
from torch import nn

from .augmix import _check_augmix_arguments, augmix
from .training import soft_cross_entropy

__all__ = ["FedAugMixObjective", "LossScaling", "jensen_shannon_consistency"]


# --------------------------------------------------------------------------- JS consistency


def jensen_shannon_consistency(
    logits_orig: torch.Tensor, logits_aug1: torch.Tensor, logits_aug2: torch.Tensor
) -> torch.Tensor:
    """Jensen-Shannon divergence of three predictive distributions (equation 6), batch mean.

    With ``p_k = softmax(logits_k)`` per sample and ``q = (p_orig + p_aug1 + p_aug2) / 3``::

        D_JS = (KL(p_orig || q) + KL(p_aug1 || q) + KL(p_aug2 || q)) / 3,
        KL(p || q) = sum_c p_c (log p_c - log q_c)

    per sample, averaged over the batch. ``0 <= D_JS <= log 3`` (and ``<= log C`` for ``C``
    classes, since ``D_JS = H(q) - mean_k H(p_k)``); it is 0 exactly when the three
    distributions agree.

    Numerics: ``log p_k`` come from ``log_softmax``, and ``log q`` from ``logsumexp`` over the
    three ``log p_k`` minus ``log 3``, so no probability is exponentiated and logged again;
    ``log q`` is then clamped at the smallest normal float so that a class every
    distribution gives zero mass cannot produce ``-inf``. Each term ``log p_k - log q`` is
    at most ``log 3``. Differentiable in all three inputs.

    Parameters
    ----------
    logits_orig, logits_aug1, logits_aug2 : torch.Tensor
        ``(N, C)`` logits of the original images and their two AugMix views.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    shapes = {tuple(t.shape) for t in (logits_orig, logits_aug1, logits_aug2)}
    if len(shapes) != 1 or logits_orig.ndim != 2:
        raise ValueError(
            "logits_orig, logits_aug1 and logits_aug2 must all be (N, C) of one shape, got "
            f"{tuple(logits_orig.shape)}, {tuple(logits_aug1.shape)}, {tuple(logits_aug2.shape)}"
        )
    if logits_orig.shape[0] == 0:
        raise ValueError("logits_orig is an empty batch")
    log_p = torch.stack([torch.log_softmax(t, dim=1) for t in (logits_orig, logits_aug1, logits_aug2)])
    log_q = torch.logsumexp(log_p, dim=0) - math.log(3.0)
    log_q = log_q.clamp_min(math.log(torch.finfo(log_q.dtype).tiny))
    kl = (log_p.exp() * (log_p - log_q.unsqueeze(0))).sum(dim=2)  # (3, N)
    return kl.mean(dim=0).mean()


# --------------------------------------------------------------------------- loss scaling


@dataclass(frozen=True)
class LossScaling:
    """Fed-AugMix's loss-scaling rule (section IV-E) for the weight ``lambda`` of ``D_JS``::

        lambda = large_weight   if L_c > scale * D_JS
                 base_weight    otherwise

    Early in training (an untrained model: ``L_c`` near ``1e5 D_JS`` in the paper) the large
    weight makes the consistency term, and the augmentation noise it carries into the
    gradient, big enough to hinder gradient-leakage attacks; once ``D_JS`` is no longer
    negligible beside ``L_c`` the weight falls back so that classification drives training.

    The paper says that otherwise "lambda retains its previous value", and also that lambda
    is *reduced* in later stages. Read literally (sticky), lambda could never come back down
    once it had been raised, contradicting the second statement; "previous value" is read
    here as the configured base lambda, so the rule is re-evaluated at every step.

    Attributes
    ----------
    base_weight : float
        lambda (50 in section V).
    large_weight : float
        LargeVal (5e3).
    scale : float
        Scale (5e4), the condition's sensitivity.
    """

    base_weight: float = 50.0
    large_weight: float = 5e3
    scale: float = 5e4

    def __post_init__(self) -> None:
        # A zero weight is a meaningful ablation (no consistency term); a negative one would
        # reward divergence.
        for name in ("base_weight", "large_weight"):
            value = getattr(self, name)
            if not (isinstance(value, Real) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if not (isinstance(self.scale, Real) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {self.scale!r}")

    @classmethod
    def constant(cls, weight: float) -> LossScaling:
        """A constant ``lambda = weight``: ``large_weight == base_weight``, so the rule never
        changes anything."""
        return cls(base_weight=weight, large_weight=weight)

    @property
    def is_constant(self) -> bool:
        return self.large_weight == self.base_weight

    def uses_large_weight(self, *, classification_loss: float, divergence: float) -> bool:
        """Whether the rule raises lambda: ``L_c > scale * D_JS`` and the weights differ."""
        return (not self.is_constant) and classification_loss > self.scale * divergence

    def weight(self, *, classification_loss: float, divergence: float) -> float:
        """``large_weight`` if ``classification_loss > scale * divergence``, else ``base_weight``."""
        if self.uses_large_weight(classification_loss=classification_loss, divergence=divergence):
            return float(self.large_weight)
        return float(self.base_weight)


# --------------------------------------------------------------------------- objective


class FedAugMixObjective:
    """Fed-AugMix's client loss (Algorithm 1, lines 4-9) as a ``LocalObjective``::

        x_1 = AugMix(x),  x_2 = AugMix(x)                  (independent draws, no gradient)
        o, o_1, o_2 = split(f(w, cat[x, x_1, x_2]))
        L = soft_CE(o, y) + lambda * D_JS(o; o_1; o_2)     (5)

    with ``lambda = scaling.weight(classification_loss=L_c, divergence=D_JS)`` (section IV-E).
    The three views go through the model in one forward pass, as in the AugMix reference
    code, so that BatchNorm normalises them with shared batch statistics. ``y`` may be
    class indices or soft labels.

    Parameters
    ----------
    sample_shape : tuple of int
        ``(C, H, W)`` of one image; a batch ``xb`` may hold each sample flat (digits rows are
        ``(B, 64)`` with ``sample_shape = (1, 8, 8)``) or in any shape with that many values.
    severity, generator, width, max_depth, alpha, value_range
        As for :func:`augmix`; ``generator`` is consumed by every call.
    scaling : LossScaling
        The lambda rule; ``LossScaling.constant(w)`` for a fixed weight.

    Attributes
    ----------
    steps : int
        Batches seen.
    large_weight_steps : int
        Batches on which the rule raised lambda to ``scaling.large_weight``.
    last_weight, last_divergence, last_classification_loss : float
        lambda, ``D_JS`` and ``L_c`` of the latest batch (``nan`` before the first).
    """

    def __init__(
        self,
        *,
        sample_shape: tuple[int, ...],
        severity: float,
        generator: torch.Generator,
        scaling: LossScaling = LossScaling(),
        width: int = 3,
        max_depth: int = 3,
        alpha: float = 1.0,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        shape = tuple(sample_shape)
        if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, Integral) or d < 1 for d in shape):
            raise ValueError(f"sample_shape must be (C, H, W) of positive integers, got {sample_shape!r}")
        shape = tuple(int(d) for d in shape)
        _check_augmix_arguments(
            severity=severity, width=width, max_depth=max_depth, alpha=alpha, value_range=value_range
        )
        if not isinstance(scaling, LossScaling):
            raise ValueError(f"scaling must be a LossScaling, got {type(scaling).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
        self.sample_shape = shape
        self.severity = severity
        self.generator = generator
        self.scaling = scaling
        self.width = width
        self.max_depth = max_depth
        self.alpha = alpha
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.steps = 0
        self.large_weight_steps = 0
        self.last_weight = math.nan
        self.last_divergence = math.nan
        self.last_classification_loss = math.nan

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        return augmix(
            images,
            severity=self.severity,
            generator=self.generator,
            width=self.width,
            max_depth=self.max_depth,
            alpha=self.alpha,
            value_range=self.value_range,
        )

    def __call__(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        per_sample = math.prod(self.sample_shape)
        if xb.ndim < 1 or xb.shape[0] == 0 or math.prod(xb.shape[1:]) != per_sample:
            raise ValueError(
                f"xb of shape {tuple(xb.shape)} does not hold samples of sample_shape "
                f"{self.sample_shape} ({per_sample} values each)"
            )
        b = xb.shape[0]
        with torch.no_grad():
            images = xb.detach().reshape(b, *self.sample_shape)
            aug1 = self._augment(images).reshape(xb.shape)
            aug2 = self._augment(images).reshape(xb.shape)
        logits = model(torch.cat([xb, aug1, aug2]))
        logits_orig, logits_aug1, logits_aug2 = logits.split(b)
        classification = soft_cross_entropy(logits_orig, yb)
        divergence = jensen_shannon_consistency(logits_orig, logits_aug1, logits_aug2)
        l_c, d_js = classification.item(), divergence.item()
        large = self.scaling.uses_large_weight(classification_loss=l_c, divergence=d_js)
        weight = self.scaling.weight(classification_loss=l_c, divergence=d_js)
        self.steps += 1
        self.large_weight_steps += int(large)
        self.last_weight = weight
        self.last_divergence = d_js
        self.last_classification_loss = l_c
        return classification + weight * divergence

    def summary(self) -> dict[str, float]:
        """Counters for reporting: ``steps``, ``large_weight_steps``, ``large_weight_share``
        (their ratio, 0 before the first step), ``last_weight``, ``last_divergence``,
        ``last_classification_loss``."""
        return {
            "steps": float(self.steps),
            "large_weight_steps": float(self.large_weight_steps),
            "large_weight_share": self.large_weight_steps / self.steps if self.steps else 0.0,
            "last_weight": self.last_weight,
            "last_divergence": self.last_divergence,
            "last_classification_loss": self.last_classification_loss,
        }
