"""Frozen backbones: shapes of both poolings, the three weight sources and their errors."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torchvision import models

from common.config import ConfigError, parse_run_config
from features.backbones import BackboneError, build_backbone, feature_dim


@pytest.mark.parametrize(
    ("name", "pool", "size", "expected"),
    [
        ("resnet18", "flatten", 224, 25_088),  # the paper's 512 x 7 x 7
        ("resnet18", "avg", 224, 512),
        ("resnet18", "flatten", 64, 512 * 2 * 2),
        ("resnet50", "avg", 64, 2048),
        ("resnet50", "flatten", 64, 2048 * 2 * 2),
    ],
)
def test_feature_shapes_match_the_declared_dimension(name, pool, size, expected):
    backbone, info = build_backbone(name=name, weights="none", pool=pool)
    assert info.source == "random-init" and info.tag == "random"
    assert feature_dim(name, pool, size) == expected
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, size, size))
    assert out.shape == (2, expected)


def test_backbone_is_frozen_and_stays_in_eval_mode():
    backbone, _ = build_backbone(name="resnet18", weights="none", pool="avg")
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()  # must not switch BatchNorm to batch statistics
    assert not backbone.training
    bn = backbone.body[1]
    before = bn.running_mean.clone()
    with torch.no_grad():
        backbone(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert torch.equal(bn.running_mean, before)


def test_weights_from_a_local_file_are_loaded_exactly_and_identified(tmp_path):
    torch.manual_seed(3)
    reference = models.resnet18(weights=None)
    path = tmp_path / "resnet18-local.pth"
    torch.save(reference.state_dict(), path)
    backbone, info = build_backbone(name="resnet18", weights=str(path), pool="avg")
    assert info.source == "local-file" and info.name == str(path) and len(info.sha256) == 64
    x = torch.randn(2, 3, 64, 64)
    reference.eval()
    with torch.no_grad():
        body = torch.nn.Sequential(*list(reference.children())[:-2])
        expected = body(x).mean(dim=(2, 3))
        assert torch.allclose(backbone(x), expected, atol=1e-5)
    # A headless copy of the same weights is the same backbone (same digest).
    headless = tmp_path / "headless.pth"
    torch.save({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}, headless)
    _, info2 = build_backbone(name="resnet18", weights=str(headless), pool="avg")
    assert info2.sha256 == info.sha256
    # Other weights give another digest, so cache keys differ.
    torch.save(models.resnet18(weights=None).state_dict(), tmp_path / "other.pth")
    _, other = build_backbone(name="resnet18", weights=str(tmp_path / "other.pth"), pool="avg")
    assert other.sha256 != info.sha256


def test_a_checkpoint_wrapped_in_a_state_dict_key_is_accepted(tmp_path):
    reference = models.resnet18(weights=None)
    torch.save({"state_dict": reference.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    _, info = build_backbone(name="resnet18", weights=str(tmp_path / "ckpt.pth"), pool="avg")
    assert info.source == "local-file"


def test_missing_or_mismatched_weight_files_fail_loudly(tmp_path):
    with pytest.raises(BackboneError, match="no such file"):
        build_backbone(name="resnet18", weights=str(tmp_path / "absent.pth"), pool="avg")
    torch.save(models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(BackboneError, match="do not fit resnet18"):
        build_backbone(name="resnet18", weights=str(tmp_path / "r50.pth"), pool="avg")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot read"):
        build_backbone(name="resnet18", weights=str(tmp_path / "junk.pth"), pool="avg")
    with pytest.raises(BackboneError, match="expected one of"):
        build_backbone(name="resnet18", weights="imagenet", pool="avg")


def test_enum_weights_without_internet_say_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline, raising=False)
    with pytest.raises(BackboneError) as err:
        build_backbone(name="resnet18", weights="IMAGENET1K_V1", pool="flatten")
    text = str(err.value)
    assert "resnet18-f37072fd.pth" in text and str(tmp_path / "hub" / "checkpoints") in text
    assert "backbone-weights" in text


def test_run_config_refuses_relative_weight_paths_and_backbones_on_digits():
    with pytest.raises(ConfigError, match="backbone-weights"):
        parse_run_config({"backbone-weights": "weights/resnet18.pth"})
    with pytest.raises(ConfigError, match="backbone"):
        parse_run_config({"backbone": "resnet18"})  # dataset defaults to digits
    with pytest.raises(ConfigError, match="data-dir"):
        parse_run_config({"dataset": "cifar10"})  # no local copy named, no download allowed
    cfg = parse_run_config({"dataset": "cifar10", "data-dir": "/data", "backbone": "resnet18",
                            "backbone-weights": "none"})
    assert cfg.uses_backbone and cfg.backbone_weights == "none"
