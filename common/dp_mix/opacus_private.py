"""Every use of Opacus beyond its documented public API, in one place.

DP-Mix drives Opacus through public names only (:class:`~opacus.GradSampleModule` with
``forbid_grad_accumulation`` and ``to_standard_module``; :class:`~opacus.optimizers.DPOptimizer`
with ``pre_step``, ``add_noise``, ``grad_samples``, ``attach_step_hook``,
``original_optimizer``; the public RDP analysis functions). No private function or class of
Opacus is imported. Two things still rest on how Opacus 1.6 behaves rather than on what it
documents, and live here so that ``tests/test_dp_mix_opacus.py`` can pin them down and fail
with a clear message when an Opacus upgrade changes them:

1. **Leftover attributes.** ``GradSampleModule.to_standard_module()`` removes the hooks and the
   per-parameter attributes Opacus lists for cleanup, but leaves the forward hooks'
   ``activations`` lists (and ``max_batch_len``) on the modules, and ``DPOptimizer`` leaves
   ``summed_grad`` on every parameter (``zero_grad`` sets it to ``None``, never deletes it).
   :func:`remove_opacus_traces` deletes exactly those names, so the caller gets its plain
   module back (same ``vars()`` as before training).
2. **Secure-mode noise.** Opacus draws secure-mode noise from ``torchcsprng``, which is not
   installed here. :class:`UrandomNoiseDPOptimizer` keeps Opacus' own ``add_noise`` (its
   processed-flag check, which refuses to reuse gradients without ``zero_grad``, and its
   ``p.grad = summed_grad + noise``) by running it with a noise multiplier of 0, which
   ``add_noise`` turns into exactly zero noise, then adds Gaussians drawn from ``os.urandom``.
   This replaces a copy of ``add_noise`` that imported Opacus' private
   ``_check_processed_flag`` / ``_mark_as_processed``.
"""

from __future__ import annotations

import torch
from opacus.optimizers import DPOptimizer
from torch import nn

from ..secure_random import SystemRandom

__all__ = ["MODULE_TRACES", "PARAMETER_TRACES", "UrandomNoiseDPOptimizer", "opacus_traces", "remove_opacus_traces"]

MODULE_TRACES = ("activations", "max_batch_len")
"""Attributes Opacus' per-sample-gradient hooks set on modules and leave after cleanup."""

PARAMETER_TRACES = ("summed_grad",)
"""Attributes :class:`~opacus.optimizers.DPOptimizer` sets on parameters and never deletes."""


def opacus_traces(model: nn.Module) -> set[tuple[int, str]]:
    """``(id(module), name)`` of the :data:`MODULE_TRACES` the model's modules hold now
    (before wrapping: those are the caller's own and are kept)."""
    return {(id(m), a) for m in model.modules() for a in MODULE_TRACES if a in vars(m)}


def remove_opacus_traces(model: nn.Module, had_attributes: set[tuple[int, str]]) -> None:
    """Drop what Opacus leaves on the caller's model after ``GradSampleModule.to_standard_module()``.

    Deletes :data:`PARAMETER_TRACES` from every parameter and the :data:`MODULE_TRACES` that
    were not in ``had_attributes`` (from :func:`opacus_traces` before wrapping).
    """
    for p in model.parameters():
        for attr in PARAMETER_TRACES:
            if hasattr(p, attr):
                delattr(p, attr)
    for module in model.modules():
        for attr in MODULE_TRACES:
            if attr in vars(module) and (id(module), attr) not in had_attributes:
                delattr(module, attr)


class UrandomNoiseDPOptimizer(DPOptimizer):
    """:class:`~opacus.optimizers.DPOptimizer` whose noise comes from ``os.urandom`` (secure mode).

    For every parameter, ``p.grad = summed_grad + e`` with ``e = std * (z_1 + z_2 + z_3 + z_4) / 2``,
    ``std = noise_multiplier * max_grad_norm`` and ``z_k ~ N(0, I)`` i.i.d. from
    :class:`common.secure_random.SystemRandom` (Box-Muller on 53-bit uniforms, float64): so
    ``e ~ N(0, std^2 I)``, by Opacus' secure-mode construction against floating-point attacks
    (sum of four Gaussians, halved; Holohan & Braghin 2021). Not reproducible, by design.
    Must be built without a ``generator`` (a seeded generator would make the noise
    predictable): passing one raises ``ValueError``.
    """

    _source = SystemRandom()

    def __init__(self, optimizer: torch.optim.Optimizer, **kwargs) -> None:
        if kwargs.get("generator") is not None:
            raise ValueError(
                "generator: a seeded noise generator is prohibited in secure mode (as Opacus' PrivacyEngine: "
                "'Passing seed is prohibited in secure mode'); secure mode draws the noise from os.urandom"
            )
        kwargs["secure_mode"] = True
        super().__init__(optimizer, **kwargs)

    def add_noise(self) -> None:
        sigma = self.noise_multiplier
        self.noise_multiplier = 0.0
        try:  # Opacus' add_noise at std 0: processed-flag check and mark, p.grad = summed_grad + 0
            super().add_noise()
        finally:
            self.noise_multiplier = sigma
        std = sigma * self.max_grad_norm
        if std == 0:
            return
        for p in self.params:
            draws = self._source.normal_(torch.empty((4, *p.grad.shape), dtype=torch.float64))
            p.grad.add_((std * draws.sum(dim=0) / 2).to(device=p.grad.device, dtype=p.grad.dtype))
