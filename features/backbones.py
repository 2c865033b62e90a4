"""Frozen ImageNet backbones with their classification head removed (appendix E).

``resnet18`` / ``resnet50`` keep torchvision's layers up to ``layer4``; the output map
(``512 x 7 x 7`` resp. ``2048 x 7 x 7`` at 224 px) is either flattened (``"flatten"``:
25,088 features for ResNet-18, as the paper's classifier expects) or averaged over space
(``"avg"``: 512 resp. 2,048). Parameters never receive gradients and BatchNorm stays in
eval mode: the backbone is a public, fixed map, not part of the privacy mechanism.

Weights come from exactly one declared source, and :class:`BackboneWeights` records which:

* a torchvision weight enum name (``"IMAGENET1K_V1"``, ``"IMAGENET1K_V2"``, ``"DEFAULT"``),
  read from torch's hub cache or downloaded there;
* an absolute path to a local ``state_dict`` file (``torch.save``), e.g. the hub file copied
  from a machine with internet;
* ``"none"``: random initialisation, only when asked for by name.

Nothing falls back silently: a missing file or a failed download is an error.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "BACKBONES",
    "BackboneError",
    "BackboneWeights",
    "FrozenBackbone",
    "build_backbone",
    "check_weights_file",
    "feature_dim",
    "file_sha256",
]

BACKBONES = ("resnet18", "resnet50")
WEIGHT_ENUM_NAMES = ("IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT")
_CHANNELS = {"resnet18": 512, "resnet50": 2048}


def _torchvision_model(name: str) -> tuple:
    """``(constructor, weight enum)`` of a torchvision ResNet. Imported on use: torchvision
    costs every simulated party about a second of start-up, and runs on raw inputs never
    need it."""
    from torchvision import models

    return {"resnet18": (models.resnet18, models.ResNet18_Weights),
            "resnet50": (models.resnet50, models.ResNet50_Weights)}[name]


class BackboneError(RuntimeError):
    """A backbone or its weights cannot be provided as configured."""


@dataclass(frozen=True)
class BackboneWeights:
    """Where a backbone's weights came from; goes into every run summary."""

    source: str  # "torchvision-enum" | "local-file" | "random-init"
    name: str  # enum name, file path, or "none"
    sha256: str  # of the loaded state_dict's tensors ("" for random init)
    url: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @property
    def tag(self) -> str:
        """Short identity for cache keys: the same weights give the same tag."""
        return "random" if self.source == "random-init" else self.sha256[:16]


def feature_dim(backbone: str, pool: str, image_size: int) -> int:
    """Length of a feature vector: ``C * s * s`` with ``s = ceil(image_size / 32)`` for
    ``"flatten"``, ``C`` for ``"avg"``."""
    channels = _CHANNELS[backbone]
    if pool == "avg":
        return channels
    side = _layer4_side(image_size)
    return channels * side * side


def _layer4_side(image_size: int) -> int:
    side = image_size
    for _ in range(5):  # conv1 stride 2, maxpool, layer2-4 strides: five halvings (ceil)
        side = (side + 1) // 2
    return side


class FrozenBackbone(nn.Module):
    """``conv1 ... layer4`` of a torchvision ResNet followed by the chosen pooling."""

    def __init__(self, resnet: nn.Module, *, pool: str) -> None:
        super().__init__()
        if pool not in ("flatten", "avg"):
            raise ValueError(f"pool must be 'flatten' or 'avg', got {pool!r}")
        self.body = nn.Sequential(
            resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
            resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4,
        )
        self.pool = pool
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenBackbone:  # noqa: ARG002 - always frozen
        # BatchNorm must keep ImageNet running statistics whatever the caller asks.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.body(images)
        if self.pool == "avg":
            return maps.mean(dim=(2, 3))
        return maps.flatten(1)


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (as ``sha256sum`` prints it), kept per path, size and mtime."""
    file = Path(path).expanduser()
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def check_weights_file(path: str, expected_sha256: str) -> str:
    """Refuse a weights file whose SHA-256 is not the one the run expects.

    Every node reads the backbone from its own disk; the run config names the file's hash so
    that all parties (and the server) extract features with the same weights.

    Returns
    -------
    str
        The file's SHA-256.

    Raises
    ------
    BackboneError
        The file is missing, or its hash differs (both hashes named).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise BackboneError(f"backbone-weights = {path!r}: no such file on this node (the run expects a file with "
                            f"SHA-256 {expected_sha256})")
    found = file_sha256(file)
    if found != expected_sha256.lower():
        raise BackboneError(f"backbone-weights = {path!r}: this node's file has SHA-256 {found}, the run expects "
                            f"{expected_sha256.lower()} (backbone-sha256); copy the right weights file here")
    return found


