r"""Membership inference on a released model: was a given record in some party's training data?

Both protocols end with one global model that every party receives, so the same attacks
measure both. The threat model is data, as for the reconstruction attacks: an attack sees the
released model (:class:`ObservedModel`) and an explicit :class:`MembershipKnowledge` (the
candidate records whose membership it tests and, for the likelihood-ratio attack, reference
models it trained itself on public data disjoint from every party), never which candidates are
members. Scoring against the truth is a separate step (:func:`membership_metrics`).

Attacks
-------
* :class:`LossThreshold` (Yeom et al., 2018): score ``-CE(f(x), y)``; members tend to have a
  lower loss.
* :class:`OfflineLiRA` (Carlini et al., 2022, offline variant): with the logit-scaled confidence
  ``phi(f, x, y) = log p_y - log(1 - p_y)``, the reference ("OUT") models give a Gaussian
  ``N(mu_x, sigma^2)`` of what ``phi`` looks like when ``x`` was not trained on; the score is
  the one-sided z statistic ``(phi(f, x, y) - mu_x) / sigma``. ``mu_x`` is per candidate;
  ``sigma`` is per candidate with many reference models and the pooled ("fixed variance")
  estimate with few, as the paper recommends.

Caveat: the reference models here are trained with the platform's clean central recipe, the
attacker's best guess of a protocol it does not know; against one-shot or DP training they are
a weaker guess, so the measured leakage is a lower bound for every method alike.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from common.registry import Registry

__all__ = [
    "MEMBERSHIP_ATTACKS", "LossThreshold", "MembershipAttack", "MembershipKnowledge", "MembershipScores",
    "ObservedModel", "OfflineLiRA", "lira_scores", "logit_confidence", "low_fpr_for", "membership_metrics",
    "reference_states",
]

# Below this many reference models a per-candidate variance is too noisy (Carlini et al. use
# the pooled variance with fewer than 64 OUT models).
_PER_EXAMPLE_VARIANCE_FROM = 64


@dataclass(frozen=True)
class ObservedModel:
    """The released model: weights and the constructor that reads them (the architecture is
    public: every party runs it)."""

    state: Mapping[str, torch.Tensor]
    build: Any  # callable() -> nn.Module with the released architecture

    def model(self) -> nn.Module:
        model = self.build()
        model.load_state_dict(dict(self.state))
        return model.eval()


@dataclass(frozen=True)
class MembershipKnowledge:
    """What the attacker holds besides the model: candidate records (inputs and labels) and
    reference weights it trained on public data (none for the loss attack)."""

    candidates_x: torch.Tensor
    candidates_y: torch.Tensor
    reference_states: tuple[Mapping[str, torch.Tensor], ...] = ()


@dataclass(frozen=True)
class MembershipScores:
    """One score per candidate, higher meaning "more likely a member"."""

    scores: torch.Tensor
    method: str
    details: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def logit_confidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """``phi = log p_y - log(1 - p_y)`` per row, computed stably from the logits as
    ``z_y - logsumexp_{j != y} z_j`` (float64)."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start:start + batch_size].float()).double()
        yb = y[start:start + batch_size].long()
        true = logits.gather(1, yb[:, None]).squeeze(1)
        others = logits.scatter(1, yb[:, None], -math.inf)
        out.append(true - torch.logsumexp(others, dim=1))
    return torch.cat(out)


class MembershipAttack(ABC):
    """A membership inference attack: ``score(observed, knowledge) -> MembershipScores``."""

    name: ClassVar[str]
    needs_reference_models: ClassVar[bool] = False

    @abstractmethod
    def score(self, observed: ObservedModel, knowledge: MembershipKnowledge) -> MembershipScores:
        """Scores of ``knowledge``'s candidates under the released model."""


MEMBERSHIP_ATTACKS: Registry[MembershipAttack] = Registry("membership attack")


@MEMBERSHIP_ATTACKS.register
class LossThreshold(MembershipAttack):
    """Yeom et al. (2018): the negative cross-entropy of each candidate under the model."""

    name = "loss-threshold"

    @torch.no_grad()
    def score(self, observed: ObservedModel, knowledge: MembershipKnowledge) -> MembershipScores:
        model = observed.model()
        logits = model(knowledge.candidates_x.float()).double()
        loss = nn.functional.cross_entropy(logits, knowledge.candidates_y.long(), reduction="none")
        return MembershipScores(scores=-loss, method=self.name)


