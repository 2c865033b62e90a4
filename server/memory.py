"""Process memory figures for the run summary (Linux ``/proc``; zeros elsewhere).

The union of the releases is the server's one large object. To check that assembling it
costs about its own size (and not the 3x of "keep every message, then concatenate"), the
summary reports the increase of the ServerApp process's peak resident memory over the
collection and training phase, and the CUDA allocator's peak when the union lives on a GPU.
Messages held by the SuperLink process (a separate process) are not counted here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["MemoryProbe"]


def _status_kib(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class MemoryProbe:
    """Measure peak memory growth between :meth:`start` and :meth:`stop`."""

    device: torch.device
    rss_start: int = 0
    peak_reset: bool = False
    cuda_start: int = 0
    checkpoints: dict[str, int] = field(default_factory=dict)

    def checkpoint(self, name: str) -> None:
        """Record the peak growth so far (e.g. after collection, before training)."""
        self.checkpoints[name] = max(0, _status_kib("VmHWM") * 1024 - self.rss_start)
        if self.device.type == "cuda":
            self.checkpoints[name + "_cuda"] = torch.cuda.max_memory_allocated(self.device) - self.cuda_start

    def start(self) -> MemoryProbe:
        self.peak_reset = _reset_peak_rss()
        self.rss_start = _status_kib("VmRSS") * 1024
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.cuda_start = torch.cuda.memory_allocated(self.device)
        return self

    def stop(self, *, union_bytes: int) -> dict:
        peak = _status_kib("VmHWM") * 1024
        figures = {
            "union_bytes": union_bytes,
            "host_rss_start_bytes": self.rss_start,
            "host_peak_rss_bytes": peak,
            "host_peak_growth_bytes": max(0, peak - self.rss_start),
            "host_peak_growth_over_union": (max(0, peak - self.rss_start) / union_bytes) if union_bytes else None,
            "host_peak_is_since_start": self.peak_reset,
        }
        for name, grown in self.checkpoints.items():
            figures[f"peak_growth_until_{name}_bytes"] = grown
            figures[f"peak_growth_until_{name}_over_union"] = grown / union_bytes if union_bytes else None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            cuda_peak = torch.cuda.max_memory_allocated(self.device)
            figures.update(
                cuda_peak_growth_bytes=cuda_peak - self.cuda_start,
                cuda_peak_growth_over_union=((cuda_peak - self.cuda_start) / union_bytes) if union_bytes else None,
            )
        if not self.peak_reset:
            figures["note"] = "peak RSS could not be reset: host peak covers the whole process life"
        return figures
