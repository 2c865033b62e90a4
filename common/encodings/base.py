"""The one-shot encoding interface: what a party releases, and what the server must check.

An encoding turns a party's private rows into the rows it uploads once (singularized
mixup's Algorithm 1, or the InstaHide comparator). One class per module, registered in
:data:`ENCODINGS` under the name the run config's ``encoding`` key uses. The class states

* how a party makes its release (:meth:`Encoding.encode`),
* which figures its upload must carry (:attr:`Encoding.first_release_metrics`, for the
  first query, and :attr:`Encoding.later_release_metrics`, for a per-epoch re-release); the
  server's upload check reads these, never the encoding's name,
* its privacy summary for the run summary (:meth:`Encoding.privacy_summary`) and the lines
  of the run's log table (:meth:`Encoding.log_rows`),
* its label in tables (:attr:`Encoding.label`) and whether it belongs in the paper's
  Tables 5/6 (:attr:`Encoding.paper_tables`).

The generic party-side steps (the raw-row guard, the upload dtype, the sizes every upload
reports) are the client's (:mod:`client.release`); the generic server-side checks (shapes,
dtypes, the simplex, the size limit) are the server's (:mod:`server.validation`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from common.registry import Registry

if TYPE_CHECKING:
    from common.config import RunConfig
    from common.party import PartyData

__all__ = ["ENCODINGS", "EncodedRows", "Encoding", "EncodingOutput", "get_encoding", "release_nbytes"]

LABEL_ITEMSIZE = 4
"""Soft labels travel as float32, whatever the run's ``upload-dtype``."""


def release_nbytes(rows: int, input_dim: int, num_classes: int, upload_dtype: str) -> int:
    """Bytes of the arrays of a release of ``rows`` rows: inputs in ``upload_dtype`` plus
    float32 soft labels (what a party announces, and what the server recomputes from the
    announced shapes).

    Parameters
    ----------
    rows : int
        Released rows (training and validation parts together).
    input_dim : int
        Elements of one input row.
    num_classes : int
        Width of the soft labels.
    upload_dtype : {"float32", "float16"}
        The run's ``upload-dtype``.
    """
    itemsize = {"float32": 4, "float16": 2}.get(upload_dtype)
    if itemsize is None:
        raise ValueError(f"unknown upload dtype {upload_dtype!r}")
    return int(rows) * (int(input_dim) * itemsize + int(num_classes) * LABEL_ITEMSIZE)


class EncodedRows(Protocol):
    """Released rows: inputs ``x`` (n, ...) and soft labels ``y`` (n, C)."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class EncodingOutput:
    """What :meth:`Encoding.encode` returns: the training release, the validation release
    (``None`` when not asked for) and the encoding's own figures (numbers only)."""

    train: EncodedRows
    val: EncodedRows | None
    metrics: dict[str, float | int] = field(default_factory=dict)


