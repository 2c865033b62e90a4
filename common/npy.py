""".npy buffers read in place: the array a serialised ``.npy`` file holds, as a read-only view
of the buffer instead of a copy.

Flower carries arrays as ``.npy`` bytes (``Array.data``); ``Array.numpy()`` parses them with
``np.load``, which copies the payload. Where the next step copies anyway (a model's
parameters, the one-shot union), reading through a view saves that intermediate copy.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["npy_view"]


def npy_view(data: bytes | bytearray | memoryview) -> np.ndarray:
    """The array of the ``.npy`` buffer ``data``, sharing its memory (read-only for bytes).

    Raises ``ValueError`` for a buffer that is not a plain C-ordered ``.npy`` array (object
    arrays and Fortran order are refused: callers then fall back to ``np.load``).
    """
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version in ((2, 0), (3, 0)):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if fortran_order or dtype.hasobject:
        raise ValueError("only C-ordered, non-object .npy arrays can be viewed in place")
    count = int(np.prod(shape, dtype=np.int64))
    offset = stream.tell()
    if offset + count * dtype.itemsize > len(memoryview(data).cast("B")):
        raise ValueError(".npy buffer shorter than its header says")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
