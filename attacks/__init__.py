"""Reconstruction attacks on singularized-mixup and InstaHide releases, and their evaluation.

The threat model is data (:mod:`attacks.threat_model`): an attack's ``reconstruct`` gets
only the :class:`ObservedRelease` (what the server received) and an explicit
:class:`AttackerKnowledge`, never the private inputs. Scoring a reconstruction against the
originals (:mod:`attacks.evaluation`, :mod:`attacks.metrics`) and the party-side LPIPS
post-filter (:mod:`attacks.lpips_filter`) are separate steps that do see the originals.

LPIPS (:mod:`attacks.lpips_metric`) is imported lazily by its module; importing this
package does not import ``lpips``.
"""

from .evaluation import ReconstructionScores, evaluate_reconstruction, reidentification_rate
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

__all__ = [
    "Attack",
    "AttackerKnowledge",
    "CarliniInstaHideAttack",
    "FilterResult",
    "InstaHideKnowledge",
    "LinearInversionAttack",
    "LpipsMetric",
    "LpipsWeightsMissing",
    "ObservedRelease",
    "Reconstruction",
    "ReconstructionScores",
    "ReleaseLike",
    "evaluate_reconstruction",
    "grant_instahide_knowledge",
    "grant_knowledge",
    "lpips_filter",
    "neighbour_precision",
    "observe",
    "psnr",
    "reidentification_rate",
    "shares_component",
    "similarity_neighbours",
    "snr_db",
    "ssim",
    "summarise",
]
