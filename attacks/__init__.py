"""Reconstruction attacks on singularized-mixup and InstaHide releases, and their evaluation.

The threat model is data (:mod:`attacks.threat_model`): an attack's ``reconstruct`` gets
only the :class:`ObservedRelease` (what the server received) and an explicit
:class:`AttackerKnowledge`, never the private inputs. Scoring a reconstruction against the
originals (:mod:`attacks.evaluation`, :mod:`attacks.metrics`) and the party-side LPIPS
post-filter (:mod:`attacks.lpips_filter`) are separate steps that do see the originals.

Every attack implements one interface, :class:`attacks.base.Attack` (``name``, the
``observes`` and ``requires`` types, ``reconstruct(observed, knowledge) -> Reconstruction``),
and is registered by name in :data:`attacks.base.ATTACKS`; importing this package registers
all four: ``"linear"`` (:mod:`attacks.linear`), ``"unet"`` (:mod:`attacks.unet`),
``"carlini-instahide"`` (:mod:`attacks.instahide`) and ``"inverting-gradients"``
(:mod:`attacks.gradient_inversion`). They share one total-variation prior
(:mod:`attacks.regularisers`) and one Adam set-up (:mod:`attacks.optim`).

LPIPS (:mod:`attacks.lpips_metric`) is imported lazily by its module; importing this
package does not import ``lpips``.
"""

from .base import ATTACKS
from .evaluation import ReconstructionScores, evaluate_reconstruction, reconstruction_scores, reidentification_rate
from .gradient_inversion import InvertingGradientsAttack
from .instahide import (
    CarliniInstaHideAttack,
    InstaHideKnowledge,
    grant_instahide_knowledge,
    neighbour_precision,
    shares_component,
    similarity_neighbours,
)
from .linear import LinearInversionAttack
from .lpips_filter import FilterResult, lpips_filter
from .lpips_metric import LpipsMetric, LpipsWeightsMissing
from .metrics import psnr, snr_db, ssim, summarise
from .threat_model import (
    Attack,
    AttackerKnowledge,
    ObservedRelease,
    Reconstruction,
    ReleaseLike,
    grant_knowledge,
    observe,
)
from .unet import UNetAttack, train_unet_attacker

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackerKnowledge",
    "CarliniInstaHideAttack",
    "FilterResult",
    "InstaHideKnowledge",
    "InvertingGradientsAttack",
    "LinearInversionAttack",
    "LpipsMetric",
    "LpipsWeightsMissing",
    "ObservedRelease",
    "Reconstruction",
    "ReconstructionScores",
    "ReleaseLike",
    "UNetAttack",
    "evaluate_reconstruction",
    "grant_instahide_knowledge",
    "grant_knowledge",
    "lpips_filter",
    "neighbour_precision",
    "observe",
    "psnr",
    "reconstruction_scores",
    "reidentification_rate",
    "shares_component",
    "similarity_neighbours",
    "snr_db",
    "ssim",
    "summarise",
    "train_unet_attacker",
]
