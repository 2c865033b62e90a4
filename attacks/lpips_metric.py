"""LPIPS (Zhang et al., 2018) as a per-sample metric, strictly offline.

The ``lpips`` package ships its learned linear heads (``lpips/weights/v0.1/<net>.pth``) but
builds its backbone through torchvision, which would download the ImageNet weights. Here
the backbone is always constructed *without* weights (``pnet_rand=True``, i.e.
``torchvision.models.alexnet(weights=None)``) and the heads are loaded from the package
file, so nothing ever touches the network. The ImageNet backbone comes from a local copy of
torchvision's file, which the user provides:

========  ===============================  ===========================================
net       torchvision file                 download URL (on a machine with network)
========  ===============================  ===========================================
alex      ``alexnet-owt-7be5be79.pth``     https://download.pytorch.org/models/alexnet-owt-7be5be79.pth
vgg       ``vgg16-397923af.pth``           https://download.pytorch.org/models/vgg16-397923af.pth
squeeze   ``squeezenet1_1-b8a52dc0.pth``   https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth
========  ===============================  ===========================================

``calibrated`` is ``True`` only when the file's SHA-256 starts with the hash prefix
torchvision puts in that file name (the same check ``torch.hub`` does on download), i.e.
when the distances are those of published LPIPS. Any other state dict is loaded but the
metric reports ``calibrated = False``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch.nn import functional as F

__all__ = ["BACKBONE_FILES", "LpipsMetric", "LpipsWeightsMissing"]

# net -> (torchvision file name, SHA-256 prefix of its content).
BACKBONE_FILES: dict[str, tuple[str, str]] = {
    "alex": ("alexnet-owt-7be5be79.pth", "7be5be79"),
    "vgg": ("vgg16-397923af.pth", "397923af"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", "b8a52dc0"),
}

_MIN_SIDE = 32      # images with a side below this are upsampled ...
_UPSAMPLED_SIDE = 64  # ... so that their shorter side becomes this


class LpipsWeightsMissing(RuntimeError):
    """The LPIPS backbone weights are not available locally."""


def _missing_message(net: str) -> str:
    filename, _ = BACKBONE_FILES[net]
    url = f"https://download.pytorch.org/models/{filename}"
    return (
        f"LPIPS needs the ImageNet weights of its '{net}' backbone, which torchvision would "
        f"download and this machine cannot. Copy torchvision's '{filename}' (from {url}, or "
        f"from ~/.cache/torch/hub/checkpoints/ on a machine that has used it) to a local "
        f"path (e.g. ~/mixup-fl-cache/{filename}) and name that path in the setting "
        f"LpipsMetric(backbone_weights=...). allow_random_backbone=True gives uncalibrated "
        f"distances, for plumbing tests only."
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LpipsMetric:
    """Per-sample LPIPS distance between two image batches, without network access.

    Parameters
    ----------
    net : {"alex", "vgg", "squeeze"}
        LPIPS backbone ("alex" is the paper's and the LPIPS authors' default).
    backbone_weights : str, Path or None
        Local torchvision state dict of the backbone (e.g. ``alexnet-owt-7be5be79.pth``);
        its ``features.*`` entries are loaded into LPIPS' backbone. Required unless
        ``allow_random_backbone``.
    allow_random_backbone : bool
        With no file, keep a randomly initialised backbone instead of raising
        :class:`LpipsWeightsMissing`. Such distances mean nothing perceptually: for
        plumbing tests only (``calibrated`` is ``False``).
    device : str or torch.device
        Where the network runs; distances are returned on CPU.
    value_range : (lo, hi)
        Range of the input images, mapped linearly to LPIPS' ``[-1, 1]``. Floats, or one
        value per channel (normalised images), or one per coordinate of ``(C, H, W)``.
        Values outside the range (strict-mode releases) are mapped by the same affine map,
        not clipped, unless ``clip``.
    clip : bool
        Clip the mapped inputs to ``[-1, 1]``.
    batch_size : int
        Image pairs per forward pass.
    seed : int
        Seeds the random backbone (only with ``allow_random_backbone`` and no file).

    Notes
    -----
    Inputs are ``(n, C, H, W)`` (or ``(n, H, W)``) with ``C`` in ``{1, 3}``; one-channel
    images are repeated to three. Images whose shorter side is below 32 px (e.g. the 8x8
    digits) are upsampled bilinearly (``align_corners=False``) so that their shorter side is
    64 px, because AlexNet's strided convolutions and pools leave nothing of smaller
    inputs; distances on such images are therefore LPIPS of the upsampled images.

    Attributes
    ----------
    calibrated : bool
        ``True`` only with torchvision's published backbone file (checked by hash).
    backbone_sha256 : str or None
        SHA-256 of the loaded backbone file.
    """

    def __init__(
        self,
        *,
        net: str = "alex",
        backbone_weights: str | Path | None = None,
        allow_random_backbone: bool = False,
        device: str | torch.device = "cpu",
        value_range=(0.0, 1.0),
        clip: bool = False,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        if net not in BACKBONE_FILES:
            raise ValueError(f"net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        state = None
        self.backbone_sha256: str | None = None
        if backbone_weights is not None:
            path = Path(os.path.expanduser(str(backbone_weights)))
            if not path.is_file():
                raise LpipsWeightsMissing(f"backbone weights file {str(path)!r} does not exist. " + _missing_message(net))
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.backbone_sha256 = _sha256(path)
        elif not allow_random_backbone:
            raise LpipsWeightsMissing(_missing_message(net))

        import lpips  # deferred: optional heavy import

        with warnings.catch_warnings():
            # lpips passes torchvision's deprecated ``pretrained=False``; harmless.
            warnings.simplefilter("ignore", UserWarning)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                # pretrained=False: do not let lpips load the heads itself (it does so with
                # strict=False); pnet_rand=True: torchvision builds the backbone with
                # weights=None and never downloads.
                model = lpips.LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, verbose=False)
        self._load_heads(model, net, Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth")
        if state is not None:
            self._load_backbone(model, state, net)
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)

        self.net = net
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.value_range = value_range
        self.clip = bool(clip)
        self.batch_size = int(batch_size)
        expected = BACKBONE_FILES[net][1]
        self.calibrated = bool(self.backbone_sha256 and self.backbone_sha256.startswith(expected))
        if state is None:
            self.backbone = "random (uncalibrated, plumbing only)"
        elif self.calibrated:
            self.backbone = f"torchvision {BACKBONE_FILES[net][0]} (hash checked)"
        else:
            self.backbone = f"local state dict {self.backbone_sha256[:12]} (not torchvision's published file: uncalibrated)"

    def __repr__(self) -> str:
        return f"LpipsMetric(net='{self.net}', backbone={self.backbone!r}, calibrated={self.calibrated})"

    @staticmethod
    def _load_heads(model: torch.nn.Module, net: str, path: Path) -> None:
        heads = torch.load(path, map_location="cpu", weights_only=True)
        result = model.load_state_dict(heads, strict=False)
        # ``lins.<k>`` are aliases of ``lin<k>`` (same modules in a ModuleList).
        bad_missing = [k for k in result.missing_keys if not k.startswith(("net.", "scaling_layer.", "lins."))]
        if result.unexpected_keys or bad_missing:
            raise RuntimeError(
                f"LPIPS heads in {path} do not match the '{net}' model: missing {bad_missing}, "
                f"unexpected {result.unexpected_keys}"
            )

    @staticmethod
    def _load_backbone(model: torch.nn.Module, state: dict, net: str) -> None:
        """Load torchvision's ``features.<k>.*`` entries into lpips' ``slice<j>.<k>.*``."""
        if not isinstance(state, dict):
            raise ValueError("backbone_weights must hold a state dict (a mapping of tensors)")
        if any(key.startswith("module.") for key in state):
            state = {key.removeprefix("module."): value for key, value in state.items()}
        mapped = {}
        for slice_name, block in model.net.named_children():
            for index, _ in block.named_children():
                for param_name, _ in block.get_submodule(index).named_parameters(recurse=True):
                    source = f"features.{index}.{param_name}"
                    if source not in state:
                        raise ValueError(
                            f"backbone state dict lacks '{source}': expected torchvision's "
                            f"{BACKBONE_FILES[net][0]} ({net} backbone)"
                        )
                    mapped[f"{slice_name}.{index}.{param_name}"] = state[source]
        model.net.load_state_dict(mapped, strict=True)

    # -- evaluation -------------------------------------------------------------------------

    def _prepare(self, images: torch.Tensor, value_range) -> torch.Tensor:
        x = images.detach()
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS needs images (n, C, H, W) with C in {{1, 3}}, got shape {tuple(images.shape)}")
        x = x.to(self.device, torch.float32)
        lo, hi = _range_tensors(value_range, x.shape[1:], self.device)
        x = (x - lo) / (hi - lo) * 2.0 - 1.0
        if self.clip:
            x = x.clamp(-1.0, 1.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        if min(h, w) < _MIN_SIDE:
            scale = _UPSAMPLED_SIDE / min(h, w)
            size = (max(_UPSAMPLED_SIDE, round(h * scale)), max(_UPSAMPLED_SIDE, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x.contiguous()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, references: torch.Tensor, *, value_range=None) -> torch.Tensor:
        """LPIPS distance of every ``images[i]`` to ``references[i]``: float32 ``(n,)`` on CPU.

        ``value_range`` overrides the instance's range for this call.
        """
        if images.shape != references.shape:
            raise ValueError(f"shapes differ: {tuple(images.shape)} vs {tuple(references.shape)}")
        value_range = self.value_range if value_range is None else value_range
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            a = self._prepare(images[start:start + self.batch_size], value_range)
            b = self._prepare(references[start:start + self.batch_size], value_range)
            out.append(self.model(a, b).reshape(-1).float().cpu())
        return torch.cat(out) if out else torch.empty(0)


def _range_tensors(value_range, shape, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` broadcastable to ``(n, C, H, W)``: scalars, per channel or per coordinate."""
    c, h, w = shape
    lo, hi = (torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1) for v in value_range)
    if lo.numel() != hi.numel():
        raise ValueError("value_range bounds need the same number of values")
    if lo.numel() == 1:
        lo, hi = lo.reshape(1, 1, 1, 1), hi.reshape(1, 1, 1, 1)
    elif lo.numel() == c:
        lo, hi = lo.reshape(1, c, 1, 1), hi.reshape(1, c, 1, 1)
    elif lo.numel() == c * h * w:
        lo, hi = lo.reshape(1, c, h, w), hi.reshape(1, c, h, w)
    else:
        raise ValueError(f"value_range needs 1, {c} or {c * h * w} values per bound, got {lo.numel()}")
    if not bool((hi > lo).all()):
        raise ValueError("value_range must satisfy lo < hi")
    return lo, hi
