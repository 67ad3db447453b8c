"""Xid events from the kernel log, where the NVIDIA driver writes every one.

NVML delivers an Xid event only to an event set registered before it happened, so a reader
without a daemon sees almost none. The kernel log keeps them all since boot (as long as the
ring buffer holds them), one line each::

    NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.

This module reads those lines from ``/dev/kmsg`` (record-oriented: each read returns one
record, ``PRIO,SEQ,USEC,FLAGS;TEXT``), or from a file holding such records, ``dmesg`` lines
(``[  12.345678] TEXT``) or ``journalctl -k`` lines, never blocking and within fixed bounds.
A ``KernelLog`` keeps its place: each ``poll()`` reads only what is new and returns every Xid
seen since boot. Which Xids make a GPU unhealthy is decided elsewhere (``gpuroute.health``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
import time
from dataclasses import dataclass

__all__ = [
    "DEFAULT_KERNEL_LOG",
    "KERNEL_LOG_ENV",
    "KernelLog",
    "KernelLogState",
    "XidEvent",
    "parse_record",
    "pci_key",
]

DEFAULT_KERNEL_LOG = "/dev/kmsg"
KERNEL_LOG_ENV = "GPUROUTE_KERNEL_LOG"
"""Names the kernel log to read Xids from instead of ``/dev/kmsg`` (a recorded log)."""

MAX_RECORDS = 500_000
"""Records read by one poll at most (a kernel ring buffer of 16 MiB holds about 200,000)."""
MAX_BYTES = 64 << 20
MAX_SECONDS = 2.0
MAX_XIDS = 4096
"""Xid events kept at most (the latest)."""
_DMESG_RESTRICT = "/proc/sys/kernel/dmesg_restrict"
_RECORD_BUFFER = 8192  # /dev/kmsg records are at most about 1 KiB (PRINTK_MESSAGE_MAX)

_KMSG = re.compile(r"^(\d+),(\d+),(\d+),[^;]*;(.*)$")
_DMESG = re.compile(r"^\[\s*(\d+(?:\.\d+)?)\]\s?(.*)$")
_XID = re.compile(
    r"NVRM: Xid \((?:PCI:)?([0-9A-Fa-f]{1,8}):([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})"
    r"(?:\.[0-7])?[^)]{0,64}\):\s*(\d{1,6})\b,?\s*(.*)$"
)
_PCI = re.compile(r"^(?:([0-9A-Fa-f]{1,8}):)?([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})(?:\.[0-7])?$")


def pci_key(bus_id: str) -> tuple[int, int, int] | None:
    """A PCI bus id as (domain, bus, device), whatever its spelling: NVML's
    ``00000000:3B:00.0``, the kernel's ``0000:3b:00``, or ``3b:00.0`` (domain 0)."""
    found = _PCI.match(bus_id.strip())
    if found is None:
        return None
    domain, bus, device = found.groups()
    return int(domain or "0", 16), int(bus, 16), int(device, 16)


@dataclass(frozen=True)
class XidEvent:
    """One Xid line of the kernel log."""

    pci: tuple[int, int, int]
    """The GPU's PCI (domain, bus, device)."""
    xid: int
    message: str
    """The driver's text after the Xid number (``pid=…, GPU has fallen off the bus.``)."""
    seq: int | None = None
    """The record's sequence number (``/dev/kmsg`` records only)."""
    kernel_time_s: float | None = None
    """Seconds since boot on the kernel's clock, where the line has a time stamp."""

    @property
    def pci_bus_id(self) -> str:
        domain, bus, device = self.pci
        return f"{domain:04x}:{bus:02x}:{device:02x}"


def parse_record(text: str) -> XidEvent | None:
    """The Xid in one kernel-log record or line, or None for any other line."""
    if "NVRM: Xid" not in text:
        return None
    seq: int | None = None
    when: float | None = None
    body = text.rstrip("\n")
    kmsg = _KMSG.match(body)
    if kmsg is not None:
        seq, when, body = int(kmsg[2]), int(kmsg[3]) / 1e6, kmsg[4]
    else:
        dmesg = _DMESG.match(body)
        if dmesg is not None:
            when, body = float(dmesg[1]), dmesg[2]
    found = _XID.search(body)
    if found is None:
        return None
    domain, bus, device, xid, rest = found.groups()
    return XidEvent(
        pci=(int(domain, 16), int(bus, 16), int(device, 16)),
        xid=int(xid),
        message=rest.strip()[:240],
        seq=seq,
        kernel_time_s=when,
    )


