"""The machine line, the ratios and the Markdown page of :mod:`benchmarks.flower_overhead`."""

from __future__ import annotations

import os
import platform
import statistics
from typing import Any

import torch

__all__ = ["machine", "markdown", "ratio"]

GOAL_ROUND = 1.3
GOAL_STARTUP_SHARE = 0.25
GOAL_MEMORY = 1.25


def machine(device: str) -> dict[str, Any]:
    """What the figures were measured on (the load average: a shared machine's other work)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import flwr

    out = {"cpu": f"{cpu}, {os.cpu_count()} cores", "device": device, "load_average": list(os.getloadavg()),
           "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
           "torch": torch.__version__, "flwr": flwr.__version__}
    if device == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def ratio(figures: dict[str, float]) -> float:
    """``ours / (floor + plain)``: 1 means the platform adds nothing to Flower's own cost
    and the work itself."""
    return figures["ours"] / (figures["floor"] + figures["plain"])


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Flower path overhead" + (" (quick look)" if report.get("quick") else ""),
        "",
        f"Machine: **{m['cpu']}**, device {m['device']}{', ' + m['gpu'] if m.get('gpu') else ''}; "
        f"torch {m['torch']} ({m['torch_threads']} threads in the benchmark process), flwr {m['flwr']}, "
        f"Python {m['python']}; {report['date_utc']}. Load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average'])}"
        + (f", at the end {', '.join(f'{x:.1f}' for x in report['machine_after']['load_average'])}"
           if report.get("machine_after") else "")
        + " (other users' work shares the cores: read ratios measured side by side, not seconds).",
        "",
        "`python -m benchmarks.flower_overhead" + (" --quick" if report.get("quick") else "") + "`. "
        "Per round = marginal cost (rounds after the first "
        f"{report['settings']['skip']}: start-up excluded). *floor*: a no-op Flower app moving the same payloads "
        "(same arrays, same message counts); *plain*: the same client work in one process, no Flower; "
        "*ours*: the platform through `flwr run` (one warm Ray cluster, as a sweep runs); Flower reserves "
        f"{report['settings'].get('party_cpus', 1)} CPU(s) for each simulated party (`--party-cpus`).",
        "",
    ]
    points = report.get("points", {})
    if points:
        lines += ["## FedProx round", "",
                  "| workload | P | model | floor | plain | ours | ours / (floor + plain) | goal |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, p in points.items():
            f = p["fedprox"]
            lines.append(f"| {name.rsplit(' ', 1)[0]} | {p['parties']} | {p['model_bytes'] / 2**20:.1f} MiB | "
                         f"{_ms(f['floor'])} | {_ms(f['plain'])} | {_ms(f['ours'])} | **{f['ratio']:.2f}** | "
                         f"<= {GOAL_ROUND} |")
        lines += ["", "## One-shot collection (warm: with `release = \"per-epoch\"`, the collections after the first "
                  f"{report['settings'].get('collect_skip', report['settings']['skip'])})", "",
                  "| workload | P | union | floor | plain | ours | ours / (floor + plain) | first (cold) floor / ours |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, p in points.items():
            c = p["collection"]
            lines.append(f"| {name.rsplit(' ', 1)[0]} | {p['parties']} | {c['union_bytes'] / 2**20:.1f} MiB | "
                         f"{_ms(c['floor'])} | {_ms(c['plain'])} | {_ms(c['ours'])} | **{c['ratio']:.2f}** | "
                         f"{_s(c['first']['floor'])} / {_s(c['first']['ours'])} |")
        lines.append("")
    start = report.get("startup")
    if start:
        lines += ["## Start-up of a default digits run (P = 10, sweep settings)", "",
                  "`cold`: `flwr run .` as typed (the project folder as the app, Ray started by the run); "
                  "`warm`: the sweep's session (staged app, one Ray cluster for every run). Start-up = "
                  "`flwr run` started to the first reply (process, Ray, actors, imports, first party build).", "",
                  "| run | kind | start-up | end to end | start-up share | ServerApp imported | first message | "
                  "first reply | teardown |", "|---|---|---|---|---|---|---|---|---|"]
        for kind in ("cold", "warm"):
            for r in start[kind]:
                ph = r["phases"]
                lines.append(f"| {r['strategy']} | {kind} | {_s(r['startup'])} | {_s(r['e2e'])} | "
                             f"**{100 * r['share']:.0f} %** | {_s(ph.get('serverapp_imported'))} | "
                             f"{_s(ph.get('first_push'))} | {_s(ph.get('first_reply'))} | {_s(ph.get('teardown'))} |")
        for kind in ("cold", "warm"):
            if start[kind]:
                lines.append(f"\nMean {kind}: start-up {statistics.fmean(r['startup'] for r in start[kind]):.1f} s, "
                             f"run {statistics.fmean(r['e2e'] for r in start[kind]):.1f} s, share "
                             f"{100 * statistics.fmean(r['share'] for r in start[kind]):.0f} % "
                             f"(goal <= {100 * GOAL_STARTUP_SHARE:.0f} %).")
        pieces = start.get("pieces") or {}
        if pieces:
            lines += ["", "Ingredients alone (each in a fresh process): "
                      f"Python start {_s(pieces['python_start'])}, `flwr --help` {_s(pieces['flwr_cli_help'])}, "
                      f"`import client.app` {_s(pieces['import_client_app'])}, "
                      f"`import server.app` {_s(pieces['import_server_app'])}, "
                      f"`import flwr.simulation.app, ray` {_s(pieces['import_flwr_simulation'])}; FAB of the project "
                      f"folder {_s(pieces['fab_project_root']['seconds'])} "
                      f"({pieces['fab_project_root']['bytes'] / 1e6:.2f} MB), of the staged app "
                      f"{_s(pieces['fab_staged']['seconds'])} ({pieces['fab_staged']['bytes'] / 1e6:.2f} MB); "
                      f"`ray start --head` {_s(pieces['ray_head_start'])}."]
        lines.append("")
    mem = report.get("memory")
    if mem:
        lines += ["## ServerApp memory during one-shot collection", "",
                  "| upload dtype | P | union | peak growth until collected | / union | peak growth, whole run | "
                  "/ union | goal |", "|---|---|---|---|---|---|---|---|"]
        for dtype, r in mem.items():
            mm = r["memory"]
            lines.append(
                f"| {dtype} | {r['parties']} | {mm['union_bytes'] / 2**20:.0f} MiB | "
                f"{mm.get('peak_growth_until_collected_bytes', 0) / 2**20:.0f} MiB | "
                f"**{mm.get('peak_growth_until_collected_over_union') or 0:.2f}** | "
                f"{mm['host_peak_growth_bytes'] / 2**20:.0f} MiB | {mm['host_peak_growth_over_union']:.2f} | "
                f"<= {GOAL_MEMORY} |")
        lines.append("")
    return "\n".join(lines)
