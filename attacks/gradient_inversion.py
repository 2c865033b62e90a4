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
batch), 0 for 1-D samples. Optimiser: Adam on ``x``, on the *sign* of the gradient
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from .metrics import psnr, ssim, summarise
from .threat_model import Reconstruction, _cpu_copy

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


def _copy_state(state: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise TypeError(f"{what} must be a state_dict (a mapping of names to tensors), got {type(state).__name__}")
    out = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what}[{name!r}] is a {type(value).__name__}, not a tensor")
        out[str(name)] = _cpu_copy(value)
    return out


# -- threat model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObservedUpdate:
    """Exactly what the server received from one client in one round.

    Attributes
    ----------
    global_state : dict of str to torch.Tensor
        The model the server sent (a ``state_dict``: parameters and buffers).
    client_state : dict of str to torch.Tensor
        The model the client sent back, same keys and shapes.
    num_examples : int
        The number of training examples the client reported.
    """

    global_state: dict[str, torch.Tensor]
    client_state: dict[str, torch.Tensor]
    num_examples: int

    def __post_init__(self) -> None:
        g, c = self.global_state, self.client_state
        if set(g) != set(c):
            only_g = sorted(set(g) - set(c))
            only_c = sorted(set(c) - set(g))
            raise ValueError(
                f"global_state and client_state have different keys: only in global_state {only_g}, "
                f"only in client_state {only_c}"
            )
        for name in g:
            if g[name].shape != c[name].shape:
                raise ValueError(
                    f"{name!r} has shape {tuple(g[name].shape)} in global_state but {tuple(c[name].shape)} in client_state"
                )
        if int(self.num_examples) < 0:
            raise ValueError(f"num_examples must be >= 0, got {self.num_examples}")
        object.__setattr__(self, "num_examples", int(self.num_examples))

    def delta(self, names) -> list[torch.Tensor]:
        """``client_state[name] - global_state[name]`` for each of ``names``, in order."""
        missing = [n for n in names if n not in self.global_state]
        if missing:
            raise ValueError(f"the observed update has no tensors named {missing}")
        return [self.client_state[n] - self.global_state[n] for n in names]


def observe_update(
    *, global_state: Mapping[str, torch.Tensor], client_state: Mapping[str, torch.Tensor], num_examples: int
) -> ObservedUpdate:
    """What the server holds after a round with one client: detached CPU copies of both
    states and the reported example count.

    Raises
    ------
    ValueError
        If the two states differ in keys or shapes, or ``num_examples < 0``.
    """
    return ObservedUpdate(
        global_state=_copy_state(global_state, "global_state"),
        client_state=_copy_state(client_state, "client_state"),
        num_examples=int(num_examples),
    )