def _state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def _load_local_file(path: str) -> dict[str, torch.Tensor]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise BackboneError(
            f"backbone-weights = {path!r}: no such file. Give the absolute path of a state_dict "
            "saved with torch.save (e.g. torchvision's hub file resnet18-f37072fd.pth), an enum "
            f"name {WEIGHT_ENUM_NAMES}, or 'none' for random initialisation."
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is reported with the path
        raise BackboneError(f"backbone-weights = {path!r}: cannot read a state_dict: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"backbone-weights = {path!r}: file holds no state_dict of tensors")
    return state


def _load_enum(backbone: str, enum_name: str) -> tuple[dict[str, torch.Tensor], str]:
    enum = _torchvision_model(backbone)[1]
    weights = getattr(enum, enum_name)
    hub = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        return weights.get_state_dict(progress=False, check_hash=True), weights.url
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        raise BackboneError(
            f"cannot obtain torchvision weights {enum.__name__}.{enum_name}: {err}. "
            f"Without internet, copy {os.path.basename(weights.url)} (from {weights.url}) to {hub}, "
            "or set backbone-weights to the absolute path of that file."
        ) from err


def build_backbone(
    *, name: str, weights: str, pool: str, device: torch.device | str = "cpu"
) -> tuple[FrozenBackbone, BackboneWeights]:
    """Build a frozen feature extractor and describe its weights.

    Parameters
    ----------
    name : {"resnet18", "resnet50"}
    weights : str
        A torchvision enum name, an absolute path to a state_dict file, or ``"none"``.
    pool : {"flatten", "avg"}
    device : torch device

    Raises
    ------
    BackboneError
        Unknown backbone, unreadable file, weights that do not fit the architecture (other
        than the removed ``fc`` head), or enum weights that are neither cached nor
        downloadable.
    """
    if name not in _CHANNELS:
        raise BackboneError(f"unknown backbone {name!r}; available: {BACKBONES}")
    constructor = _torchvision_model(name)[0]
    resnet = constructor(weights=None)
    if weights == "none":
        info = BackboneWeights(source="random-init", name="none", sha256="")
    else:
        if weights in WEIGHT_ENUM_NAMES:
            state, url = _load_enum(name, weights)
            source = "torchvision-enum"
        elif os.path.isabs(os.path.expanduser(weights)):
            state, url = _load_local_file(weights), ""
            source = "local-file"
        else:
            raise BackboneError(
                f"backbone-weights = {weights!r}: expected one of {WEIGHT_ENUM_NAMES}, an absolute "
                "file path, or 'none'"
            )
        # The head is removed anyway: a headless file is as good as a full one.
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = resnet.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise BackboneError(
                f"backbone-weights = {weights!r} do not fit {name}: {str(err).splitlines()[1:3]}"
            ) from None
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise BackboneError(
                f"backbone-weights = {weights!r} do not fit {name}: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {list(unexpected)[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        info = BackboneWeights(source=source, name=weights, sha256=_state_dict_digest(state), url=url)
    backbone = FrozenBackbone(resnet, pool=pool).to(device)
    return backbone, info
