"""The privacy audit's data: one party's private images and the attacker's public set.

The offline default splits scikit-learn's digits: a seeded part of the training split is the
private party, the rest the attacker's public set (the same distribution). Image data sets
are audited in the normalised space of the paper's appendix E, with per-channel valid ranges;
the public set is a disjoint part of the same split or another data set (the paper trains its
U-Net attacker on Tiny-ImageNet and attacks CIFAR-10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from common.preprocess import NORMALISATION, ImagePreprocessing
from loaders import load_dataset

__all__ = ["AuditData", "digits_audit_data", "image_audit_data"]


@dataclass(frozen=True)
class AuditData:
    """The private party's images, the attacker's public images, their shape and range.

    ``valid_range`` is ``(lo, hi)`` as floats, or as ``(C, H, W)`` tensors for normalised
    images (one range per channel, repeated over the pixels).
    """

    name: str
    private: torch.Tensor  # (n, C, H, W)
    private_labels: torch.Tensor
    public: torch.Tensor
    sample_shape: tuple[int, ...]
    valid_range: tuple[float, float] | tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    description: str

    @property
    def flat_range(self):
        """The range as Algorithm 1's clamp takes it for flattened rows."""
        lo, hi = self.valid_range
        return (lo.reshape(-1), hi.reshape(-1)) if isinstance(lo, torch.Tensor) else (lo, hi)

    @property
    def data_range(self):
        """Width of the valid range: a float, or one width per channel."""
        lo, hi = self.valid_range
        if isinstance(lo, torch.Tensor):
            return (hi - lo)[:, 0, 0]
        return hi - lo


def digits_audit_data(*, private_size: int, seed: int) -> AuditData:
    """Split digits' training split into a private party and a disjoint public set."""
    data = load_dataset("digits", data_dir="", test_fraction=0.2, download=False)
    x = data.train_x.reshape(-1, 1, 8, 8).float()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    if not 2 <= private_size < x.shape[0] - 32:
        raise ValueError(f"private-size must be in [2, {x.shape[0] - 32}), got {private_size}")
    private, public = order[:private_size], order[private_size:]
    return AuditData(
        name="digits", private=x[private], private_labels=data.train_y[private], public=x[public],
        sample_shape=(1, 8, 8),
        valid_range=(0.0, 1.0), num_classes=data.num_classes,
        description=f"digits: {private_size} private images, {public.numel()} public images (disjoint, same "
        "distribution), 1x8x8 in [0, 1]",
    )


def image_audit_data(
    *,
    dataset: str,
    data_dir: str,
    private_size: int,
    public_size: int,
    image_size: int | None,
    seed: int,
    public_dataset: str | None = None,
    public_data_dir: str = "",
) -> AuditData:
    """A private party drawn from an image data set's training split, normalised as in the
    paper's appendix E (Table 7 statistics; resized to ``image_size`` and 3 channels when
    given, native size otherwise), and an attacker's public set: ``public_dataset`` when
    given (the paper trains its U-Net on Tiny-ImageNet and attacks CIFAR-10), else a disjoint
    part of the same training split. Both go through the private set's preprocessing, which
    the attacker knows."""
    data = load_dataset(dataset, data_dir=data_dir, test_fraction=0.2, download=False)
    if data.kind != "image":
        raise ValueError(f"{dataset} holds no images")
    mean, std = NORMALISATION[dataset]
    pre = ImagePreprocessing(mean=mean, std=std, size=image_size, channels=3 if image_size else None)
    order = torch.randperm(data.train_x.shape[0], generator=torch.Generator().manual_seed(seed))
    private_idx = order[:private_size]
    if public_dataset:
        pub = load_dataset(public_dataset, data_dir=public_data_dir or data_dir, test_fraction=0.2, download=False)
        pub_order = torch.randperm(pub.train_x.shape[0], generator=torch.Generator().manual_seed(seed + 1))
        public_images, public_name = pub.train_x[pub_order[:public_size]], public_dataset
    else:
        public_images, public_name = data.train_x[order[private_size : private_size + public_size]], dataset
    if public_images.shape[0] < 32:
        raise ValueError(f"the public set has {public_images.shape[0]} images; the U-Net attacker needs at least 32")
    private = pre(data.train_x[private_idx])
    public = pre(public_images)
    if public.shape[1:] != private.shape[1:]:
        raise ValueError(f"public images map to {tuple(public.shape[1:])}, private ones to {tuple(private.shape[1:])}; "
                         "set --image-size so both have one shape")
    shape = tuple(private.shape[1:])
    lo, hi = pre.valid_bounds(shape[0])
    valid = (lo[0].expand(*shape).contiguous(), hi[0].expand(*shape).contiguous())
    return AuditData(
        name=dataset, private=private, private_labels=data.train_y[private_idx], public=public, sample_shape=shape,
        valid_range=valid, num_classes=data.num_classes,
        description=f"{dataset}: {private.shape[0]} private images; public: {public.shape[0]} images of "
        f"{public_name}{' (disjoint part of the same split)' if not public_dataset else ''}; "
        f"{'x'.join(map(str, shape))}, normalised with Table 7's statistics",
    )
