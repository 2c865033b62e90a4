"""Every random draw of a run derives from the run's ``seed`` through one function.

``derive_seed(seed, party, Stream.X, ...)`` gives an independent 63-bit seed for every tuple
of integers (NumPy's ``SeedSequence``), so two uses of the run seed never share a stream and
adding a new use never shifts an old one.

The integer values below are part of every committed result: changing one changes every
number drawn from that stream. The attack streams reuse small integers; they are combined
with an attack's own seed, never in a tuple that also holds a party id, so they cannot
collide with the party streams.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = ["Stream", "derive_seed"]


class Stream(IntEnum):
    """What a derived seed is for (its integer is the second or third part of the tuple)."""

    # A party's draws: derive_seed(run seed, partition id, stream[, round or epoch]).
    SPLIT = 1  # train / validation split of a party's rows
    MIXUP = 2  # mixing randomness of a release (partners, weights, noise, sign masks)
    TRAIN = 3  # batch order and augmentation of a local update
    STATS = 4  # sample of rows for Theorem 2's statistics
    RADIUS = 5  # images used to map the radius into feature space
    PUBLIC = 6  # the public pool (drawn from the run seed alone)
    AUDIT = 7  # the gradient audit's batch choice and its local update
    DROPOUT = 8  # the global generator during a local update (dropout)

    # The U-Net attack's own draws: derive_seed(attack seed, stream[, epoch]).
    ATTACK_INIT = 0
    ATTACK_MIX = 1  # noqa: PIE796 - same integer as SPLIT on purpose (see the module docstring)
    ATTACK_SHUFFLE = 2  # noqa: PIE796


def derive_seed(*parts: int) -> int:
    """An independent 63-bit seed for every tuple of integers (NumPy ``SeedSequence``).

    The first 64-bit word of the sequence's state, shifted right by one so that it fits
    ``torch.Generator.manual_seed`` and NumPy alike.
    """
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))
