r"""The Adam set-up every attack shares: the optimiser, signed steps, step-wise decay, projection.

All four attacks fit their estimate with Adam (Kingma & Ba): with gradient ``g_t``,

.. math::

    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \quad
    x_t = x_{t-1} - \eta_t \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon},

``beta = (0.9, 0.999)``, ``epsilon = 1e-8`` (PyTorch's defaults). The variants they use:

* **fused kernel** (:func:`adam` with ``fused=True``): the same update in one kernel, several
  times faster on the large full-batch problems of the linear and InstaHide attacks; falls
  back to the default implementation where the build has none. The U-Net and Inverting
  Gradients keep PyTorch's default implementation (``fused=None``): the fused kernel rounds
  differently, and their committed results were made without it.
* **signed gradients** (Inverting Gradients, Geiping et al.'s default): ``g_t`` is replaced by
  ``sgn(g_t)``, which makes the step size independent of the cosine loss's scale.
* **step-wise decay** (Inverting Gradients): ``eta_t = eta * 0.1^j`` after the ``j``-th of the
  milestones at 3/8, 5/8 and 7/8 of the iterations (:func:`step_decay`).
* **projection** onto the attacker's known valid range after every step (``x.clamp_``).

:class:`ProjectedAdam` bundles the four for one tensor. The functions only ever see the
attacker's estimate and its gradient.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["STEP_DECAY_FRACTIONS", "ProjectedAdam", "adam", "step_decay", "step_decay_milestones"]

# Inverting Gradients' schedule: lr divided by 10 at these fractions of the iterations.
STEP_DECAY_FRACTIONS = (3 / 8, 5 / 8, 7 / 8)


def adam(params: Iterable[torch.Tensor] | torch.Tensor, *, lr: float, fused: bool | None = None) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr=lr)``; with ``fused=True`` the fused kernel when available.

    ``fused=None`` passes no ``fused`` argument at all, so PyTorch picks its default
    implementation exactly as ``torch.optim.Adam(params, lr=lr)`` does (``fused=False``
    would also switch off the default ``foreach`` kernel on CUDA, and change the rounding).
    """
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device / dtype
            pass
    return torch.optim.Adam(params, lr=lr)


def step_decay_milestones(iterations: int, fractions: Sequence[float] = STEP_DECAY_FRACTIONS) -> list[int]:
    """The iterations ``int(iterations * f)`` at which the lr drops, without 0 and duplicates."""
    return sorted({int(iterations * f) for f in fractions} - {0})


def step_decay(
    optimiser: torch.optim.Optimizer,
    iterations: int,
    *,
    gamma: float = 0.1,
    fractions: Sequence[float] = STEP_DECAY_FRACTIONS,
) -> torch.optim.lr_scheduler.MultiStepLR:
    """``MultiStepLR`` multiplying the lr by ``gamma`` at :func:`step_decay_milestones`."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimiser, milestones=step_decay_milestones(iterations, fractions), gamma=gamma
    )


class ProjectedAdam:
    """Adam on one tensor ``x``, optionally signed and decayed, projected after every step.

    Parameters
    ----------
    x : torch.Tensor
        The leaf being optimised (``requires_grad``).
    lr : float
        Adam's learning rate.
    bounds : (lo, hi) or None
        Valid range to clamp ``x`` to after every step (floats or broadcastable tensors);
        ``None`` or ``(None, None)`` for no projection.
    signed : bool
        Step on ``sgn(g)`` instead of ``g``.
    decay_iterations : int or None
        When given, :func:`step_decay` over that many iterations (one :meth:`step` each).
    fused : bool or None
        See :func:`adam`.
    """

    def __init__(
        self,
        x: torch.Tensor,
        *,
        lr: float,
        bounds=None,
        signed: bool = False,
        decay_iterations: int | None = None,
        fused: bool | None = None,
    ) -> None:
        self.x = x
        self.optimiser = adam(x, lr=lr, fused=fused)
        self.scheduler = step_decay(self.optimiser, decay_iterations) if decay_iterations is not None else None
        lo, hi = bounds if bounds is not None else (None, None)
        self.lo, self.hi = lo, hi
        self.signed = bool(signed)

    def zero_grad(self) -> None:
        """Drop the last gradient (``set_to_none``: the next one is assigned, not accumulated)."""
        self.optimiser.zero_grad(set_to_none=True)

    def step(self, grad: torch.Tensor | None = None) -> None:
        """One Adam step on ``grad`` (or on ``x.grad`` already set), then decay and project."""
        if grad is not None:
            self.x.grad = grad.sign() if self.signed else grad
        elif self.signed:
            self.x.grad = self.x.grad.sign()
        self.optimiser.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.lo is not None:
            with torch.no_grad():
                self.x.clamp_(self.lo, self.hi)
