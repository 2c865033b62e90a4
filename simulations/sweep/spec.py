"""Sweep files: the grid a sweep runs, validated, and the ``--set`` overrides.

A sweep file (TOML, see ``simulations/sweeps/``) names the grid: blocks ("tables") of parties x
Dirichlet beta (x size ratio rho for the size-skew layout of Table 6), the strategies, the
one-shot release modes and encodings, the iterative strategies' defences and the seeds, plus
the run-config settings common to every run. :func:`load_sweep` reads and validates one;
:func:`select_tables` and :func:`with_seeds` narrow it; :func:`parse_overrides` reads
``--set KEY=VALUE`` pairs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.defences import DEFAULT_DEFENCE, DEFENCES
from common.encodings import DEFAULT_ENCODING, ENCODINGS
from common.partition import PARTITIONERS
from common.registry import Registry

__all__ = [
    "DEFAULT_SWEEP", "LAYOUT_PARTITIONERS", "SWEEPS_DIR", "SWEEP_KEYS", "SweepError", "SweepSpec", "TableSpec",
    "load_sweep", "parse_overrides", "select_tables", "with_seeds",
]

SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"
DEFAULT_SWEEP = SWEEPS_DIR / "digits-default.toml"

Strategy = Literal["fedprox", "fedavg", "one-shot-mixup", "local-only"]
Release = Literal["once", "per-epoch"]


def _registered(registry: Registry, values: list[str] | None) -> list[str] | None:
    for value in values or []:
        registry.get(value)  # UnknownVariant (a ValueError) names the known ones
    return values


Encoding = Annotated[str, AfterValidator(lambda v: _registered(ENCODINGS, [v])[0])]
Defence = Annotated[str, AfterValidator(lambda v: _registered(DEFENCES, [v])[0])]
LAYOUT_PARTITIONERS = {"table5": "dirichlet", "table6": "size-skew"}
"""The partitioner of each paper layout: Table 5 has equal sizes, Table 6 one data-poor party."""

# Keys the sweep sets itself per run; a sweep file or --set may not fix them.
SWEEP_KEYS = ("strategy", "seed", "beta", "rho", "partitioner", "poor-party", "release", "encoding", "defence",
              "output-dir", "run-name")


class SweepError(ValueError):
    """A sweep that cannot run as specified; the message says what to change."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class TableSpec(BaseModel):
    """One block of the grid, laid out like the paper's Table 5 or Table 6."""

    model_config = ConfigDict(extra="forbid", alias_generator=_kebab, populate_by_name=True, frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    layout: Literal["table5", "table6"]
    parties: list[int] = Field(min_length=1)
    beta: list[float] = Field(min_length=1)
    rho: list[float] | None = None
    poor_party: int = Field(0, ge=0)
    partitioner: str | None = Field(None, description="registered partitioner; default by layout: Table 5 "
                                    "'dirichlet' (equal sizes), Table 6 'size-skew' (one data-poor party)")
    strategies: list[Strategy] | None = None
    releases: list[Release] | None = None
    encodings: list[Encoding] | None = None
    defences: list[Defence] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("partitioner")
    @classmethod
    def _known_partitioner(cls, value: str | None) -> str | None:
        return None if value is None else _registered(PARTITIONERS, [value])[0]

    @property
    def partitioner_name(self) -> str:
        """The partitioner this block's runs use."""
        return self.partitioner or LAYOUT_PARTITIONERS[self.layout]

    @field_validator("parties")
    @classmethod
    def _two_or_more(cls, value: list[int]) -> list[int]:
        if any(p < 2 for p in value):
            raise ValueError("a collaboration needs at least 2 parties")
        return value

    @model_validator(mode="after")
    def _layout_fits(self) -> TableSpec:
        if self.layout == "table6" and not self.rho:
            raise ValueError(f"table {self.name!r}: layout 'table6' (size skew) needs rho = [...]")
        if self.layout == "table5" and self.rho is not None:
            raise ValueError(f"table {self.name!r}: layout 'table5' has equal party sizes; remove rho")
        if self.layout == "table6" and any(self.poor_party >= p for p in self.parties):
            raise ValueError(f"table {self.name!r}: poor-party {self.poor_party} outside some party count")
        return self


class SweepSpec(BaseModel):
    """A sweep file: the grid, the strategies, the release modes, the one-shot encodings, the seeds
    and the settings. ``encodings`` (sweep-wide, or per block like ``releases``) applies to the
    one-shot strategy only; the iterative strategies have no encoding. ``defences`` (likewise)
    applies to the iterative strategies only: each FedProx/FedAvg cell runs once per defence."""

    model_config = ConfigDict(extra="forbid", alias_generator=_kebab, populate_by_name=True, frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seeds: list[int] = Field(min_length=1)
    strategies: list[Strategy] = Field(default_factory=lambda: ["fedprox", "one-shot-mixup"])
    releases: list[Release] = Field(default_factory=lambda: ["once"])
    encodings: list[Encoding] = Field(default_factory=lambda: [DEFAULT_ENCODING])
    defences: list[Defence] = Field(default_factory=lambda: [DEFAULT_DEFENCE])
    settings: dict[str, Any] = Field(default_factory=dict)
    table: list[TableSpec] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(s < 0 for s in value):
            raise ValueError("seeds must be distinct and >= 0")
        return value

    @model_validator(mode="after")
    def _distinct_tables(self) -> SweepSpec:
        names = [t.name for t in self.table]
        if len(set(names)) != len(names):
            raise ValueError(f"table names must be distinct, got {names}")
        for where, values in [("settings", self.settings)] + [(f"table {t.name!r} settings", t.settings)
                                                              for t in self.table]:
            fixed = sorted(set(values) & set(SWEEP_KEYS))
            if fixed:
                raise ValueError(f"{where}: {', '.join(fixed)} are set by the sweep per run, not in settings")
        return self


def load_sweep(path: Path) -> SweepSpec:
    """Read and validate a sweep file; errors name the file and the offending keys."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"sweep file {path} does not exist (the shipped ones are in {SWEEPS_DIR})") from None
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{path}: not valid TOML ({err})") from None
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        lines = [f"{path}:"]
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            lines.append(f"  {loc or '(file)'}: {e['msg'].removeprefix('Value error, ')}")
        raise SweepError("\n".join(lines)) from None


def select_tables(spec: SweepSpec, names: Iterable[str]) -> SweepSpec:
    """The sweep restricted to the named blocks (file order kept)."""
    wanted = list(dict.fromkeys(names))
    known = [t.name for t in spec.table]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SweepError(f"--tables {' '.join(unknown)}: no such block (the file has {', '.join(known)})")
    return spec.model_copy(update={"table": [t for t in spec.table if t.name in wanted]})


def with_seeds(spec: SweepSpec, seeds: Iterable[int] | None) -> SweepSpec:
    """The sweep with its seeds replaced (``--seeds``); ``None`` or empty keeps the file's."""
    if not seeds:
        return spec
    try:
        return spec.model_copy(update={"seeds": SweepSpec._distinct_seeds(list(seeds))})
    except ValueError as err:
        raise SweepError(str(err)) from None


def parse_overrides(items: Iterable[str]) -> dict[str, object]:
    """``key=value`` pairs with TOML values (``beta=0.1``, ``noise-mode='strict'``)."""
    values: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            values[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"--set {item!r}: value is not a TOML literal ({err})") from None
    return values