@MEMBERSHIP_ATTACKS.register
class OfflineLiRA(MembershipAttack):
    """Carlini et al. (2022), offline: z score of the model's logit-scaled confidence against
    the reference models' (which never trained on any candidate)."""

    name = "lira-offline"
    needs_reference_models = True

    def score(self, observed: ObservedModel, knowledge: MembershipKnowledge) -> MembershipScores:
        if len(knowledge.reference_states) < 2:
            raise ValueError("offline LiRA needs at least 2 reference models (MembershipKnowledge.reference_states)")
        target = logit_confidence(observed.model(), knowledge.candidates_x, knowledge.candidates_y)
        reference = torch.stack([
            logit_confidence(ObservedModel(state=state, build=observed.build).model(), knowledge.candidates_x,
                             knowledge.candidates_y)
            for state in knowledge.reference_states
        ])
        return MembershipScores(scores=lira_scores(target, reference), method=self.name,
                                details={"reference_models": int(reference.shape[0])})


def lira_scores(target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``(phi - mu_x) / sigma``: ``reference`` is ``(K, n)`` confidences of K OUT models.

    ``sigma`` is each candidate's own std when ``K >= 64``, else the pooled std over every
    candidate (Carlini et al.'s "fixed variance" for few reference models).
    """
    mu = reference.mean(dim=0)
    if reference.shape[0] >= _PER_EXAMPLE_VARIANCE_FROM:
        sigma = reference.std(dim=0, correction=1)
    else:
        sigma = (reference - mu).pow(2).sum().div(reference.numel() - reference.shape[1]).sqrt().expand_as(mu)
    return (target - mu) / sigma.clamp_min(1e-12)


def low_fpr_for(num_nonmembers: int, *, min_false_positives: int = 10) -> float:
    """The low false-positive rate a TPR is reported at: the smallest of 0.1 %, 1 %, 5 %, 10 %
    at which at least ``min_false_positives`` non-members lie above the threshold, so the TPR
    is not decided by one or two points."""
    for rate in (0.001, 0.01, 0.05, 0.1):
        if rate * num_nonmembers >= min_false_positives:
            return rate
    return 0.1


def membership_metrics(scores: torch.Tensor, is_member: torch.Tensor, *, fpr: float | None = None) -> dict[str, float]:
    """AUC and the TPR at a low FPR of ``scores`` (higher = member) against the truth.

    The TPR at ``fpr`` is the share of members scoring above the threshold that at most
    ``fpr`` of the non-members exceed.
    """
    from sklearn.metrics import roc_auc_score

    s = scores.detach().double().cpu().numpy()
    truth = is_member.detach().cpu().numpy().astype(bool)
    members, nonmembers = s[truth], s[~truth]
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError("membership metrics need members and non-members")
    rate = low_fpr_for(nonmembers.size) if fpr is None else fpr
    # Threshold: the (1 - rate) quantile of non-member scores, strictly exceeded.
    allowed = int(math.floor(rate * nonmembers.size))
    ordered = np.sort(nonmembers)[::-1]
    threshold = ordered[allowed] if allowed < ordered.size else -np.inf
    return {
        "auc": float(roc_auc_score(truth, s)),
        "tpr_at_low_fpr": float((members > threshold).mean()),
        "low_fpr": rate,
        "members": int(members.size),
        "nonmembers": int(nonmembers.size),
    }


def reference_states(train_fn, public_x: torch.Tensor, public_y: torch.Tensor, *, count: int,  # noqa: ANN001
                     seed: int) -> tuple[Mapping[str, torch.Tensor], ...]:
    """``count`` reference models, each ``train_fn(x, y, seed)`` on a random half of the
    public rows (the attacker's own data, disjoint from every party)."""
    gen = torch.Generator().manual_seed(seed)
    states = []
    for k in range(count):
        half = torch.randperm(public_x.shape[0], generator=gen)[: public_x.shape[0] // 2]
        states.append(train_fn(public_x[half], public_y[half], seed * 1000 + k))
    return tuple(states)
