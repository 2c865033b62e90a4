"""Unit tests of the classifier (common.model) and the training loops (common.training)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from common.model import MixupClassifier
from common.training import (
    cosine_lr,
    evaluate,
    proximal_term,
    soft_cross_entropy,
    train_centralized,
    train_local,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clusters(n: int, *, dim: int = 10, classes: int = 3, seed: int = 0, spread: float = 0.5):
    """Well separated Gaussian clusters: class k centred at 4 e_k."""
    g = _gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    centres = torch.zeros(classes, dim)
    centres[torch.arange(classes), torch.arange(classes)] = 4.0
    x = centres[y] + spread * torch.randn(n, dim, generator=g)
    return x, y


# --------------------------------------------------------------------------- model


def test_classifier_structure_matches_equation_9():
    model = MixupClassifier(in_dim=64, num_classes=10)
    layers = list(model.net)
    expected_types = [
        nn.Flatten,
        nn.Linear, nn.BatchNorm1d, nn.GELU, nn.Dropout,
        nn.Linear, nn.BatchNorm1d, nn.GELU, nn.Dropout,
        nn.Linear,
    ]
    assert [type(layer) for layer in layers] == expected_types
    lin1, bn1, _, do1, lin2, bn2, _, do2, lin3 = layers[1:]
    assert (lin1.in_features, lin1.out_features) == (64, 1024)
    assert bn1.num_features == 1024
    assert do1.p == 0.5
    assert (lin2.in_features, lin2.out_features) == (1024, 512)
    assert bn2.num_features == 512
    assert do2.p == 0.5
    assert (lin3.in_features, lin3.out_features) == (512, 10)
    n_params = sum(p.numel() for p in model.parameters())
    expected = (64 * 1024 + 1024) + 2 * 1024 + (1024 * 512 + 512) + 2 * 512 + (512 * 10 + 10)
    assert n_params == expected


def test_classifier_output_shape_and_flatten():
    torch.manual_seed(0)
    model = MixupClassifier(in_dim=64, num_classes=7)
    out = model(torch.randn(5, 1, 8, 8))
    assert out.shape == (5, 7)
    model.eval()
    assert model(torch.randn(3, 64, generator=_gen(1))).shape == (3, 7)


def test_classifier_rejects_bad_sizes():
    with pytest.raises(ValueError):
        MixupClassifier(in_dim=0, num_classes=3)
    with pytest.raises(ValueError):
        MixupClassifier(in_dim=4, num_classes=1)


# --------------------------------------------------------------------------- losses


def test_soft_cross_entropy_equals_cross_entropy_for_one_hot():
    logits = torch.randn(16, 5, generator=_gen(2), dtype=torch.float64)
    y = torch.randint(0, 5, (16,), generator=_gen(3))
    expected = F.cross_entropy(logits, y)
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(y, 5).double()), expected)
    torch.testing.assert_close(soft_cross_entropy(logits, y), expected)


def test_soft_cross_entropy_hand_value():
    # Row 1: logits (0, 0, ln 2) -> softmax (1/4, 1/4, 1/2); target (1/2, 0, 1/2):
    #        loss = -(0.5 ln(1/4) + 0.5 ln(1/2)) = 1.5 ln 2.
    # Row 2: logits (ln 3, 0, 0) -> softmax (3/5, 1/5, 1/5); target (0.2, 0.3, 0.5):
    #        loss = -(0.2 ln 0.6 + 0.8 ln 0.2).
    logits = torch.tensor([[0.0, 0.0, math.log(2)], [math.log(3), 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]], dtype=torch.float64)
    row1 = 1.5 * math.log(2)
    row2 = -(0.2 * math.log(0.6) + 0.8 * math.log(0.2))
    assert float(soft_cross_entropy(logits, target)) == pytest.approx((row1 + row2) / 2, rel=1e-12)


def test_proximal_term_is_half_squared_distance():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.copy_(torch.tensor([3.0]))
    glob = [torch.tensor([[0.0, 0.0]]), torch.tensor([1.0])]
    # Squared differences: 1 + 4 + 4 = 9 -> 0.5 * 9 = 4.5 (a plain norm would give 0.5 * 3 = 1.5).
    value = proximal_term(model, glob)
    assert float(value.detach()) == pytest.approx(4.5, rel=1e-7)
    value.backward()
    torch.testing.assert_close(model.weight.grad, torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(model.bias.grad, torch.tensor([2.0]))
    # At the global point it vanishes.
    with torch.no_grad():
        assert float(proximal_term(model, [p.detach().clone() for p in model.parameters()])) == 0.0


def test_proximal_term_gradient_random_model():
    torch.manual_seed(0)
    model = MixupClassifier(in_dim=6, num_classes=3)
    glob = [p.detach().clone() + 0.1 * torch.randn(p.shape, generator=_gen(i)) for i, p in enumerate(model.parameters())]
    value = proximal_term(model, glob)
    expected = 0.5 * sum(float(((p.detach() - g) ** 2).sum()) for p, g in zip(model.parameters(), glob, strict=True))
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    value.backward()
    for p, g in zip(model.parameters(), glob, strict=True):
        torch.testing.assert_close(p.grad, p.detach() - g)


def test_proximal_term_skips_frozen_and_checks_lengths():
    model = nn.Linear(2, 1)
    model.bias.requires_grad_(False)
    assert float(proximal_term(model, [model.weight.detach() + 1.0]).detach()) == pytest.approx(0.5 * 2)
    with pytest.raises(ValueError):
        proximal_term(model, [model.weight.detach(), model.bias.detach()])


# --------------------------------------------------------------------------- schedule


def test_cosine_lr_values():
    assert cosine_lr(0.1, 0, 100) == pytest.approx(0.1)
    assert cosine_lr(0.1, 50, 100) == pytest.approx(0.05)
    assert cosine_lr(0.1, 100, 100) == pytest.approx(0.0, abs=1e-15)
    assert cosine_lr(0.1, 25, 100) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(0.1, 250, 100) == pytest.approx(0.0, abs=1e-15)  # clamped past the end
    assert cosine_lr(0.1, 5, 0) == 0.1
    values = [cosine_lr(1.0, s, 40) for s in range(41)]
    assert all(a >= b for a, b in zip(values, values[1:]))


# --------------------------------------------------------------------------- local training


def _distance_after_local(mu: float) -> float:
    x, y = _clusters(256, dim=8, seed=4)
    torch.manual_seed(5)
    model = MixupClassifier(in_dim=8, num_classes=3)
    start = [p.detach().clone() for p in model.parameters()]
    loss = train_local(model, x, y, epochs=3, lr=1e-2, generator=_gen(6), proximal_mu=mu, batch_size=32)
    assert math.isfinite(loss)
    with torch.no_grad():
        return float(proximal_term(model, start))


def test_train_local_proximal_term_limits_drift():
    free = _distance_after_local(0.0)
    prox = _distance_after_local(50.0)
    assert free > 0
    assert prox < 0.5 * free


def test_train_local_deterministic():
    assert _distance_after_local(0.1) == _distance_after_local(0.1)


def test_train_local_reduces_loss():
    x, y = _clusters(256, dim=8, seed=7)
    torch.manual_seed(8)
    model = MixupClassifier(in_dim=8, num_classes=3)
    before, _ = evaluate(model, x, y)
    train_local(model, x, y, epochs=2, lr=1e-3, generator=_gen(9), batch_size=32)
    after, acc = evaluate(model, x, y)
    assert after < before
    assert acc > 0.9


# --------------------------------------------------------------------------- centralised training


def test_train_centralized_learns_and_keeps_best_epoch():
    x, y = _clusters(600, seed=10)
    vx, vy = _clusters(200, seed=11)
    torch.manual_seed(12)
    model = MixupClassifier(in_dim=10, num_classes=3)
    seen = []
    result = train_centralized(
        model, x, y, val_x=vx, val_y=vy, epochs=4, generator=_gen(13), batch_size=64, on_epoch=seen.append
    )
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert seen == result.history
    losses = [r.val_loss for r in result.history]
    assert result.best_epoch == 1 + min(range(4), key=losses.__getitem__)
    assert result.best_val_loss == min(losses)
    val_loss, val_acc = evaluate(model, vx, vy)
    assert val_loss == pytest.approx(result.best_val_loss, rel=1e-6)
    assert val_acc >= 0.95
    assert result.history[result.best_epoch - 1].val_accuracy == pytest.approx(val_acc)
    # The reported lr follows the cosine schedule down to 0 at the end.
    assert result.history[-1].lr == pytest.approx(0.0, abs=1e-12)


def test_train_centralized_restores_earlier_epoch():
    # Validation labels are a cyclic relabelling of the training task: the better the model
    # fits the training labels, the worse the validation loss, so the first epoch is best.
    x, y = _clusters(600, seed=20)
    vx, vy = _clusters(200, seed=21)
    vy_wrong = (vy + 1) % 3
    torch.manual_seed(22)
    model = MixupClassifier(in_dim=10, num_classes=3)
    result = train_centralized(model, x, y, val_x=vx, val_y=vy_wrong, epochs=4, generator=_gen(23), batch_size=64)
    losses = [r.val_loss for r in result.history]
    assert result.best_epoch == 1 + min(range(4), key=losses.__getitem__)
    assert result.best_epoch < 4
    assert losses[-1] > result.best_val_loss
    # The returned model holds the selected weights, not the last ones.
    selected_loss, _ = evaluate(model, vx, vy_wrong)
    assert selected_loss == pytest.approx(result.best_val_loss, rel=1e-6)
    assert selected_loss != pytest.approx(losses[-1], rel=1e-3)
    # last_state holds the final weights.
    model.load_state_dict(result.last_state)
    last_loss, _ = evaluate(model, vx, vy_wrong)
    assert last_loss == pytest.approx(losses[-1], rel=1e-6)


def test_train_centralized_soft_labels_and_bad_epochs():
    x, y = _clusters(300, seed=30)
    soft = 0.9 * F.one_hot(y, 3).float() + 0.1 / 3
    torch.manual_seed(31)
    model = MixupClassifier(in_dim=10, num_classes=3)
    result = train_centralized(model, x, soft, val_x=x[:100], val_y=y[:100], epochs=2, generator=_gen(32), batch_size=64)
    assert len(result.history) == 2
    _, acc = evaluate(model, x, soft)  # accuracy against the arg-max of soft labels
    assert acc > 0.9
    with pytest.raises(ValueError):
        train_centralized(model, x, y, val_x=x, val_y=y, epochs=0, generator=_gen(0))


def test_evaluate_hand_computed():
    # A fixed linear "model": logits = x; loss and accuracy by hand.
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[0.0, math.log(3)], [0.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([1, 0, 1])
    # p(1 | x0) = 3/4; p(0 | x1) = 1/2; p(1 | x2) = 1 / (1 + e^2). Accuracy: x0 right, x1 tie
    # (argmax -> 0, right), x2 wrong -> 2/3.
    expected = -(math.log(0.75) + math.log(0.5) + math.log(1 / (1 + math.e**2))) / 3
    loss, acc = evaluate(model, x, y, batch_size=2)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert acc == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        evaluate(model, x[:0], y[:0])


def test_train_centralized_row_order_makes_batches_independent_of_storage_order():
    x, y = _clusters(300, seed=20)
    vx, vy = _clusters(100, seed=21)
    shuffle = torch.randperm(300, generator=_gen(22))
    states = []
    for data_x, data_y, order in ((x, y, None), (x[shuffle], y[shuffle], torch.argsort(shuffle))):
        torch.manual_seed(23)
        model = MixupClassifier(in_dim=10, num_classes=3)
        train_centralized(model, data_x, data_y, val_x=vx, val_y=vy, epochs=2, generator=_gen(24),
                          batch_size=64, row_order=order)
        states.append(model.state_dict())
    # Stored shuffled but read through row_order: the very same batches, the very same weights.
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_central_trainer_keeps_one_schedule_across_epochs_of_fresh_data():
    """The one-shot strategy's per-epoch release: each epoch trains on other rows, the cosine
    schedule spans the first epoch's step count times the epochs and ends at 0, and a loop of
    train_epoch on the same rows is exactly train_centralized."""
    from common.training import CentralTrainer

    x, y = _clusters(200, seed=30)
    vx, vy = _clusters(100, seed=31)
    torch.manual_seed(0)
    model = MixupClassifier(in_dim=10, num_classes=3)
    trainer = CentralTrainer(model, rows=200, epochs=4, generator=_gen(32), batch_size=64)
    assert trainer.total_steps == 4 * 4  # 200 rows in batches of 64: 3 full batches and one of 8
    for epoch in range(1, 5):
        fx, fy = _clusters(200, seed=100 + epoch)
        trainer.train_epoch(fx, fy)
    assert trainer.step == trainer.total_steps
    assert trainer.lr == pytest.approx(0.0, abs=1e-12)
    # The same rows every epoch through the trainer == train_centralized, weight for weight.
    torch.manual_seed(1)
    b = MixupClassifier(in_dim=10, num_classes=3)
    result = train_centralized(b, x, y, val_x=vx, val_y=vy, epochs=3, generator=_gen(5), batch_size=64)
    torch.manual_seed(1)
    c = MixupClassifier(in_dim=10, num_classes=3)
    loop = CentralTrainer(c, rows=200, epochs=3, generator=_gen(5), batch_size=64)
    for _ in range(3):
        loop.train_epoch(x, y)
    for key, value in c.state_dict().items():
        assert torch.equal(value, result.last_state[key]), key


