r"""The threat model of gradient inversion as data: the observed update and the granted knowledge.

Threat model (Fed-AugMix, sec. "Attack Setting")
------------------------------------------------
The server (the attacker) sends the global model ``w_g`` to a client and receives the
client's model ``w_c`` after local training, together with the number of examples the
client reports. The attacker additionally knows the true labels of the client's batch,
the architecture, and the local schedule (``K`` plain SGD steps at learning rate
``eta``, the FedProx coefficient ``mu`` and the L2 weight decay ``lambda``).

As in :mod:`attacks.threat_model`, an attack sees exactly two objects:

* :class:`ObservedUpdate` - what the server received: the state it sent, the state it got
  back, the reported example count (:func:`observe_update` copies them), and
* :class:`GradientAttackerKnowledge` - the side information granted on top of that
  (:func:`grant_gradient_knowledge`); no field can carry the private inputs.

All tensors are detached CPU copies, so an attack can neither mutate what the client sent
nor reach a device buffer shared with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .threat_model import _cpu_copy

__all__ = ["GradientAttackerKnowledge", "ObservedUpdate", "grant_gradient_knowledge", "observe_update"]


def _copy_state(state: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise TypeError(f"{what} must be a state_dict (a mapping of names to tensors), got {type(state).__name__}")
    out = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what}[{name!r}] is a {type(value).__name__}, not a tensor")
        out[str(name)] = _cpu_copy(value)
    return out


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
