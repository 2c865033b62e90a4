"""The paper's published accuracies (Tables 4, 5 and 6) and protocol constants, as data.

Both tables report CIFAR-10 test accuracy (%) in the paper's setting: images preprocessed
for ImageNet and passed through a frozen, ImageNet-pretrained ResNet-18; privacy parameter
tau = 1e-6; FedProx with proximal coefficient mu = 1e-3 and 50 communication rounds (one
local epoch per round, data-size-weighted averaging); singularized mixup releases each
party's mixed features once and the server trains one classifier on their union.

* Table 5: Dirichlet label skew with equal party sizes, P in {10, 50, 100} and
  beta in {1.0, 0.5, 0.1}.
* Table 6: P = 50 with one data-poor party holding rho times a data-rich party's share
  (total size fixed), beta in {1.0, 0.5, 0.1} and rho in {1.0, 0.1, 0.01}.

Only the FedProx and singularized-mixup columns are stored; the paper's Δ is their
difference (mixup - FedProx) and is recomputed by :func:`paper_delta`. Table 6's printed Δ
column has no '+' sign (``5.18`` rather than ``+5.18``) but the same meaning as Table 5's.

Table 4 (section 5.2) is the paper's accuracy comparison with InstaHide: one test accuracy
per data set for the best reported InstaHide configuration (k = 4) and for singularized mixup
at tau = 1e-6, each data set on the frozen ImageNet backbone of the paper's Table 7
(ResNet-18 for MNIST and CIFAR-10, ResNet-50 for CIFAR-100 and Tiny-ImageNet). It is not a
collaborative (partitioned) experiment; the paper prints no InstaHide number for Tiny-ImageNet.

This module owns the paper's published numbers and protocol constants, and the tests of
whether a sweep's inputs are the paper's (:func:`paper_setting_matches`,
:func:`paper_table4_setting_matches`, :func:`not_the_papers_inputs`); the report's tables put
them beside the sweep's own numbers only when they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

PAPER_SETTING: dict[str, str] = {"dataset": "cifar10", "backbone": "resnet18"}
"""The data set and backbone the paper's Tables 5 and 6 were made with (run-config spelling)."""

# The paper's protocol constants for Tables 5 and 6, to flag a sweep that departs from them.
PAPER_TAU = 1e-6
PAPER_PROXIMAL_MU = 1e-3
PAPER_FL_ROUNDS = 50

PAPER_SETTING_DESCRIPTION = (
    "CIFAR-10, frozen ImageNet ResNet-18 features, tau = 1e-6, FedProx mu = 1e-3, 50 rounds"
)

# (P, beta) -> (FedProx, singularized mixup), Table 5 of the paper.
PAPER_TABLE5: dict[tuple[int, float], tuple[float, float]] = {
    (10, 1.0): (87.50, 88.38),
    (10, 0.5): (87.60, 88.01),
    (10, 0.1): (75.10, 81.14),
    (50, 1.0): (82.93, 87.41),
    (50, 0.5): (83.39, 84.26),
    (50, 0.1): (75.21, 81.73),
    (100, 1.0): (76.42, 88.25),
    (100, 0.5): (76.60, 88.33),
    (100, 0.1): (77.35, 82.18),
}

# (P, beta, rho) -> (FedProx, singularized mixup), Table 6 of the paper.
PAPER_TABLE6: dict[tuple[int, float, float], tuple[float, float]] = {
    (50, 1.0, 1.0): (83.09, 88.27),
    (50, 1.0, 0.1): (81.56, 88.67),
    (50, 1.0, 0.01): (81.27, 87.22),
    (50, 0.5, 1.0): (83.54, 88.04),
    (50, 0.5, 0.1): (81.51, 89.05),
    (50, 0.5, 0.01): (81.70, 88.56),
    (50, 0.1, 1.0): (82.07, 86.22),
    (50, 0.1, 0.1): (80.55, 88.36),
    (50, 0.1, 0.01): (80.23, 85.08),
}

# The Δ column exactly as printed in the paper, kept only so a test can check that the
# stored FedProx/mixup pairs were transcribed consistently with it.
PAPER_PRINTED_DELTA5: dict[tuple[int, float], float] = {
    (10, 1.0): 0.88, (10, 0.5): 0.41, (10, 0.1): 6.04,
    (50, 1.0): 4.48, (50, 0.5): 0.87, (50, 0.1): 6.52,
    (100, 1.0): 11.83, (100, 0.5): 11.73, (100, 0.1): 4.83,
}
PAPER_PRINTED_DELTA6: dict[tuple[int, float, float], float] = {
    (50, 1.0, 1.0): 5.18, (50, 1.0, 0.1): 7.11, (50, 1.0, 0.01): 5.95,
    (50, 0.5, 1.0): 4.50, (50, 0.5, 0.1): 7.54, (50, 0.5, 0.01): 6.86,
    (50, 0.1, 1.0): 4.15, (50, 0.1, 0.1): 7.81, (50, 0.1, 0.01): 4.85,
}


