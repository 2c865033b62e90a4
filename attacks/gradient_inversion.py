r"""Inverting Gradients (Geiping et al., 2020) against a federated client's weight update.

Threat model (Fed-AugMix, sec. "Attack Setting")
------------------------------------------------
The server (the attacker) sends the global model ``w_g`` to a client and receives the
client's model ``w_c`` after local training, together with the number of examples the
client reports. The attacker additionally knows the true labels of the client's batch,
the architecture, and the local schedule (``K`` plain SGD steps at learning rate
``eta``, the FedProx coefficient ``mu`` and the L2 weight decay ``lambda``). The paper's
setting is a batch of 4 trained for 5 local epochs of one batch each (``K = 5``), attacked
with Adam (lr 0.1), a total-variation coefficient of ``1e-6`` and 2500 iterations, scored
by MSE, SSIM and PSNR (:func:`reconstruction_scores`).

As in :mod:`attacks.threat_model`, an attack sees exactly two objects:

* :class:`ObservedUpdate` - what the server received: the state it sent, the state it got
  back, the reported example count (:func:`observe_update` copies them), and
* :class:`GradientAttackerKnowledge` - the side information granted on top of that
  (:func:`grant_gradient_knowledge`); no field can carry the private inputs.

Both live in :mod:`attacks.update_threat_model`; the simulation of the client in
:mod:`attacks.client_simulation`; the scores in :mod:`attacks.evaluation`. All are
re-exported here.

Attack (multi-step "FedAvg" variant of Geiping et al.)
------------------------------------------------------
Let ``Delta_obs = w_c - w_g`` over the *trainable parameters* (in the order of
``model.named_parameters()``). Buffers, e.g. BatchNorm running statistics, are ignored:
they leak too (a BatchNorm running mean after the first linear layer is an affine
function of the batch mean of the inputs), so the leakage measured here is a lower bound.

The attacker simulates the client on a dummy batch ``x`` with the known labels ``y``:

.. math::

    w_0 = w_g, \qquad
    w_{k+1} = w_k - \eta \big( \nabla_w \mathrm{CE}(f_{w_k}(x), y)
              + \mu (w_k - w_g) + \lambda w_k \big), \qquad
    \Delta_{sim}(x) = w_K - w_g,

differentiably in ``x`` (:func:`torch.func.functional_call` and
``torch.autograd.grad(create_graph=True)``), the model in train mode (BatchNorm uses the
dummy batch's statistics, as the client's BatchNorm used its batch's). This is
:func:`common.training.train_local` with ``optimizer="sgd"``: the loss there is
``CE + mu * proximal_term`` with ``proximal_term = 1/2 sum ||w - w_g||^2`` (gradient
``mu (w - w_g)``), and SGD's weight decay adds ``lambda w`` to the gradient. With
dropout the client's masks are unknown to the attacker, which weakens the attack; the
audit's models use ``dropout=0``. The attack minimises

.. math::

    L(x) = 1 - \frac{\langle \Delta_{sim}(x), \Delta_{obs} \rangle}
                  {\lVert \Delta_{sim}(x) \rVert \, \lVert \Delta_{obs} \rVert}
           + \lambda_{tv}\, \mathrm{TV}(x),

(one cosine over all parameters concatenated) where ``TV`` is the anisotropic total
variation of the images ``(B, *sample_shape)``: mean absolute difference of vertically
neighbouring pixels plus that of horizontally neighbouring pixels (over the whole
batch), 0 for 1-D samples (:func:`attacks.regularisers.total_variation`). Optimiser
(:class:`attacks.optim.ProjectedAdam`): Adam on ``x``, on the *sign* of the gradient
(Geiping's default), ``MultiStepLR`` with ``gamma = 0.1`` at 3/8, 5/8 and 7/8 of the
iterations, and projection onto the valid range after every step (``boxed``). Start:
uniform in the valid range (standard normal when no valid range was granted), drawn from
``seed``; with several restarts the one with the lowest final loss is kept.

Limitation: BatchNorm after the first layer
-------------------------------------------
For :class:`common.model.MixupClassifier` with ``norm="batch"`` (``Linear -> BatchNorm``
first) the parameter update is exactly invariant to a common shift of the batch,
``x_i -> x_i + b`` for any ``b`` (BatchNorm removes ``W b``; the first-layer weight
gradient ``sum_i delta_i x_i^T`` has ``sum_i delta_i = 0``, so the first bias gets no
gradient either), and invariant up to BatchNorm's ``eps`` to a common scale. The batch
mean is therefore not identifiable from the trainable parameters: the attack recovers
the centred batch (see ``psnr_centred`` in :func:`reconstruction_scores`) while the raw
PSNR reflects where the unconstrained mean drifted. The running mean buffer of that
BatchNorm does carry ``W x_bar``; an attacker using it would do better. With LayerNorm
(``norm="layer"``) there is no such invariance.
"""

