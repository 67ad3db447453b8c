"""The GPU inventory: an immutable value listing a host's GPUs and MIG devices.

GPUs are kept in NVML order (nvidia-smi's numbering, which is PCI bus order). The value is
built from NVML (``gpuroute.nvml.read_inventory``), from a JSON snapshot (``Inventory.load``),
or directly. Building it checks that it is consistent: indices match positions, UUIDs and PCI
bus ids are unique, MIG devices appear only on GPUs in MIG mode.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuroute.core.spec import normalize_pci_bus_id
from gpuroute.errors import InventoryError, SnapshotError

__all__ = ["GPU", "Device", "Inventory", "MIGDevice", "read_regular_file"]

MAX_SNAPSHOT_BYTES = 8 << 20
"""A snapshot file is read up to this size (8 MiB: a host of 64 GPUs needs under 100 KiB)."""
MAX_SNAPSHOT_DEPTH = 16
"""How deeply a snapshot may nest objects and lists (a valid one nests 5 levels)."""


@dataclass(frozen=True, slots=True)
class MIGDevice:
    """A MIG device: one compute instance inside one GPU instance of a GPU in MIG mode.

    ``index`` is its index within the parent GPU (the ``j`` of ``i:j``); ``compute_slices``
    is how many of the GPU's compute slices it holds (1 for ``1g.10gb``, 3 for ``3g.40gb``).
    """

    index: int
    uuid: str
    gpu_instance_id: int
    compute_instance_id: int
    profile: str
    memory_total_mib: int
    compute_slices: int


@dataclass(frozen=True, slots=True)
class GPU:
    """A physical GPU. ``pci_bus_id`` is kept in NVML's spelling (``00000000:18:00.0``).

    ``mig_compute_slices_total`` is None for a GPU without MIG support, else the number of
    compute slices it can be cut into (7 on A100 and H100, 4 on A30), whether MIG is on or off.
    """

    index: int
    uuid: str
    pci_bus_id: str
    name: str
    memory_total_mib: int
    mig_mode: bool = False
    mig_compute_slices_total: int | None = None
    mig_devices: tuple[MIGDevice, ...] = ()

    def __post_init__(self) -> None:
        pci = normalize_pci_bus_id(self.pci_bus_id)
        if pci is None:
            raise InventoryError(
                f"GPU {self.index}: {self.pci_bus_id!r} is not a PCI bus id "
                "(expected a form like 00000000:18:00.0)"
            )
        object.__setattr__(self, "pci_bus_id", pci)
        object.__setattr__(self, "mig_devices", tuple(self.mig_devices))


@dataclass(frozen=True, slots=True)
class Device:
    """One addressable device: a whole GPU, or a MIG device of ``gpu``.

    The canonical identity is ``uuid`` (``GPU-…`` or ``MIG-…``): it means the same on the
    host, in a container and to every toolkit mode.
    """

    gpu: GPU
    mig: MIGDevice | None = None

    @property
    def uuid(self) -> str:
        return self.mig.uuid if self.mig is not None else self.gpu.uuid

    @property
    def is_mig(self) -> bool:
        return self.mig is not None

    @property
    def label(self) -> str:
        """The NVML index form: ``3`` for a GPU, ``1:0`` for a MIG device."""
        if self.mig is not None:
            return f"{self.gpu.index}:{self.mig.index}"
        return str(self.gpu.index)

    @property
    def sort_key(self) -> tuple[str, int]:
        """PCI bus order, then MIG index: the order in which devices enumerate."""
        return (self.gpu.pci_bus_id, -1 if self.mig is None else self.mig.index)

    def describe(self) -> str:
        if self.mig is not None:
            return f"MIG {self.label} ({self.mig.profile} on {self.gpu.name}, {self.mig.uuid})"
        return f"GPU {self.label} ({self.gpu.name}, {self.gpu.uuid})"


@dataclass(frozen=True)
class Inventory:
    """The GPUs of one host, in NVML order, with their MIG devices. Immutable."""

    gpus: tuple[GPU, ...]
    driver_version: str | None = None
    _by_uuid: dict[str, Device] = field(init=False, repr=False, compare=False)
    _by_pci: dict[str, GPU] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        gpus = tuple(self.gpus)
        object.__setattr__(self, "gpus", gpus)
        by_uuid: dict[str, Device] = {}
        by_pci: dict[str, GPU] = {}
        for position, gpu in enumerate(gpus):
            if gpu.index != position:
                raise InventoryError(
                    f"GPU at position {position} has index {gpu.index}: "
                    "GPUs must be listed in NVML order with indices 0, 1, 2, …"
                )
            if gpu.pci_bus_id in by_pci:
                raise InventoryError(
                    f"GPUs {by_pci[gpu.pci_bus_id].index} and {gpu.index} "
                    f"share PCI bus id {gpu.pci_bus_id}"
                )
            by_pci[gpu.pci_bus_id] = gpu
            if gpu.mig_devices and not gpu.mig_mode:
                raise InventoryError(f"GPU {gpu.index} lists MIG devices but its MIG mode is off")
            devices = [Device(gpu)] + [Device(gpu, mig) for mig in gpu.mig_devices]
            mig_indices = [mig.index for mig in gpu.mig_devices]
            if len(set(mig_indices)) != len(mig_indices):
                raise InventoryError(f"GPU {gpu.index} lists the same MIG index twice")
            for device in devices:
                key = device.uuid.upper()
                if key in by_uuid:
                    raise InventoryError(
                        f"UUID {device.uuid} appears twice "
                        f"({by_uuid[key].label} and {device.label})"
                    )
                by_uuid[key] = device
        object.__setattr__(self, "_by_uuid", by_uuid)
        object.__setattr__(self, "_by_pci", by_pci)

    # -- lookups (used by the resolver) -------------------------------------------------

    def devices(self) -> tuple[Device, ...]:
        """Every addressable device: each GPU, then its MIG devices, in NVML order."""
        return tuple(self._by_uuid.values())

    def by_uuid(self, uuid: str) -> Device | None:
        return self._by_uuid.get(uuid.upper())

    def by_pci(self, pci_bus_id: str) -> GPU | None:
        return self._by_pci.get(pci_bus_id)

    def uuids_starting_with(self, prefix: str) -> list[Device]:
        prefix = prefix.upper()
        return [d for key, d in self._by_uuid.items() if key.startswith(prefix)]

    @property
    def mig_gpus(self) -> tuple[GPU, ...]:
        return tuple(g for g in self.gpus if g.mig_mode)

    def available(self) -> str:
        """A short listing of what a spec can name on this host, for error messages."""
        if not self.gpus:
            return "This host has no GPUs."
        lines = ["Available on this host:"]
        for gpu in self.gpus:
            mode = "  (MIG mode on: name its MIG devices)" if gpu.mig_mode else ""
            lines.append(f"  {gpu.index:<5} {gpu.uuid}  {gpu.pci_bus_id}  {gpu.name}{mode}")
            for mig in gpu.mig_devices:
                lines.append(f"  {gpu.index}:{mig.index:<3} {mig.uuid}  {mig.profile}")
        return "\n".join(lines)

    # -- snapshots ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The snapshot document (schema ``gpuroute.inventory/1``) as plain data."""
        from gpuroute.core.snapshot import encode

        return encode(self)

    @classmethod
    def from_dict(cls, data: object, *, source: str = "snapshot") -> Inventory:
        """Validate a snapshot document. Raises SnapshotError naming ``source`` and the field."""
        from gpuroute.core.snapshot import decode

        return decode(data, source=source)

    def save(self, path: str | Path) -> None:
        """Write the snapshot as JSON, atomically (a temporary file renamed into place)."""
        target = Path(path)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SnapshotError(
                f"cannot write inventory snapshot {target}: {exc.strerror}"
            ) from exc

    @classmethod
    def load(cls, path: str | Path) -> Inventory:
        """Read a snapshot written by ``save`` (or by hand, following docs/snapshots.md).

        Only a regular file is read (a FIFO or a device is refused, never waited on), up to
        ``MAX_SNAPSHOT_BYTES``; it must be UTF-8 JSON nested at most ``MAX_SNAPSHOT_DEPTH``
        levels deep."""
        source = Path(path)
        try:
            raw = read_regular_file(source, MAX_SNAPSHOT_BYTES)
        except OSError as exc:
            raise SnapshotError(
                f"cannot read inventory snapshot {source}: {exc.strerror}; "
                "write one with `gpuroute inventory save FILE` on the GPU host"
            ) from exc
        except ValueError as exc:
            raise SnapshotError(
                f"{source} is {exc}: not a snapshot; name one written by "
                "`gpuroute inventory save FILE`"
            ) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SnapshotError(
                f"{source} is not UTF-8 (byte {exc.start}); snapshots are UTF-8 JSON"
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SnapshotError(
                f"{source} is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from exc
        except RecursionError:
            data = None
            deep = True
        except ValueError as exc:  # a number of more digits than Python converts
            raise SnapshotError(f"{source} is not JSON: {exc}") from None
        else:
            deep = _deeper_than(data, MAX_SNAPSHOT_DEPTH)
        if deep:
            raise SnapshotError(
                f"{source} is nested too deeply to be a snapshot (a snapshot nests "
                f"{MAX_SNAPSHOT_DEPTH} levels at most)"
            )
        return cls.from_dict(data, source=str(source))


def read_regular_file(source: Path, limit: int) -> bytes:
    """The bytes of a regular file, opened without blocking (a FIFO or a device is refused,
    never waited on), at most ``limit`` of them. Raises OSError where the file cannot be
    read, and ValueError saying what the file is instead (``not a regular file``, ``larger
    than N MiB``): each caller names the file and what it should be."""
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"larger than {limit >> 20} MiB")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _deeper_than(data: object, limit: int) -> bool:
    """Whether lists and dicts nest more than ``limit`` levels (without recursion)."""
    level: list[object] = [data]
    for _ in range(limit):
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
        ]
        if not level:
            return False
    return any(isinstance(node, dict | list) for node in level)
