r"""The attacker's differentiable simulation of a client's local update (Inverting Gradients).

Given the observed global state ``w_g`` and the granted schedule, the attacker replays the
client's ``K`` plain SGD steps on a batch ``x`` with the known labels ``y``,

.. math::

    w_0 = w_g, \qquad
    w_{k+1} = w_k - \eta \big( \nabla_w \mathrm{CE}(f_{w_k}(x), y)
              + \mu (w_k - w_g) + \lambda w_k \big), \qquad
    \Delta_{sim}(x) = w_K - w_g,

over the trainable parameters, differentiably in ``x``
(:func:`torch.func.functional_call` and ``torch.autograd.grad(create_graph=True)``), the
model in train mode (BatchNorm uses the batch's statistics, as the client's did). This is
:func:`common.training.train_local` with ``optimizer="sgd"``: its loss is
``CE + mu * 1/2 sum ||w - w_g||^2`` and SGD's weight decay adds ``lambda w``.

Threat model: everything here reads only the :class:`~attacks.update_threat_model.ObservedUpdate`
and the :class:`~attacks.update_threat_model.GradientAttackerKnowledge`.
:func:`simulate_local_update` and :func:`update_cosine` also take a batch ``x``: with the
*true* batch they are an experimenter's check that the granted knowledge reproduces the
update, never something an attack can call with private data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from .update_threat_model import GradientAttackerKnowledge, ObservedUpdate

__all__ = ["simulate_local_update", "update_cosine"]


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
