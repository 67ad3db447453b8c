"""Progress of a long campaign, on one line of a terminal or one line per event in a log.

::

    campaign [#####.....] 4/8 done, 1 failed, 2 running, ~1m20s left

On a terminal (``stream.isatty()``) the line is rewritten in place (``\\r`` and clear to
the end of the line), and a failure is also printed on a line of its own so it stays on the
screen. Anywhere else (a log file, a pipe, CI) every event writes one whole line, with what
happened after the status, and no carriage return is ever written.

The estimate of the time left comes from the mean duration of the experiments finished in
this run (those skipped because a resumed campaign had them already do not count), the
time already spent by those running, and the number not yet started, divided among as many
workers as were ever seen running at once. It is omitted until one experiment has finished.

Experiments finish on worker threads, so every method takes a lock.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from gpuroute.core.closing import Closing

__all__ = ["Progress", "format_duration"]

_CLEAR_LINE = "\x1b[K"


def format_duration(seconds: float) -> str:
    """``45s``, ``1m20s``, ``2h05m``: short, for a status line."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress(Closing):
    """A campaign's progress: ``started``, ``finished`` and ``skipped`` as experiments go,
    ``close`` at the end (or use it as a context manager)."""

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        *,
        label: str = "campaign",
        clock: Callable[[], float] = time.monotonic,
        width: int = 10,
    ) -> None:
        if total < 0:
            raise ValueError(f"total must be 0 or more, not {total}")
        self.total = total
        self.stream: TextIO = sys.stderr if stream is None else stream
        self.label = label
        self.width = width
        self._clock = clock
        self._tty = _isatty(self.stream)
        self._lock = threading.Lock()
        self._running: dict[str, list[float]] = {}
        self._durations: list[float] = []
        self._ok = 0
        self._failed = 0
        self._skipped = 0
        self._peak_running = 0
        self._drawn = False
        self._closed = False

    # -- the counts -------------------------------------------------------------------------

    @property
    def done(self) -> int:
        """Experiments finished (ok or failed) or skipped."""
        return self._ok + self._failed + self._skipped

    @property
    def failed(self) -> int:
        return self._failed

    @property
    def running(self) -> int:
        return sum(len(starts) for starts in self._running.values())

    def eta_seconds(self) -> float | None:
        """Seconds left, estimated; None until an experiment has finished, 0 once all are."""
        with self._lock:
            return self._eta()

    def _eta(self) -> float | None:
        if not self._durations:
            return None
        mean = sum(self._durations) / len(self._durations)
        now = self._clock()
        running_left = sum(
            max(mean - (now - start), 0.0) for starts in self._running.values() for start in starts
        )
        pending = max(self.total - self.done - self.running, 0)
        workers = max(self._peak_running, 1)
        return (running_left + pending * mean) / workers

    # -- events -----------------------------------------------------------------------------

    def started(self, name: str) -> None:
        with self._lock:
            self._running.setdefault(name, []).append(self._clock())
            self._peak_running = max(self._peak_running, self.running)
            self._emit(f"started {name}")

    def finished(self, name: str, ok: bool, seconds: float) -> None:
        with self._lock:
            starts = self._running.get(name)
            if starts:
                starts.pop(0)
                if not starts:
                    del self._running[name]
            self._durations.append(max(seconds, 0.0))
            if ok:
                self._ok += 1
                self._emit(f"finished {name} in {format_duration(seconds)}")
            else:
                self._failed += 1
                self._emit(f"FAILED {name} after {format_duration(seconds)}", keep=True)

    def skipped(self, n: int) -> None:
        """``n`` experiments were already finished (a resumed campaign)."""
        if n <= 0:
            return
        with self._lock:
            self._skipped += n
            self._emit(f"skipped {n} already finished")

    def close(self) -> None:
        """End the status line on a terminal. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._tty and self._drawn:
                self.stream.write("\n")
                self.stream.flush()

    # -- rendering --------------------------------------------------------------------------

    def status_line(self) -> str:
        """The status as it would be drawn now."""
        with self._lock:
            return self._status()

    def _status(self) -> str:
        done, total = self.done, self.total
        filled = self.width if total == 0 else min(self.width, self.width * done // total)
        bar = "#" * filled + "." * (self.width - filled)
        parts = [f"{done}/{total} done" + (f" ({self._skipped} skipped)" if self._skipped else "")]
        parts.append(f"{self._failed} failed")
        parts.append(f"{self.running} running")
        eta = self._eta()
        if eta is not None and done < total:
            parts.append(f"~{format_duration(eta)} left")
        return f"{self.label} [{bar}] " + ", ".join(parts)

    def _emit(self, event: str, *, keep: bool = False) -> None:
        if self._closed:
            return
        status = self._status()
        if self._tty:
            text = f"\r{_CLEAR_LINE}"
            if keep:
                text += f"{self.label}: {event}\n"
            self.stream.write(text + status)
            self._drawn = True
        else:
            self.stream.write(f"{status} | {event}\n")
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed, or not a real file
        return False
