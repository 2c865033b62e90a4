"""Writing result files so that no reader ever sees half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_json_atomic", "write_text_atomic"]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a pydantic model
        return value.model_dump(mode="json", by_alias=True)
    if hasattr(value, "item"):  # a NumPy or torch scalar
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def write_text_atomic(path: Path | str, text: str, *, mode: int = 0o644) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and rename it
    into place, so a concurrent reader (a sweep resuming, a report) sees the old file or
    the whole new one. ``mode`` is applied before the rename (temporary files are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path | str, payload: Any) -> Path:
    """:func:`write_text_atomic` of ``payload`` as indented JSON (NaN and inf kept as
    JavaScript literals, as Python's ``json`` reads them back)."""
    text = json.dumps(payload, indent=2, default=_jsonable, allow_nan=True) + "\n"
    return write_text_atomic(path, text)
