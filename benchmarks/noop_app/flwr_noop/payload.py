"""Array specs as run-config strings and the zero-filled arrays they describe.

A spec lists named arrays, ``"name=dtype:d0xd1;name2=dtype:d0"``; a per-party spec prefixes
each party's list with its partition id and separates parties with ``|``:
``"0|x=float32:120x64;y=float32:120x10|1|x=..."``. Arrays are built once per process and
reused: the floor measures moving bytes, not allocating them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["arrays_for", "format_spec", "format_party_specs", "parse_party_specs", "parse_spec", "spec_bytes"]


def format_spec(arrays: dict[str, tuple[str, tuple[int, ...]]]) -> str:
    """``{"x": ("float32", (120, 64))}`` -> ``"x=float32:120x64"``."""
    return ";".join(f"{name}={dtype}:{'x'.join(str(d) for d in shape)}" for name, (dtype, shape) in arrays.items())


def format_party_specs(parties: dict[int, dict[str, tuple[str, tuple[int, ...]]]]) -> str:
    return "|".join(f"{pid}|{format_spec(arrays)}" for pid, arrays in sorted(parties.items()))


def parse_spec(text: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    arrays: dict[str, tuple[str, tuple[int, ...]]] = {}
    for item in filter(None, text.split(";")):
        name, _, rest = item.partition("=")
        dtype, _, dims = rest.partition(":")
        arrays[name] = (dtype, tuple(int(d) for d in dims.split("x") if d))
    return arrays


def parse_party_specs(text: str) -> dict[int, dict[str, tuple[str, tuple[int, ...]]]]:
    parts = text.split("|") if text else []
    if len(parts) % 2:
        raise ValueError(f"per-party spec needs pid|arrays pairs, got {len(parts)} fields")
    return {int(parts[i]): parse_spec(parts[i + 1]) for i in range(0, len(parts), 2)}


def spec_bytes(arrays: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    """Bytes of the array buffers a spec describes."""
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for dtype, shape in arrays.values())


@lru_cache(maxsize=256)
def arrays_for(spec: str) -> dict[str, np.ndarray]:
    """Zero-filled arrays of a spec string (cached per process)."""
    return {name: np.zeros(shape, dtype=dtype) for name, (dtype, shape) in parse_spec(spec).items()}