@dataclass(frozen=True)
class GradientAttackerKnowledge:
    """Side information granted to a gradient-inversion attacker; ``None`` means *not granted*.

    Nothing here can hold the private inputs: labels, shapes, the architecture and the
    local training schedule only.

    Attributes
    ----------
    labels : torch.Tensor or None
        Class indices of the client's batch, int64 ``(B,)`` (Fed-AugMix's "known labels").
    sample_shape : tuple of int
        Shape of one sample, e.g. ``(1, 8, 8)``.
    model_factory : callable
        ``model_factory() -> nn.Module``: the architecture, into which the attacker loads
        the observed ``global_state``. Must build the same structure on every call.
    local_steps : int
        Plain SGD steps the client took on the batch (``K``; 5 epochs of one batch = 5).
    local_lr : float
        The client's SGD learning rate ``eta``.
    proximal_mu : float
        FedProx coefficient ``mu`` (loss ``CE + mu/2 ||w - w_g||^2``).
    weight_decay : float
        SGD's L2 weight decay ``lambda`` (``lambda w`` added to the gradient).
    valid_range : (float, float) or None
        Range of a valid input value; ``None`` if not known (no projection, Gaussian start).
    input_is_flat : bool
        The model takes rows ``(B, prod(sample_shape))`` (digits MLP) rather than
        ``(B, *sample_shape)``.
    description : str
        Human-readable statement of the threat model, for reports.
    """

    labels: torch.Tensor | None
    sample_shape: tuple[int, ...]
    model_factory: Callable[[], nn.Module]
    local_steps: int
    local_lr: float
    proximal_mu: float = 0.0
    weight_decay: float = 0.0
    valid_range: tuple[float, float] | None = (0.0, 1.0)
    input_is_flat: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.sample_shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"sample_shape must be a non-empty tuple of positive sizes, got {self.sample_shape}")
        object.__setattr__(self, "sample_shape", shape)
        if self.labels is not None:
            lab = self.labels
            if lab.ndim != 1 or lab.dtype.is_floating_point or lab.dtype.is_complex or lab.dtype == torch.bool:
                raise ValueError(f"labels must be class indices of shape (B,), got {tuple(lab.shape)}, {lab.dtype}")
            if lab.numel() and int(lab.min()) < 0:
                raise ValueError("labels must be non-negative class indices")
        if not callable(self.model_factory):
            raise ValueError("model_factory must be callable: model_factory() -> nn.Module")
        if int(self.local_steps) < 1:
            raise ValueError(f"local_steps must be >= 1, got {self.local_steps}")
        object.__setattr__(self, "local_steps", int(self.local_steps))
        for name in ("local_lr", "proximal_mu", "weight_decay"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0 or (name == "local_lr" and value == 0):
                raise ValueError(f"{name} must be {'positive' if name == 'local_lr' else '>= 0'} and finite, got {value}")
            object.__setattr__(self, name, value)
        if self.valid_range is not None:
            lo, hi = (float(v) for v in self.valid_range)
            if not lo < hi:
                raise ValueError(f"valid_range must be (lo, hi) with lo < hi, got {self.valid_range}")
            object.__setattr__(self, "valid_range", (lo, hi))

    def require(self, *names: str, attack: str = "this attack") -> None:
        """Raise ``ValueError`` naming every field in ``names`` that was not granted."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"{attack} needs attacker knowledge of {', '.join(missing)}, which the threat model "
                f"did not grant (GradientAttackerKnowledge.{missing[0]} is None)"
            )


def grant_gradient_knowledge(
    *,
    labels: torch.Tensor | None,
    sample_shape,
    model_factory: Callable[[], nn.Module],
    local_steps: int,
    local_lr: float,
    proximal_mu: float = 0.0,
    weight_decay: float = 0.0,
    valid_range: tuple[float, float] | None = (0.0, 1.0),
    input_is_flat: bool = True,
    description: str | None = None,
) -> GradientAttackerKnowledge:
    """Side information of the Fed-AugMix / Geiping et al. threat model.

    Parameters
    ----------
    labels : torch.Tensor or None
        The batch's class indices (copied, detached, CPU, int64); ``None`` grants no labels.
    description : str, optional
        Defaults to a statement of what was granted.

    Returns
    -------
    GradientAttackerKnowledge
    """
    copied = None if labels is None else _cpu_copy(torch.as_tensor(labels)).long().reshape(-1)
    if description is None:
        granted = "true labels, " if copied is not None else "no labels, "
        description = (
            f"weight update observed; granted: {granted}architecture, local schedule "
            f"({int(local_steps)} SGD steps, lr {float(local_lr):g}, mu {float(proximal_mu):g}, "
            f"weight decay {float(weight_decay):g}), valid range {valid_range}"
        )
    return GradientAttackerKnowledge(
        labels=copied,
        sample_shape=tuple(int(s) for s in sample_shape),
        model_factory=model_factory,
        local_steps=local_steps,
        local_lr=local_lr,
        proximal_mu=proximal_mu,
        weight_decay=weight_decay,
        valid_range=None if valid_range is None else (float(valid_range[0]), float(valid_range[1])),
        input_is_flat=bool(input_is_flat),
        description=description,
    )


# -- the attacker's model of the client ----------------------------------------------------------


@dataclass
class _Client:
    """The attacker's simulation of the client: architecture, start point, observed delta."""

    model: nn.Module
    names: list[str]
    start: list[torch.Tensor]
    buffers: dict[str, torch.Tensor]
    observed: list[torch.Tensor] | None
    observed_norm: float


def _client(observed: ObservedUpdate, knowledge: GradientAttackerKnowledge, *, with_delta: bool) -> _Client:
    model = knowledge.model_factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model_factory must return an nn.Module, got {type(model).__name__}")
    try:
        model.load_state_dict(observed.global_state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"model_factory's architecture does not fit the observed global_state: {err}") from err
    model = model.to("cpu").train()
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError("model_factory's model has no trainable parameters")
    start = [observed.global_state[n].detach().clone().float() for n in names]
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    delta, norm = None, math.nan
    if with_delta:
        delta = [d.float() for d in observed.delta(names)]
        sq = sum(float(d.double().square().sum()) for d in delta)
        if not math.isfinite(sq):
            raise ValueError("the observed update has non-finite values")
        if sq == 0.0:
            raise ValueError(
                "the observed update is all zeros over the trainable parameters: the client did not move, "
                "there is nothing to invert"
            )
        norm = math.sqrt(sq)
    return _Client(model=model, names=names, start=start, buffers=buffers, observed=delta, observed_norm=norm)


def _model_input(x: torch.Tensor, knowledge: GradientAttackerKnowledge) -> torch.Tensor:
    return x.reshape(x.shape[0], -1) if knowledge.input_is_flat else x


def _simulate(
    client: _Client, x: torch.Tensor, labels: torch.Tensor, knowledge: GradientAttackerKnowledge, *, create_graph: bool
) -> list[torch.Tensor]:
    """``Delta_sim(x)`` per trainable parameter, differentiable in ``x`` with ``create_graph``."""
    w = [p.detach().clone().requires_grad_(True) for p in client.start]
    w0 = [p.detach() for p in client.start]
    lr, mu, wd = knowledge.local_lr, knowledge.proximal_mu, knowledge.weight_decay
    inputs = _model_input(x, knowledge)
    for _ in range(knowledge.local_steps):
        params = dict(zip(client.names, w, strict=True))
        logits = functional_call(client.model, {**client.buffers, **params}, (inputs,))
        loss = F.cross_entropy(logits, labels)
        grads = torch.autograd.grad(loss, w, create_graph=create_graph)
        step = []
        for wi, gi, gl in zip(w, grads, w0, strict=True):
            direction = gi
            if mu:
                direction = direction + mu * (wi - gl)
            if wd:
                direction = direction + wd * wi
            step.append(wi.add(direction, alpha=-lr))
        w = step
    return [wi - gl for wi, gl in zip(w, w0, strict=True)]


def _cosine(sim: list[torch.Tensor], obs: list[torch.Tensor], obs_norm: float) -> torch.Tensor:
    dot = sum(torch.dot(s.reshape(-1), o.reshape(-1)) for s, o in zip(sim, obs, strict=True))
    sim_norm = torch.sqrt(sum(torch.dot(s.reshape(-1), s.reshape(-1)) for s in sim))
    return dot / (sim_norm.clamp_min(1e-30) * obs_norm)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of a batch ``(B, *sample_shape)``: mean ``|x[i+1, j] - x[i, j]|`` plus
    mean ``|x[i, j+1] - x[i, j]|`` over the last two axes and the whole batch (Geiping et
    al.); 0 for samples with fewer than two axes."""
    if images.ndim < 3:
        return images.new_zeros(())
    tv = images.new_zeros(())
    if images.shape[-2] > 1:
        tv = tv + (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    if images.shape[-1] > 1:
        tv = tv + (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return tv


def _labels(knowledge: GradientAttackerKnowledge, attack: str) -> torch.Tensor:
    knowledge.require("labels", attack=attack)
    labels = knowledge.labels.long()
    if labels.numel() == 0:
        raise ValueError("the granted labels are empty: a batch size of 0 leaves nothing to reconstruct")
    return labels


def simulate_local_update(
    observed: ObservedUpdate, knowledge: GradientAttackerKnowledge, x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The attacker's simulated ``Delta_sim(x) = w_K - w_g`` for a given batch ``x``.

    Diagnostic: with ``x`` the true batch (an experimenter's check, never done by an
    attack), ``Delta_sim`` equals the observed delta when the knowledge is right. Only
    ``observed.global_state`` is read.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, *sample_shape)`` or flat rows ``(B, prod(sample_shape))``.

    Returns
    -------
    dict of str to torch.Tensor
        Detached deltas of the trainable parameters, in ``named_parameters()`` order.
    """
    labels = _labels(knowledge, "simulate_local_update")
    client = _client(observed, knowledge, with_delta=False)
    x = x.detach().to("cpu", torch.float32).reshape(x.shape[0], *knowledge.sample_shape)
    if x.shape[0] != labels.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but {labels.shape[0]} labels were granted")
    with torch.enable_grad():
        delta = _simulate(client, x, labels, knowledge, create_graph=False)
    return {n: d.detach() for n, d in zip(client.names, delta, strict=True)}


def update_cosine(observed: ObservedUpdate, knowledge: GradientAttackerKnowledge, x: torch.Tensor) -> float:
    """Cosine similarity of ``Delta_sim(x)`` and the observed delta (1 minus the attack's data loss)."""
    sim = simulate_local_update(observed, knowledge, x)
    names = list(sim)
    obs = [d.float() for d in observed.delta(names)]
    norm = math.sqrt(sum(float(d.double().square().sum()) for d in obs))
    if norm == 0.0:
        raise ValueError("the observed update is all zeros over the trainable parameters")
    return float(_cosine([sim[n] for n in names], obs, norm))


# -- the attack --------------------------------------------------------------------------------


class InvertingGradientsAttack:
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
        optimiser = torch.optim.Adam([x], lr=self.lr)
        its = self.iterations
        milestones = sorted({int(its * 3 / 8), int(its * 5 / 8), int(its * 7 / 8)} - {0})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones, gamma=0.1)
        stopped = its
        for it in range(its):
            optimiser.zero_grad(set_to_none=True)
            loss, _ = self._loss(client, x, labels, knowledge, create_graph=True)
            if not torch.isfinite(loss):
                stopped = it
                break
            (grad,) = torch.autograd.grad(loss, x)
            x.grad = grad.sign() if self.signed_gradients else grad
            optimiser.step()
            scheduler.step()
            if bounds is not None:
                with torch.no_grad():
                    x.clamp_(bounds[0], bounds[1])
        x = x.detach()
        loss, cosine = self._loss(client, x, labels, knowledge, create_graph=False)
        return x.clone(), float(loss.detach()), float(cosine.detach()), stopped


