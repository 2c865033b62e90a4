"""Reconstruction attacks on singularized-mixup releases, and their evaluation.

The threat model is data (:mod:`attacks.threat_model`): an attack's ``reconstruct`` gets
only the :class:`ObservedRelease` (what the server received) and an explicit
:class:`AttackerKnowledge`, never the private inputs. Scoring a reconstruction against the
originals (:mod:`attacks.evaluation`, :mod:`attacks.metrics`) and the party-side LPIPS
post-filter (:mod:`attacks.lpips_filter`) are separate steps that do see the originals.

LPIPS (:mod:`attacks.lpips_metric`) is imported lazily by its module; importing this
package does not import ``lpips``.
"""

from .evaluation import ReconstructionScores, evaluate_reconstruction, reidentification_rate
from .linear import LinearInversionAttack
from .lpips_filter import FilterResult, lpips_filter
from .lpips_metric import LpipsMetric, LpipsWeightsMissing
from .metrics import psnr, snr_db, ssim, summarise
from .threat_model import (
    Attack,
    AttackerKnowledge,
    ObservedRelease,
    Reconstruction,
    grant_knowledge,
    observe,
)

__all__ = [
    "Attack",
    "AttackerKnowledge",
    "FilterResult",
    "LinearInversionAttack",
    "LpipsMetric",
    "LpipsWeightsMissing",
    "ObservedRelease",
    "Reconstruction",
    "ReconstructionScores",
    "evaluate_reconstruction",
    "grant_knowledge",
    "lpips_filter",
    "observe",
    "psnr",
    "reidentification_rate",
    "snr_db",
    "ssim",
    "summarise",
]
