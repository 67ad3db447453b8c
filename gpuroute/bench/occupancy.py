"""Who held which GPU when: the spans of a campaign's results, their overlaps, and the GPU
utilisation of a run (busy GPU-seconds divided by GPUs times makespan).

A span is one piece of work on one host (``host``: a Ray node id, or a host name) holding a
set of devices (by UUID) from ``start`` to ``end`` (unix seconds). Devices are told apart by
host and UUID together, so that two hosts built from one snapshot never look like one GPU.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpuroute.bench.result import Result

__all__ = ["Span", "overlaps", "span_of", "utilisation"]


@dataclass(frozen=True)
class Span:
    """Work on ``host`` holding ``devices`` from ``start`` to ``end`` (unix seconds)."""

    host: str
    devices: tuple[str, ...]
    start: float
    end: float
    name: str = ""

    @property
    def gpu_seconds(self) -> float:
        return len(self.devices) * max(self.end - self.start, 0.0)


def _unix(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def span_of(result: Result, host_label: str = "node") -> Span | None:
    """The span of a result that ran on GPUs: its devices, from its start to its end (the
    whole run: routing, the benchmark, collecting); None where it held no GPU or has no
    end."""
    devices = tuple(d.uuid for d in result.routing.devices)
    if not devices or result.ended_at is None:
        return None
    host = result.labels.get(host_label) or result.environment.hostname or ""
    name = result.labels.get("experiment", result.run_id)
    return Span(host, devices, _unix(result.started_at), _unix(result.ended_at), name)


def overlaps(spans: Iterable[Span]) -> list[tuple[Span, Span, str]]:
    """Every pair of spans that held one device (same host, same UUID) at the same time,
    with that device."""
    by_device: dict[tuple[str, str], list[Span]] = {}
    for span in spans:
        for device in span.devices:
            by_device.setdefault((span.host, device), []).append(span)
    found = []
    for (_, device), held in sorted(by_device.items()):
        held.sort(key=lambda s: s.start)
        for i, earlier in enumerate(held):
            for later in held[i + 1 :]:
                if later.start >= earlier.end:
                    break  # sorted by start: none later overlaps this one
                found.append((earlier, later, device))
    return found


def utilisation(spans: Iterable[Span], gpus: int, makespan_s: float | None = None) -> float:
    """Busy GPU-seconds divided by ``gpus`` times the makespan (default: from the first
    start to the last end of the spans)."""
    chosen = list(spans)
    if not chosen or gpus <= 0:
        return 0.0
    if makespan_s is None:
        makespan_s = max(s.end for s in chosen) - min(s.start for s in chosen)
    if makespan_s <= 0:
        return 0.0
    return sum(s.gpu_seconds for s in chosen) / (gpus * makespan_s)
