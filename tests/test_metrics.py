"""Per-sample metrics (SNR, PSNR, SSIM, summaries) and the offline LPIPS wrapper."""

from __future__ import annotations

import math
import socket

import pytest
import torch

from attacks.lpips_metric import LpipsMetric, LpipsWeightsMissing
from attacks.metrics import psnr, snr_db, ssim, summarise

# -- SNR / PSNR -----------------------------------------------------------------------------


def test_snr_db_hand_values():
    x = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 3.0, 4.0, 0.0]])  # ||x||^2 = 4, 25
    delta = torch.tensor([[0.0, 0.2, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])  # ||delta||^2 = 0.04, 25
    torch.testing.assert_close(snr_db(x, x + delta), torch.tensor([20.0, 0.0], dtype=torch.float64))
    assert torch.isinf(snr_db(x, x)).all()
    assert snr_db(x, x + delta).dtype == torch.float64


def test_psnr_constant_offset():
    x = torch.rand(3, 1, 4, 4)
    torch.testing.assert_close(psnr(x, x + 0.1, data_range=1.0), torch.full((3,), 20.0, dtype=torch.float64))
    expected = 10 * math.log10(4 / 0.01)
    torch.testing.assert_close(psnr(x, x - 0.1, data_range=2.0), torch.full((3,), expected, dtype=torch.float64))
    # One range per channel: error divided by its channel's width, peak 1.
    y = torch.rand(2, 2, 3, 3)
    shifted = y + torch.tensor([0.1, 0.2]).reshape(1, 2, 1, 1)
    torch.testing.assert_close(psnr(y, shifted, data_range=[1.0, 2.0]), torch.full((2,), 20.0, dtype=torch.float64))
    with pytest.raises(ValueError):
        psnr(x, x, data_range=0.0)


# -- SSIM -----------------------------------------------------------------------------------


def _ssim_direct(x, y, L, window, sigma):
    """Float64 re-implementation: explicit window positions, formula written out."""
    n, c, h, w = x.shape
    kh, kw = min(window, h), min(window, w)

    def gauss(k):
        t = torch.tensor([math.exp(-((i - (k - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(k)], dtype=torch.float64)
        return t / t.sum()

    g = torch.outer(gauss(kh), gauss(kw))
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    out = torch.zeros(n, dtype=torch.float64)
    for s in range(n):
        per_channel = []
        for ch in range(c):
            values = []
            for i in range(h - kh + 1):
                for j in range(w - kw + 1):
                    a = x[s, ch, i:i + kh, j:j + kw].double()
                    b = y[s, ch, i:i + kh, j:j + kw].double()
                    ma, mb = (g * a).sum(), (g * b).sum()
                    va = (g * (a - ma) ** 2).sum()
                    vb = (g * (b - mb) ** 2).sum()
                    cov = (g * (a - ma) * (b - mb)).sum()
                    values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
            per_channel.append(torch.stack(values).mean())
        out[s] = torch.stack(per_channel).mean()
    return out


def test_ssim_identity_and_symmetry():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 20, 17, generator=gen)
    y = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    torch.testing.assert_close(ssim(x, x, data_range=1.0), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(ssim(x, y, data_range=1.0), ssim(y, x, data_range=1.0))
    assert bool((ssim(x, y, data_range=1.0) < 1.0).all())


def test_ssim_against_constant_image_by_hand():
    # 2x2 image, window clipped to 2x2: the two Gaussian taps are equal, so weights are 1/4.
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    y = torch.full_like(x, 0.5)
    # mu_x = mu_y = 0.5, var_x = 0.25, var_y = cov = 0, C1 = 1e-4, C2 = 9e-4:
    # ((0.5 + C1) * C2) / ((0.5 + C1) * (0.25 + C2)) = 9e-4 / 0.2509
    expected = 9e-4 / 0.2509
    assert float(ssim(x, y, data_range=1.0)[0]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape,window", [((2, 3, 16, 13), 11), ((2, 1, 8, 8), 11), ((1, 2, 9, 12), 7)])
def test_ssim_matches_direct_float64_formula(shape, window):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=gen)
    y = (0.7 * x + 0.3 * torch.rand(shape, generator=gen)).clamp(0, 1)
    got = ssim(x, y, data_range=1.0, window=window)
    torch.testing.assert_close(got, _ssim_direct(x, y, 1.0, window, 1.5), rtol=1e-10, atol=1e-12)
    const = torch.full(shape, 0.25)
    torch.testing.assert_close(
        ssim(x, const, data_range=1.0, window=window), _ssim_direct(x, const, 1.0, window, 1.5), rtol=1e-10, atol=1e-12
    )


def test_ssim_per_channel_range_and_input_forms():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 2, 12, 12, generator=gen)
    y = torch.rand(3, 2, 12, 12, generator=gen)
    per = ssim(x, y, data_range=[1.0, 4.0])
    first = ssim(x[:, :1], y[:, :1], data_range=1.0)
    second = ssim(x[:, 1:], y[:, 1:], data_range=4.0)
    torch.testing.assert_close(per, (first + second) / 2)
    torch.testing.assert_close(ssim(x[:, 0], y[:, 0], data_range=1.0), first)  # (n, H, W)
    with pytest.raises(ValueError):
        ssim(x.flatten(1), y.flatten(1), data_range=1.0)


def test_summarise():
    s = summarise(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert s == {"mean": 2.5, "std": pytest.approx(math.sqrt(1.25)), "min": 1.0, "max": 4.0, "best": 4.0, "count": 4}
    assert summarise([0.3, 0.1, 0.2], higher_is_better=False)["best"] == 0.1
    assert summarise([5.0])["std"] == 0.0


# -- LPIPS ----------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or download a checkpoint fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_lpips_without_weights_raises_with_instructions(no_network):
    with pytest.raises(LpipsWeightsMissing) as err:
        LpipsMetric()
    message = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in message and "backbone_weights" in message
    assert "allow_random_backbone" in message
    with pytest.raises(LpipsWeightsMissing, match="vgg16-397923af.pth"):
        LpipsMetric(net="vgg")
    with pytest.raises(LpipsWeightsMissing, match="does not exist"):
        LpipsMetric(backbone_weights="/nonexistent/alexnet-owt-7be5be79.pth")


def test_lpips_random_backbone_plumbing(no_network):
    """The backbone is random, so only the plumbing is checked, not perceptual values."""
    metric = LpipsMetric(allow_random_backbone=True)
    assert metric.calibrated is False and "random" in metric.backbone
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32, generator=gen)
    y = torch.rand(5, 3, 32, 32, generator=gen)
    same = metric(x, x)
    assert same.shape == (5,)
    torch.testing.assert_close(same, torch.zeros(5), atol=1e-6, rtol=0)
    assert bool((metric(x, y) > 0).all())
    # Small grey images: repeated to 3 channels and upsampled; (n, H, W) accepted.
    g = torch.rand(4, 1, 8, 8, generator=gen)
    h = torch.rand(4, 1, 8, 8, generator=gen)
    d = metric(g, h)
    assert d.shape == (4,) and bool((d > 0).all())
    torch.testing.assert_close(metric(g, h), metric(g.expand(-1, 3, -1, -1), h.expand(-1, 3, -1, -1)))
    torch.testing.assert_close(metric(g[:, 0], h[:, 0]), d)
    # The value range is mapped affinely to [-1, 1].
    torch.testing.assert_close(metric(x, y), metric(2 * x - 1, 2 * y - 1, value_range=(-1.0, 1.0)), atol=1e-6, rtol=1e-5)
    # Batching does not change per-sample values.
    small_batches = LpipsMetric(allow_random_backbone=True, batch_size=2)
    torch.testing.assert_close(small_batches(x, y), metric(x, y), atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*deprecated since 0.13:UserWarning")  # lpips' own reference model
def test_lpips_loads_local_torchvision_state_dict(tmp_path, no_network):
    import lpips
    import torchvision

    torch.manual_seed(123)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path / "alexnet-local.pth"
    torch.save(state, path)

    metric = LpipsMetric(backbone_weights=path)
    assert metric.calibrated is False  # not torchvision's published file (hash differs)
    assert metric.backbone_sha256 is not None and len(metric.backbone_sha256) == 64
    torch.testing.assert_close(metric.model.net.slice1[0].weight, state["features.0.weight"])
    torch.testing.assert_close(metric.model.net.slice5.get_submodule("10").bias, state["features.10.bias"])

    # Reference: lpips' own model with the same state dict copied into its backbone.
    reference = lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        for slice_ in reference.net.children():
            for index, module in slice_.named_children():
                for name, param in module.named_parameters():
                    param.copy_(state[f"features.{index}.{name}"])
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(3, 3, 32, 32, generator=gen)
    y = torch.rand(3, 3, 32, 32, generator=gen)
    with torch.no_grad():
        expected = reference(2 * x - 1, 2 * y - 1).reshape(-1)
    torch.testing.assert_close(metric(x, y), expected)
    again = LpipsMetric(backbone_weights=str(path))
    torch.testing.assert_close(again(x, y), metric(x, y), rtol=0, atol=0)

    bad = tmp_path / "not-alexnet.pth"
    torch.save({"weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="features.0.weight"):
        LpipsMetric(backbone_weights=bad)
