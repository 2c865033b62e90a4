"""The union of the parties' releases, assembled in place as replies arrive.

The first reply fixes the row shape and gives a capacity estimate (its row count times the
number of parties queried, plus 5 %); every reply is copied once into the preallocated
buffer and its message can then be dropped. A buffer that proves too small grows by 1.5x
(one copy, logged); with equal party sizes, as in the paper's Table 5, it never does. The
result is a view of the filled rows, so no concatenation of all parts ever happens.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

__all__ = ["UnionBuffer"]


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def _copy_rows(target: torch.Tensor, rows: np.ndarray) -> None:
    """``target[:] = rows`` for a (possibly read-only) array: numpy copies into a CPU buffer
    directly; a device buffer gets one host-to-device copy."""
    if target.device.type == "cpu":
        np.copyto(target.numpy(), rows, casting="same_kind")
        return
    with warnings.catch_warnings():  # a read-only view is only read from
        warnings.simplefilter("ignore", UserWarning)
        target.copy_(torch.from_numpy(rows))


class UnionBuffer:
    """Rows of ``x`` and ``y`` from several parties in one contiguous tensor pair."""

    def __init__(self, *, expected_parties: int, slack: float = 0.05, device: str | torch.device = "cpu") -> None:
        if expected_parties < 1:
            raise ValueError("expected_parties must be >= 1")
        self.expected_parties = expected_parties
        self.slack = slack
        self.device = torch.device(device)
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._owner: torch.Tensor | None = None
        self.filled = 0
        self.parties: list[tuple[int, int, int]] = []  # (party id, first row, row count)
        self.grow_events = 0
        self.peak_bytes = 0

    @property
    def allocated_bytes(self) -> int:
        if self._x is None:
            return 0
        return sum(t.numel() * t.element_size() for t in (self._x, self._y, self._owner))

    @property
    def used_bytes(self) -> int:
        if self._x is None:
            return 0
        return sum(t[: self.filled].numel() * t.element_size() for t in (self._x, self._y, self._owner))

    def _allocate(self, rows: int, x_like: np.ndarray, y_like: np.ndarray) -> None:
        x = torch.empty((rows, *x_like.shape[1:]), dtype=_torch_dtype(x_like.dtype), device=self.device)
        y = torch.empty((rows, *y_like.shape[1:]), dtype=_torch_dtype(y_like.dtype), device=self.device)
        owner = torch.empty(rows, dtype=torch.int32, device=self.device)
        if self._x is not None:
            # Growth: the old and new buffers coexist for one copy.
            x[: self.filled] = self._x[: self.filled]
            y[: self.filled] = self._y[: self.filled]
            owner[: self.filled] = self._owner[: self.filled]
            self.peak_bytes = max(self.peak_bytes, self.allocated_bytes + sum(
                t.numel() * t.element_size() for t in (x, y, owner)))
            self.grow_events += 1
        self._x, self._y, self._owner = x, y, owner
        self.peak_bytes = max(self.peak_bytes, self.allocated_bytes)

    def add(self, party_id: int, x: np.ndarray, y: np.ndarray) -> None:
        """Copy one party's rows in. Shapes after the first axis must match earlier parties."""
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"party {party_id}: {x.shape[0]} inputs but {y.shape[0]} labels")
        rows = x.shape[0]
        if self._x is None:
            estimate = math.ceil(rows * self.expected_parties * (1 + self.slack)) + self.expected_parties
            self._allocate(estimate, x, y)
        elif tuple(x.shape[1:]) != tuple(self._x.shape[1:]) or tuple(y.shape[1:]) != tuple(self._y.shape[1:]):
            raise ValueError(
                f"party {party_id}: row shapes {x.shape[1:]}/{y.shape[1:]} differ from "
                f"{tuple(self._x.shape[1:])}/{tuple(self._y.shape[1:])}"
            )
        if self.filled + rows > self._x.shape[0]:
            self._allocate(max(self.filled + rows, math.ceil(self._x.shape[0] * 1.5)), x, y)
        stop = self.filled + rows
        _copy_rows(self._x[self.filled : stop], x)
        _copy_rows(self._y[self.filled : stop], y)
        self._owner[self.filled : stop] = party_id
        self.parties.append((party_id, self.filled, rows))
        self.filled = stop

    def drop(self, party_id: int) -> int:
        """Remove every row of ``party_id`` (a release that must not be used after all, e.g.
        two nodes claimed its partition); later rows move up, one block at a time, so at most
        one party's rows are held twice. Returns the number of rows removed."""
        kept, removed, write = [], 0, 0
        for pid, start, rows in self.parties:
            if pid == party_id:
                removed += rows
                continue
            if start != write:
                for t in (self._x, self._y, self._owner):
                    t[write : write + rows] = t[start : start + rows].clone()
            kept.append((pid, write, rows))
            write += rows
        self.parties, self.filled = kept, write
        return removed

    @property
    def x(self) -> torch.Tensor:
        self._require_data()
        return self._x[: self.filled]

    @property
    def y(self) -> torch.Tensor:
        self._require_data()
        return self._y[: self.filled]

    @property
    def owner(self) -> torch.Tensor:
        """Party id of every row (for audits: which party a released row came from)."""
        self._require_data()
        return self._owner[: self.filled]

    def canonical_order(self) -> torch.Tensor:
        """Row indices (CPU, int64) that list the rows by party id, then by the party's own
        row order: the union's content in an order independent of reply arrival, so that a
        seeded training run is reproducible."""
        self._require_data()
        blocks = sorted(self.parties)  # (party id, first row, rows)
        return torch.cat([torch.arange(start, start + rows, dtype=torch.int64) for _, start, rows in blocks])

    def _require_data(self) -> None:
        if self._x is None or self.filled == 0:
            raise RuntimeError("no release has been added")
