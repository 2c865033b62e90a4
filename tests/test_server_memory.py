"""The ServerApp's memory probe: what it reads from /proc, and its arithmetic."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from server.memory import MemoryProbe, RssSampler, rss_parts

STATUS = """Name:\tpython
VmPeak:\t 9000 kB
VmHWM:\t  4096 kB
VmRSS:\t  3072 kB
RssAnon:\t  2048 kB
RssFile:\t   512 kB
RssShmem:\t   512 kB
Threads:\t4
"""


def test_rss_parts_reads_each_part_in_bytes():
    parts = rss_parts(STATUS)
    assert parts == {"VmRSS": 3072 * 1024, "RssAnon": 2048 * 1024, "RssFile": 512 * 1024,
                     "RssShmem": 512 * 1024, "VmHWM": 4096 * 1024}
    assert rss_parts("") == dict.fromkeys(parts, 0)


def test_probe_ratios_are_growth_over_the_union(monkeypatch):
    """Peak growth = peak - start, per part; every ratio is that growth over ``union_bytes``."""
    import server.memory as memory

    readings = iter([
        {"VmRSS": 100, "RssAnon": 60, "RssFile": 30, "RssShmem": 10, "VmHWM": 100},  # start
    ])
    peaks = {"VmRSS": 400, "RssAnon": 300, "RssFile": 30, "RssShmem": 70}

    class FakeSampler:
        def __init__(self, interval):
            pass

        def start(self):
            return self

        def snapshot(self):
            return dict(peaks)

        def stop(self):
            return dict(peaks)

    monkeypatch.setattr(memory, "rss_parts", lambda text=None: next(readings, {"VmHWM": 500, "VmRSS": 0}))
    monkeypatch.setattr(memory, "_status_kib", lambda field: 500 // 1024 if field == "VmHWM" else 0)
    monkeypatch.setattr(memory, "_reset_peak_rss", lambda: True)
    monkeypatch.setattr(memory, "RssSampler", FakeSampler)
    probe = MemoryProbe(torch.device("cpu")).start()
    probe.checkpoint("collected")
    out = probe.stop(union_bytes=120)
    assert out["host_anon_peak_growth_bytes"] == 240 and out["host_anon_peak_growth_over_union"] == 2.0
    assert out["host_shmem_peak_growth_bytes"] == 60 and out["host_shmem_peak_growth_over_union"] == 0.5
    assert out["peak_growth_until_collected_anon_bytes"] == 240
    assert out["peak_growth_until_collected_shmem_over_union"] == 0.5
    assert out["union_bytes"] == 120


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_probe_sees_an_allocation_of_known_size():
    size = 64 * 2**20
    probe = MemoryProbe(torch.device("cpu"), sample_interval=0.001).start()
    block = np.ones(size // 8)  # touched: resident
    probe.checkpoint("collected")
    del block
    out = probe.stop(union_bytes=size)
    assert 0.9 <= out["peak_growth_until_collected_anon_over_union"] <= 1.5
    assert out["host_peak_growth_over_union"] >= 0.9


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sampler_keeps_each_parts_peak():
    sampler = RssSampler(interval=0.001).start()
    block = np.ones(16 * 2**20 // 8)
    peaks = sampler.stop()
    del block
    assert peaks["RssAnon"] > 0 and peaks["VmRSS"] >= peaks["RssAnon"] and sampler.samples >= 2
