"""Client-side defences of the iterative strategies behind one interface (:class:`Defence`).

Adding a defence: write one module with a subclass of :class:`Defence` decorated with
``@DEFENCES.register`` and import it below (or name it in the run config as
``"package.module:Class"``).
"""

from common.defences.base import DEFENCES, Defence, LocalUpdate, get_defence
# Registration order is the order tables list them in.
from common.defences import plain  # noqa: F401, I001 - registers the defence
from common.defences import fed_augmix  # noqa: F401, I001
from common.defences import dp_mix  # noqa: F401, I001

DEFAULT_DEFENCE = "none"


def local_update(cfg, party, model, *, lr: float, proximal_mu: float, generator, server_round: int,  # noqa: ANN001
                 x=None, y=None, epochs: int | None = None, batch_size: int | None = None,  # noqa: ANN001
                 optimizer: str = "adamw") -> LocalUpdate:
    """The run's defence applied to ``model`` (in place): what the ClientApp's ``train`` does.

    ``x``, ``y``, ``epochs``, ``batch_size`` and ``optimizer`` default to the party's training
    part and the run config (AdamW); the gradient-leakage audit passes a small batch and plain
    SGD (Algorithm 1 of Fed-AugMix). ``server_round`` counts the rounds this party has
    trained, for the DP accounting (only of an update on the party's own training part).
    """
    own_rows = x is None
    return cfg.defence_spec.local_update(
        cfg, party, model, lr=lr, proximal_mu=proximal_mu, generator=generator, server_round=server_round,
        x=party.train_x if x is None else x, y=party.train_y if y is None else y,
        epochs=cfg.local_epochs if epochs is None else epochs,
        batch_size=cfg.batch_size if batch_size is None else batch_size, optimizer=optimizer, own_rows=own_rows,
    )

__all__ = ["DEFAULT_DEFENCE", "DEFENCES", "Defence", "LocalUpdate", "get_defence", "local_update"]
