"""Copies of this Flower app with other components, for tests that install a test-only
ClientApp (a broken or hostile party) without touching the production app."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What a copy of the app leaves out: environments, results and state, never part of a FAB's code.
_IGNORED = shutil.ignore_patterns(".git", ".venv", ".flwr", "runs", "outputs", "__pycache__", "*.pyc", "results",
                                  "*.weights.pt", ".pytest_cache", "*.egg-info", "deploy")


def app_with_components(dest: Path, *, clientapp: str | None = None, serverapp: str | None = None) -> Path:
    """Copy the app to ``dest`` with its ``[tool.flwr.app.components]`` changed; returns ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT, dest, ignore=_IGNORED)
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    for key, value in (("clientapp", clientapp), ("serverapp", serverapp)):
        if value is not None:
            text, count = re.subn(rf'^{key} = ".*"$', f'{key} = "{value}"', text, flags=re.MULTILINE)
            if count != 1:
                raise ValueError(f"pyproject.toml has no single '{key} = ...' line")
    pyproject.write_text(text, encoding="utf-8")
    return dest