# -- evaluation (needs the private originals; never called by an attack) -----------------------


def reconstruction_scores(original: torch.Tensor, estimate: torch.Tensor, *, data_range: float) -> dict[str, float]:
    """Mean MSE, PSNR (dB) and SSIM of a reconstructed batch, paired by index and matched.

    ``original`` and ``estimate`` are ``(B, *sample_shape)``. The index pairing (row ``i``
    against original ``i``) is the natural one since the labels are known and the attack
    keeps their order; samples sharing a label can nevertheless come out permuted, so the
    ``*_matched`` scores use the assignment of reconstructions to originals that minimises
    the total MSE (:func:`scipy.optimize.linear_sum_assignment`). PSNR and SSIM are the
    per-sample values of :mod:`attacks.metrics` averaged over the batch; SSIM is ``nan`` for
    samples that are not images (fewer than two axes).

    ``mse_centred`` and ``psnr_centred`` (index pairing) compare ``x_i - mean_j x_j`` with
    ``x^_i - mean_j x^_j``: the batch with its own mean image removed. A model whose first
    layer is ``Linear -> BatchNorm`` (:class:`common.model.MixupClassifier` with
    ``norm="batch"``) has a parameter update that is exactly invariant to a common shift
    ``x_i -> x_i + b`` of the whole batch (BatchNorm removes ``W b``, and the first-layer
    weight gradient ``sum_i delta_i x_i^T`` has ``sum_i delta_i = 0``), and nearly invariant
    to a common scale; the batch mean is then not identifiable from the parameters (only
    from the BatchNorm buffers, which :class:`InvertingGradientsAttack` ignores), and the
    centred scores measure what is.

    Returns
    -------
    dict
        ``mse``, ``psnr``, ``ssim``, ``mse_matched``, ``psnr_matched``, ``ssim_matched``,
        ``mse_centred``, ``psnr_centred`` and ``matched_in_place`` (fraction of rows the
        matching leaves at their index).
    """
    from scipy.optimize import linear_sum_assignment

    if original.shape != estimate.shape:
        raise ValueError(f"original {tuple(original.shape)} and estimate {tuple(estimate.shape)} differ in shape")
    if original.ndim < 2 or original.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch (B, *sample_shape), got shape {tuple(original.shape)}")
    x = original.detach().to("cpu", torch.float64)
    x_hat = estimate.detach().to("cpu", torch.float64)
    b = x.shape[0]
    images = x.ndim in (3, 4)

    def scores(est: torch.Tensor) -> tuple[float, float, float]:
        mse = (x - est).flatten(1).square().mean(1)
        p = summarise(psnr(x, est, data_range=data_range))["mean"]
        s = summarise(ssim(x, est, data_range=data_range))["mean"] if images else math.nan
        return float(mse.mean()), p, s

    cost = (x_hat.reshape(b, 1, -1) - x.reshape(1, b, -1)).square().mean(2)  # cost[j, i]: estimate j vs original i
    rows, cols = linear_sum_assignment(cost.numpy())
    matched = torch.empty_like(x_hat)
    matched[torch.as_tensor(cols)] = x_hat[torch.as_tensor(rows)]
    mse, p, s = scores(x_hat)
    mse_m, p_m, s_m = scores(matched)
    x_c, x_hat_c = x - x.mean(0, keepdim=True), x_hat - x_hat.mean(0, keepdim=True)
    mse_c = (x_c - x_hat_c).flatten(1).square().mean(1)
    p_c = summarise(psnr(x_c, x_hat_c, data_range=data_range))["mean"]
    return {
        "mse": mse,
        "psnr": p,
        "ssim": s,
        "mse_matched": mse_m,
        "psnr_matched": p_m,
        "ssim_matched": s_m,
        "mse_centred": float(mse_c.mean()),
        "psnr_centred": p_c,
        "matched_in_place": float((torch.as_tensor(rows) == torch.as_tensor(cols)).double().mean()),
    }
