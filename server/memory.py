"""Process memory figures for the run summary (Linux ``/proc``; zeros elsewhere).

The union of the releases is the server's one large object. To check that assembling it
costs about its own size (and not the 3x of "keep every message, then concatenate"), the
summary reports the increase of the ServerApp process's peak resident memory over the
collection and training phase, and the CUDA allocator's peak when the union lives on a GPU.
Messages held by the SuperLink process (a separate process) are not counted here.

Resident memory has three parts (``/proc/self/status``): anonymous memory (the process's own
heap: the union, message buffers, numpy/torch arrays), file pages, and shared memory. In a
simulation the replies reach the ServerApp's process through Ray's object store, a shared
memory region that every Ray process maps: the pages of each reply it reads count in its
resident memory (``RssShmem``) and stay mapped after the reply is freed (the store reuses
them), though they are the store's memory, allocated once per machine, not this process's.
A sampling thread (every ``interval`` seconds) records each part's peak, so that the figures
say which part grew: ``host_anon_peak_growth`` is what the ServerApp itself held.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["MemoryProbe", "RssSampler", "rss_parts"]

_PARTS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def rss_parts(text: str | None = None) -> dict[str, int]:
    """Bytes of ``VmRSS``, ``RssAnon``, ``RssFile``, ``RssShmem`` and ``VmHWM`` (``/proc/self/status``
    or ``text``); missing fields are 0."""
    if text is None:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            text = ""
    out = dict.fromkeys((*_PARTS, "VmHWM"), 0)
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in out:
            out[name] = int(rest.split()[0]) * 1024
    return out


def _status_kib(field: str) -> int:
    return rss_parts()[field] // 1024


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """A daemon thread that samples :func:`rss_parts` every ``interval`` seconds and keeps
    each part's peak (``peaks``) since :meth:`start` or the last :meth:`mark`."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        parts = rss_parts()
        with self._lock:
            self.samples += 1
            for name in _PARTS:
                self.peaks[name] = max(self.peaks.get(name, 0), parts[name])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> RssSampler:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def snapshot(self) -> dict[str, int]:
        self._sample()
        with self._lock:
            return dict(self.peaks)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.snapshot()


@dataclass
class MemoryProbe:
    """Measure peak memory growth between :meth:`start` and :meth:`stop`."""

    device: torch.device
    rss_start: int = 0
    peak_reset: bool = False
    cuda_start: int = 0
    checkpoints: dict[str, int] = field(default_factory=dict)
    parts_start: dict[str, int] = field(default_factory=dict)
    sampler: RssSampler | None = None
    sample_interval: float = 0.005

    def checkpoint(self, name: str) -> None:
        """Record the peak growth so far (e.g. after collection, before training)."""
        self.checkpoints[name] = max(0, _status_kib("VmHWM") * 1024 - self.rss_start)
        if self.sampler is not None:
            peaks = self.sampler.snapshot()
            for part in ("RssAnon", "RssShmem"):
                self.checkpoints[f"{name}_{part}"] = max(0, peaks[part] - self.parts_start[part])
        if self.device.type == "cuda":
            self.checkpoints[name + "_cuda"] = torch.cuda.max_memory_allocated(self.device) - self.cuda_start

    def start(self) -> MemoryProbe:
        self.peak_reset = _reset_peak_rss()
        self.parts_start = rss_parts()
        self.rss_start = self.parts_start["VmRSS"]
        self.sampler = RssSampler(self.sample_interval).start()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.cuda_start = torch.cuda.memory_allocated(self.device)
        return self

    def stop(self, *, union_bytes: int) -> dict:
        peak = _status_kib("VmHWM") * 1024
        peaks = self.sampler.stop() if self.sampler is not None else {}
        self.sampler = None

        def over(value: int) -> float | None:
            return value / union_bytes if union_bytes else None

        figures = {
            "union_bytes": union_bytes,
            "host_rss_start_bytes": self.rss_start,
            "host_peak_rss_bytes": peak,
            "host_peak_growth_bytes": max(0, peak - self.rss_start),
            "host_peak_growth_over_union": over(max(0, peak - self.rss_start)),
            "host_peak_is_since_start": self.peak_reset,
        }
        for part, label in (("RssAnon", "anon"), ("RssShmem", "shmem")):
            if part in peaks:
                grown = max(0, peaks[part] - self.parts_start[part])
                figures[f"host_{label}_peak_growth_bytes"] = grown
                figures[f"host_{label}_peak_growth_over_union"] = over(grown)
        for name, grown in self.checkpoints.items():
            label = name.replace("_RssAnon", "_anon").replace("_RssShmem", "_shmem")
            figures[f"peak_growth_until_{label}_bytes"] = grown
            figures[f"peak_growth_until_{label}_over_union"] = over(grown)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            cuda_peak = torch.cuda.max_memory_allocated(self.device)
            figures.update(
                cuda_peak_growth_bytes=cuda_peak - self.cuda_start,
                cuda_peak_growth_over_union=over(cuda_peak - self.cuda_start),
            )
        if not self.peak_reset:
            figures["note"] = "peak RSS could not be reset: host peak covers the whole process life"
        return figures