from __future__ import annotations

import math
import time

import torch

from .base import ATTACKS, Attack
from .client_simulation import _client, _cosine, _labels, _simulate, simulate_local_update, update_cosine
from .evaluation import reconstruction_scores
from .optim import ProjectedAdam
from .regularisers import total_variation
from .threat_model import Reconstruction
from .update_threat_model import (
    GradientAttackerKnowledge,
    ObservedUpdate,
    grant_gradient_knowledge,
    observe_update,
)

__all__ = [
    "GradientAttackerKnowledge",
    "InvertingGradientsAttack",
    "ObservedUpdate",
    "grant_gradient_knowledge",
    "observe_update",
    "reconstruction_scores",
    "simulate_local_update",
    "total_variation",
    "update_cosine",
]


# -- the attack --------------------------------------------------------------------------------


@ATTACKS.register
class InvertingGradientsAttack(Attack[ObservedUpdate, GradientAttackerKnowledge]):
    r"""Geiping et al.'s Inverting Gradients against a multi-step local update.

    Minimises :math:`1 - \cos(\Delta_{sim}(x), \Delta_{obs}) + \lambda_{tv} \mathrm{TV}(x)`
    over the dummy batch ``x`` (see the module docstring for the simulation and the
    optimiser). Row ``i`` of the reconstruction estimates the sample with label
    ``knowledge.labels[i]``; samples sharing a label can come out permuted.

    Parameters
    ----------
    iterations : int
        Adam steps per restart (2500 in Fed-AugMix).
    lr : float
        Adam learning rate (0.1), divided by 10 at 3/8, 5/8 and 7/8 of ``iterations``.
    tv_weight : float
        :math:`\lambda_{tv}` (``1e-6``).
    restarts : int
        Independent starts; the one with the lowest final loss is returned.
    seed : int
        Seeds the starting points (restart ``r`` uses ``seed + r``).
    boxed : bool
        Project ``x`` onto ``knowledge.valid_range`` after every step (when granted).
    signed_gradients : bool
        Step on the sign of the gradient (Geiping's default).
    """

    name = "inverting-gradients"
    observes = ObservedUpdate
    requires = GradientAttackerKnowledge

    def __init__(
        self,
        *,
        iterations: int = 2500,
        lr: float = 0.1,
        tv_weight: float = 1e-6,
        restarts: int = 1,
        seed: int = 0,
        boxed: bool = True,
        signed_gradients: bool = True,
    ) -> None:
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if tv_weight < 0:
            raise ValueError(f"tv_weight must be >= 0, got {tv_weight}")
        if restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {restarts}")
        self.iterations = int(iterations)
        self.lr = float(lr)
        self.tv_weight = float(tv_weight)
        self.restarts = int(restarts)
        self.seed = int(seed)
        self.boxed = bool(boxed)
        self.signed_gradients = bool(signed_gradients)

    def __repr__(self) -> str:
        return (
            f"InvertingGradientsAttack(iterations={self.iterations}, lr={self.lr}, tv_weight={self.tv_weight}, "
            f"restarts={self.restarts}, seed={self.seed}, boxed={self.boxed}, "
            f"signed_gradients={self.signed_gradients})"
        )

    def reconstruct(self, observed: ObservedUpdate, knowledge: GradientAttackerKnowledge) -> Reconstruction:
        """Estimate the client's batch, shape ``(B, *sample_shape)`` (row ``i`` has label ``labels[i]``).

        Raises
        ------
        ValueError
            If the labels were not granted or are empty, the observed update is all zeros
            (or non-finite), or the architecture does not fit the observed state.
        """
        labels = _labels(knowledge, attack="the inverting-gradients attack")
        started = time.perf_counter()
        client = _client(observed, knowledge, with_delta=True)
        batch = int(labels.shape[0])
        shape = (batch, *knowledge.sample_shape)
        bounds = knowledge.valid_range if (self.boxed and knowledge.valid_range is not None) else None
        best = None
        runs = []
        with torch.enable_grad():
            for restart in range(self.restarts):
                x, loss, cosine, stopped = self._run(client, labels, knowledge, shape, bounds, self.seed + restart)
                runs.append({"loss": loss, "cosine": cosine, "stopped_at": stopped})
                # Lowest final loss wins; a non-finite loss never beats a finite one.
                key = loss if math.isfinite(loss) else math.inf
                if best is None or key < best[4]:
                    best = (x, loss, cosine, restart, key)
        x, loss, cosine, chosen, _ = best
        details = {
            "final_loss": loss,
            "final_cosine": cosine,
            "iterations": self.iterations,
            "restarts": self.restarts,
            "chosen_restart": chosen,
            "restart_runs": runs,
            "local_steps": knowledge.local_steps,
            "local_lr": knowledge.local_lr,
            "proximal_mu": knowledge.proximal_mu,
            "weight_decay": knowledge.weight_decay,
            "lr": self.lr,
            "tv_weight": self.tv_weight,
            "signed_gradients": self.signed_gradients,
            "boxed": bounds is not None,
            "init": "uniform in valid range" if knowledge.valid_range is not None else "standard normal",
            "batch_size": batch,
            "num_examples_reported": observed.num_examples,
            "parameters_compared": len(client.names),
            "buffers_ignored": sorted(client.buffers),
            "threat_model": knowledge.description,
            "seconds": time.perf_counter() - started,
        }
        if observed.num_examples != batch:
            details["note"] = (
                f"the client reported {observed.num_examples} examples but {batch} labels were granted: "
                f"the simulation assumes one batch of {batch} trained for {knowledge.local_steps} steps"
            )
        return Reconstruction(x=x, method=self.name, details=details)

    # -- internals ---------------------------------------------------------------------------

    def _loss(self, client, x, labels, knowledge, *, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        sim = _simulate(client, x, labels, knowledge, create_graph=create_graph)
        cosine = _cosine(sim, client.observed, client.observed_norm)
        loss = 1.0 - cosine
        if self.tv_weight > 0:
            loss = loss + self.tv_weight * total_variation(x)
        return loss, cosine

    def _run(self, client, labels, knowledge, shape, bounds, seed):
        generator = torch.Generator().manual_seed(seed)
        if knowledge.valid_range is not None:
            lo, hi = knowledge.valid_range
            x = lo + (hi - lo) * torch.rand(shape, generator=generator)
        else:
            x = torch.randn(shape, generator=generator)
        x.requires_grad_(True)
        its = self.iterations
        # PyTorch's default Adam (not fused: the committed audits were made with it), signed
        # steps, lr / 10 at 3/8, 5/8 and 7/8 of the iterations, projection when boxed.
        solver = ProjectedAdam(x, lr=self.lr, bounds=bounds, signed=self.signed_gradients, decay_iterations=its)
        stopped = its
        for it in range(its):
            solver.zero_grad()
            loss, _ = self._loss(client, x, labels, knowledge, create_graph=True)
            if not torch.isfinite(loss):
                stopped = it
                break
            (grad,) = torch.autograd.grad(loss, x)
            solver.step(grad)
        x = x.detach()
        loss, cosine = self._loss(client, x, labels, knowledge, create_graph=False)
        return x.clone(), float(loss.detach()), float(cosine.detach()), stopped