class Encoding(ABC):
    """A one-shot encoding. Subclasses set the class attributes and implement :meth:`encode`
    and :meth:`privacy_summary`; ``@ENCODINGS.register`` makes the run config's name find them.
    """

    name: ClassVar[str]
    """The run config's ``encoding`` value."""
    label: ClassVar[str]
    """How tables name the method."""
    paper_tables: ClassVar[bool] = False
    """Whether runs of this encoding fill the paper's Tables 5/6 and the release-mode table
    (singularized mixup only: the paper compares it, not its comparators, with FedProx)."""
    first_release_metrics: ClassVar[tuple[str, ...]] = ()
    """Numeric figures every first release must carry (the summary aggregates them)."""
    later_release_metrics: ClassVar[tuple[str, ...]] = ()
    """Numeric figures a later (per-epoch) release must carry."""
    metric_ranges: ClassVar[Mapping[str, tuple[float, float]]] = {}
    """``name -> (low, high)`` every figure of this encoding must lie in (checked by the server
    before anything is used; ``high = inf`` admits only finite values unless the name is in
    :attr:`infinite_metrics`)."""
    infinite_metrics: ClassVar[frozenset[str]] = frozenset()
    """Figures that may legitimately be +inf (a bound that is void when the noise is zero)."""
    compares_absolute_values: ClassVar[bool] = False
    """The raw-row guard compares ``|x~|`` with ``|x|`` (an encoding with a sign mask)."""
    releases_raw_rows: ClassVar[bool] = False
    """The encoding uploads private rows on purpose (a no-protection reference point): the
    client's raw-row guard stands aside, and every table says so."""
    has_calibrated_noise: ClassVar[bool] = False
    """Whether ``tau`` and ``noise-mode`` apply (tables print them only then)."""

    def check_config(self, cfg: RunConfig) -> None:
        """Refuse settings this encoding cannot run with: raise ``ValueError("key: why")``."""

    def required_metrics(self, party_figures: str, *, first: bool) -> tuple[str, ...]:
        """The figures an upload must carry: of the first release or a later (per-epoch) one,
        under the run's ``party-figures`` ("coarse" or "exact")."""
        return self.first_release_metrics if first else self.later_release_metrics

    def party_metrics(self, cfg: RunConfig, metrics: dict[str, float | int]) -> dict[str, float | int]:
        """What of its own figures a party sends (``party-figures``): by default all of them;
        an encoding whose figures reveal the party's private statistics coarsens or withholds
        those in ``"coarse"`` mode."""
        return metrics

    def release_rows(self, private_rows: int) -> int:
        """Rows a release of ``private_rows`` private rows has (what a party announces before
        it encodes anything). Every built-in encoding releases one row per private row
        (Algorithm 1 pairs by a derangement; InstaHide encodes each row once; pooled sends the
        rows); an encoding that releases more or fewer overrides this, or its uploads no
        longer match their announcements and are refused."""
        return int(private_rows)

    def input_bound(self, cfg: RunConfig, *, value_bound: float | None, dim: int) -> float | None:
        """The largest ``|x~|`` a legitimate release can carry, from public facts only: the
        largest ``|x|`` of the data's valid range (``value_bound``; ``None`` when the inputs
        have no public range, e.g. backbone features) and the row dimension. ``None``: no
        bound. A party's own claims (its radius, say) never enter. The default suits an
        encoding whose outputs are convex combinations of inputs (InstaHide, pooled rows); one
        that adds noise must override it (singularized mixup bounds its spherical noise; an
        encoding with unbounded noise returns ``None``), or every release is refused."""
        return value_bound

    @abstractmethod
    def encode(
        self, cfg: RunConfig, party: PartyData, *, device: torch.device, epoch: int, with_validation: bool
    ) -> EncodingOutput:
        """Encode the party's training part (and, with ``with_validation``, its validation part).

        ``epoch`` (1-based) selects fresh randomness for a per-epoch re-release; epoch 1 is the
        one-shot release. Figures measured on private data are computed here, on the party.
        """

    @abstractmethod
    def privacy_summary(self, cfg: RunConfig, parties: Sequence[Mapping[str, Any]], releases: Counter) -> dict:
        """The run summary's ``privacy`` block, from every contributing party's first-release
        metrics and how many releases each party made (by partition id). It must hold
        ``encoding``, ``release_mode``, ``noise_mode`` (``"none"`` without calibrated noise),
        ``tau`` (``None`` likewise), ``releases_per_party`` and ``exposures_per_sample``
        (mean / max over parties of how often each private training sample was released)."""

    def log_rows(self, privacy: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(label, text)`` lines for the run's log table (after the accuracy)."""
        return []

    def table_fields(self, privacy: Mapping[str, Any]) -> dict[str, Any]:
        """Encoding-specific columns of a sweep's ``runs.csv`` row (``noise_mode``, ``tau``,
        ``snr_pc1_mean``, ... ; columns an encoding does not have stay empty)."""
        return {}


ENCODINGS: Registry[Encoding] = Registry("encoding")


def get_encoding(name: str) -> Encoding:
    """An instance of the encoding a run config names (registered name or ``module:Class``)."""
    return ENCODINGS.create(name)
