"""FakeKernelLog: a recorded kernel log, in ``/dev/kmsg``'s record format, for tests.

Each line is one record as ``/dev/kmsg`` returns it (``PRIO,SEQ,USEC,FLAGS;TEXT``), so
``gpuroute.kernel_log`` parses it with exactly the code that reads the real device. Xid lines
are written as the NVIDIA driver writes them (domain in 4 hex digits, no function)::

    3,812,5123456,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off...

Times are the kernel's clock (``CLOCK_MONOTONIC``), so clearing a mark and later Xids order as
they would on a host.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from gpuroute.kernel_log import pci_key

__all__ = ["XID_TEXT", "FakeKernelLog"]

XID_TEXT = {
    13: "Graphics SM Warp Exception",
    31: "MMU Fault",
    43: "Reset Channel Verif Error",
    48: "An uncorrectable double bit error (DBE) has been detected on GPU",
    74: "NVLink: fatal error detected",
    79: "GPU has fallen off the bus.",
    94: "Contained: SM (0x1). RST: No, D-RST: No",
    95: "Uncontained: FBHUB. RST: Yes, D-RST: No",
}


class FakeKernelLog:
    """A kernel log file that tests append records to; ``path`` is what to read."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.seq = 0
        self.path.touch()

    def line(self, text: str, *, priority: int = 6) -> None:
        """Append one record."""
        self.seq += 1
        usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
        with self.path.open("a") as log:
            log.write(f"{priority},{self.seq},{usec},-;{text}\n")

    def xid(self, pci_bus_id: str, xid: int, *, pid: int = 4242, name: str = "python") -> None:
        """Append the driver's line for an Xid on the GPU at ``pci_bus_id`` (any spelling)."""
        key = pci_key(pci_bus_id)
        if key is None:
            raise ValueError(f"not a PCI bus id: {pci_bus_id!r}")
        domain, bus, device = key
        text = XID_TEXT.get(xid, "Unknown error")
        self.line(
            f"NVRM: Xid (PCI:{domain:04x}:{bus:02x}:{device:02x}): {xid}, pid={pid}, "
            f"name={name}, {text}",
            priority=3,
        )
