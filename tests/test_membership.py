"""Membership inference: the loss attack and offline LiRA find a memorising model's members
and nothing in an untrained one; LiRA's scores are the Gaussian z scores computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attacks.membership import (
    LossThreshold,
    MembershipKnowledge,
    ObservedModel,
    OfflineLiRA,
    lira_scores,
    logit_confidence,
    low_fpr_for,
    membership_metrics,
    reference_states,
)

DIM, CLASSES = 20, 5


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, CLASSES))


def _fit(x: torch.Tensor, y: torch.Tensor, seed: int, *, steps: int = 400) -> dict:
    model = _mlp(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(400, DIM, generator=gen)
    y = torch.randint(0, CLASSES, (400,), generator=gen)  # random labels: only memorisation fits them
    return x, y


def test_a_memorising_model_gives_its_members_away_and_an_untrained_one_nothing(data):
    x, y = data
    members = slice(0, 30)  # the other 370 rows are non-members
    memorised = ObservedModel(state=_fit(x[members], y[members], seed=3), build=_mlp)
    candidates = MembershipKnowledge(candidates_x=x, candidates_y=y)
    truth = torch.zeros(400, dtype=torch.bool)
    truth[members] = True
    fit = membership_metrics(LossThreshold().score(memorised, candidates).scores, truth)
    assert fit["auc"] > 0.97 and fit["tpr_at_low_fpr"] > 0.8
    untrained = ObservedModel(state=_mlp(7).state_dict(), build=_mlp)
    blind = membership_metrics(LossThreshold().score(untrained, candidates).scores, truth)
    assert abs(blind["auc"] - 0.5) < 0.12
    # Offline LiRA with reference models trained on disjoint "public" rows of the same law.
    public_x = torch.randn(200, DIM, generator=torch.Generator().manual_seed(9))
    public_y = torch.randint(0, CLASSES, (200,), generator=torch.Generator().manual_seed(10))
    refs = reference_states(lambda a, b, s: _fit(a, b, s, steps=200), public_x, public_y, count=8, seed=0)
    lira = OfflineLiRA().score(memorised, MembershipKnowledge(candidates_x=x, candidates_y=y, reference_states=refs))
    assert membership_metrics(lira.scores, truth)["auc"] > 0.95 and lira.details["reference_models"] == 8


def test_lira_scores_are_the_gaussian_z_scores_by_hand():
    target = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    reference = torch.tensor([[0.0, -2.0, 1.0], [1.0, 0.0, 0.0], [2.0, -1.0, 2.0]], dtype=torch.float64)
    mu = [1.0, -1.0, 1.0]
    # Few reference models: one pooled variance, sum of squared deviations / (K n - n).
    pooled = math.sqrt(((1 + 0 + 1) + (1 + 1 + 0) + (0 + 1 + 1)) / (9 - 3))
    expected = [(t - m) / pooled for t, m in zip(target.tolist(), mu)]
    assert lira_scores(target, reference).tolist() == pytest.approx(expected)
    # Many reference models: each candidate's own standard deviation.
    many = torch.cat([reference] * 22)  # 66 >= 64 models
    per = [torch.std(many[:, i], correction=1).item() for i in range(3)]
    assert lira_scores(target, many).tolist() == pytest.approx([(t - m) / s for t, m, s in zip(target.tolist(), mu, per)])


def test_logit_confidence_is_log_odds_of_the_true_class():
    model = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([[2.0, 1.0]])
    p = torch.softmax(model(x).double(), dim=1)[0]
    assert logit_confidence(model, x, torch.tensor([0])).item() == pytest.approx(math.log(p[0] / (1 - p[0])))


def test_the_low_fpr_keeps_at_least_ten_false_positives_and_the_metrics_are_exact():
    assert low_fpr_for(359) == 0.05 and low_fpr_for(10_000) == 0.001 and low_fpr_for(50) == 0.1
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.75])
    truth = torch.tensor([True, True, True, False, False, False, False])
    metrics = membership_metrics(scores, truth, fpr=0.25)
    # One of 4 non-members (0.75) may be above the threshold: 0.3 is the cut, all 3 members above.
    assert metrics["auc"] == pytest.approx(11 / 12) and metrics["tpr_at_low_fpr"] == 1.0
    assert (metrics["members"], metrics["nonmembers"]) == (3, 4)
