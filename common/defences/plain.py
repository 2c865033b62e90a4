"""No defence: the plain FedProx / FedAvg local update (:func:`common.training.train_local`)."""

from __future__ import annotations

from common.defences.base import DEFENCES, Defence, LocalUpdate
from common.training import train_local

__all__ = ["Plain"]


@DEFENCES.register
class Plain(Defence):
    """Minimise the soft cross-entropy plus ``mu`` times FedProx's proximal term."""

    name = "none"
    label = "plain"
    plain = True

    def local_update(self, cfg, party, model, *, lr, proximal_mu, generator, server_round, x, y, epochs,
                     batch_size, optimizer, own_rows) -> LocalUpdate:  # noqa: ANN001
        loss = train_local(
            model, x, y, epochs=epochs, lr=lr, generator=generator, proximal_mu=proximal_mu,
            batch_size=batch_size, weight_decay=cfg.weight_decay, optimizer=optimizer,
        )
        return LocalUpdate(train_loss=loss)