def paper_setting_matches(*, dataset: str, backbone: str) -> bool:
    """Whether a sweep's data set and backbone are the ones the paper's tables used.

    Parameters
    ----------
    dataset, backbone : str
        Run-config values (``"cifar10"``, ``"resnet18"``, ...).

    Returns
    -------
    bool
        True only for CIFAR-10 on a ResNet-18 backbone: other settings would make a
        side-by-side with the paper's numbers meaningless.
    """
    return dataset == PAPER_SETTING["dataset"] and backbone == PAPER_SETTING["backbone"]


def _same_knob(a: float, b: float) -> bool:
    # beta and rho come back from CSV as parsed floats; compare with a tolerance so that
    # e.g. 0.1 written by another formatter still finds the paper's cell.
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def paper_cell(*, layout: str, parties: int, beta: float, rho: float = 1.0) -> tuple[float, float] | None:
    """The paper's (FedProx, singularized mixup) accuracies for one cell, if it reports one.

    Parameters
    ----------
    layout : str
        ``"table5"`` (equal sizes; ``rho`` is ignored) or ``"table6"`` (one data-poor party).
    parties : int
        Number of parties P.
    beta : float
        Dirichlet concentration.
    rho : float, optional
        Size ratio of the data-poor party (Table 6 only).

    Returns
    -------
    tuple of float or None
        ``(fedprox_percent, mixup_percent)``, or None where the paper has no such cell.
    """
    if layout == "table5":
        for (p, b), pair in PAPER_TABLE5.items():
            if p == parties and _same_knob(b, beta):
                return pair
        return None
    if layout == "table6":
        for (p, b, r), pair in PAPER_TABLE6.items():
            if p == parties and _same_knob(b, beta) and _same_knob(r, rho):
                return pair
        return None
    return None


def paper_delta(pair: tuple[float, float]) -> float:
    """Singularized mixup minus FedProx for one of the paper's cells, in percentage points."""
    fedprox, mixup = pair
    return mixup - fedprox


# Data set (run-config spelling) -> (InstaHide k = 4, singularized mixup tau = 1e-6), Table 4 of
# the paper; None where the paper prints '–'.
PAPER_TABLE4: dict[str, tuple[float | None, float]] = {
    "mnist": (99.66, 99.32),
    "cifar10": (91.20, 90.51),
    "cifar100": (74.01, 75.99),
    "tiny-imagenet": (None, 72.50),
}

PAPER_TABLE4_COMPARATOR = "instahide"
"""The encoding (run-config name) the paper's Table 4 compares singularized mixup with: its
numbers stand beside a sweep's only in the comparison with this encoding."""

PAPER_TABLE4_INSTAHIDE_K = 4
"""Samples per InstaHide encoding in the paper's comparator (its best reported configuration)."""

PAPER_TABLE4_BACKBONES: dict[str, str] = {
    "mnist": "resnet18",
    "cifar10": "resnet18",
    "cifar100": "resnet50",
    "tiny-imagenet": "resnet50",
}
"""The frozen ImageNet backbone per data set of the paper's accuracy experiments (its Table 7)."""

PAPER_DATASET_NAMES: dict[str, str] = {
    "mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tiny-imagenet": "Tiny-ImageNet",
}


def paper_table4_setting_matches(*, dataset: str, backbone: str) -> bool:
    """Whether a run's data set and backbone are those of a column of the paper's Table 4.

    Parameters
    ----------
    dataset, backbone : str
        Run-config values (``"cifar10"``, ``"resnet18"``, ...).

    Returns
    -------
    bool
        True only for one of the paper's data sets on the backbone the paper used for it
        (:data:`PAPER_TABLE4_BACKBONES`).
    """
    return PAPER_TABLE4_BACKBONES.get(dataset) == backbone and dataset in PAPER_TABLE4


def paper_table4_cell(dataset: str) -> tuple[float | None, float] | None:
    """The paper's (InstaHide k = 4, singularized mixup) test accuracies (%) for one data set.

    Parameters
    ----------
    dataset : str
        Run-config spelling (``"mnist"``, ``"cifar10"``, ``"cifar100"``, ``"tiny-imagenet"``).

    Returns
    -------
    tuple or None
        ``(instahide_percent_or_None, mixup_percent)``, or None for a data set the paper's
        Table 4 does not have.
    """
    return PAPER_TABLE4.get(dataset)


def paper_table4_compares(encoding: str) -> bool:
    """Whether the paper's Table 4 numbers are for the comparator encoding ``encoding``.

    Parameters
    ----------
    encoding : str
        A run-config encoding name.

    Returns
    -------
    bool
        True only for :data:`PAPER_TABLE4_COMPARATOR`, the one comparator the paper measured.
    """
    return encoding == PAPER_TABLE4_COMPARATOR


def not_the_papers_inputs(settings: Mapping[str, object]) -> str:
    """Why a sweep on the paper's data set and backbone still is not comparable with the
    paper's numbers.

    Parameters
    ----------
    settings : mapping
        Run-config values common to the sweep (``data``, ``backbone-weights``, ...).

    Returns
    -------
    str
        The reasons (generated data, a backbone without ImageNet weights), joined by "; ";
        empty when the inputs are the paper's.
    """
    reasons = []
    if "generated" in str(settings.get("data", "")):
        reasons.append(f"the data are {settings['data']}")
    if str(settings.get("backbone-weights", "")) == "none":
        reasons.append("the backbone has random weights (backbone-weights = 'none'), not ImageNet's")
    return "; ".join(reasons)