@dataclass(frozen=True)
class KernelLogState:
    """What the kernel log says so far: every Xid since boot (the latest ``MAX_XIDS``), the
    last record's sequence number and time, and, when it cannot be read, why."""

    path: str
    xids: tuple[XidEvent, ...] = ()
    readable: bool = True
    reason: str | None = None
    last_seq: int | None = None
    last_time_s: float | None = None
    notes: tuple[str, ...] = ()


class KernelLog:
    """Reads Xids from a kernel log (default ``/dev/kmsg``), keeping its place between polls.

    ``poll()`` never blocks: ``/dev/kmsg`` is opened non-blocking and read one record per
    read until it has nothing more; a file is read from where the last poll stopped. One poll
    reads at most ``MAX_RECORDS`` records, ``MAX_BYTES`` bytes and ``MAX_SECONDS`` seconds.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path is not None else DEFAULT_KERNEL_LOG
        self._fd: int | None = None
        self._device = False
        self._offset = 0
        self._pending = b""
        self._xids: list[XidEvent] = []
        self._last_seq: int | None = None
        self._last_time: float | None = None
        self._reason: str | None = None
        self._notes: list[str] = []
        self._lock = threading.Lock()

    def poll(self) -> KernelLogState:
        """Read what is new; return every Xid seen since boot."""
        with self._lock:
            if self._fd is None and self._reason is None:
                self._open()
            if self._fd is not None:
                self._read_new()
            return KernelLogState(
                path=self.path,
                xids=tuple(self._xids),
                readable=self._reason is None,
                reason=self._reason,
                last_seq=self._last_seq,
                last_time_s=self._last_time,
                notes=tuple(self._notes),
            )

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- reading ------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self._reason = _unreadable(self.path, exc)
            return
        mode = os.fstat(fd).st_mode
        if stat.S_ISCHR(mode):
            self._device = True
        elif not stat.S_ISREG(mode):
            os.close(fd)
            self._reason = f"{self.path} is neither the kernel's log device nor a file"
            return
        self._fd = fd

    def _read_new(self) -> None:
        if self._device:
            self._read_records()
        else:
            self._read_file()

    def _read_records(self) -> None:
        assert self._fd is not None
        deadline = time.monotonic() + MAX_SECONDS
        for count in range(MAX_RECORDS):
            try:
                record = os.read(self._fd, _RECORD_BUFFER)
            except BlockingIOError:
                return  # nothing more now
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    self._note("the kernel log overwrote records before they were read")
                    continue  # the next read returns the oldest record still there
                if exc.errno == errno.EINVAL:
                    continue  # a record larger than the buffer: not an Xid line
                self._note(f"reading {self.path} stopped: {exc.strerror}")
                return
            if not record:
                return
            self._take(record.decode(errors="replace"))
            if count % 1024 == 1023 and time.monotonic() > deadline:
                break
        self._note(f"read {self.path} only in part (bounded); later records are read next time")

    def _read_file(self) -> None:
        assert self._fd is not None
        data = os.pread(self._fd, MAX_BYTES, self._offset)
        self._offset += len(data)
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()  # an unfinished last line waits for the next poll
        for number, line in enumerate(lines):
            if number >= MAX_RECORDS:
                self._note(f"read {self.path} only in part (bounded)")
                break
            self._take(line.decode(errors="replace"))

    def _take(self, text: str) -> None:
        kmsg = _KMSG.match(text)
        if kmsg is not None:
            self._last_seq, self._last_time = int(kmsg[2]), int(kmsg[3]) / 1e6
        event = parse_record(text)
        if event is None:
            return
        if event.kernel_time_s is not None:
            self._last_time = event.kernel_time_s
        self._xids.append(event)
        if len(self._xids) > MAX_XIDS:
            del self._xids[: len(self._xids) - MAX_XIDS]

    def _note(self, note: str) -> None:
        if note not in self._notes:
            self._notes.append(note)


def _unreadable(path: str, exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        restrict = ""
        with contextlib.suppress(OSError, ValueError), open(_DMESG_RESTRICT) as handle:
            if int(handle.read().strip() or "0") == 1:
                restrict = (
                    " (kernel.dmesg_restrict is 1: only root and users with CAP_SYSLOG "
                    "may read the kernel log)"
                )
        return (
            f"{path} is not readable by uid {os.getuid()}{restrict}; run as root, set "
            "`sysctl kernel.dmesg_restrict=0`, or point GPUROUTE_KERNEL_LOG at a copy of the "
            "log that a root service keeps"
        )
    if isinstance(exc, FileNotFoundError):
        return (
            f"{path} does not exist (a container without the host's /dev/kmsg?); "
            "Xids are then seen only through NVML"
        )
    return f"{path} cannot be opened: {exc.strerror}"
