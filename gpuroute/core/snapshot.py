"""The snapshot document ``gpuroute.inventory/1``: its schema, and conversion to and from
``Inventory``. Pure (data in, data out); imported only when a snapshot is read or written,
so that ``import gpuroute`` does not pay for pydantic's model machinery.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gpuroute.core.inventory import GPU, Inventory, MIGDevice
from gpuroute.errors import InventoryError, SnapshotError

__all__ = ["SCHEMA", "decode", "encode"]

SCHEMA = "gpuroute.inventory/1"


# The forms NVML writes and the NVIDIA Container Toolkit reads, exactly: a snapshot's
# identifiers reach NVIDIA_VISIBLE_DEVICES, where a comma ("GPU-0,all") would name more GPUs.
_UUID_BODY = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_GPU_UUID = re.compile(rf"GPU-{_UUID_BODY}")
_MIG_UUID = re.compile(rf"MIG-{_UUID_BODY}|MIG-GPU-{_UUID_BODY}/[0-9]+/[0-9]+")
_PCI_BUS_ID = re.compile(r"(?:[0-9A-Fa-f]{4}|[0-9A-Fa-f]{8}):[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]")


def _exact(value: str, form: re.Pattern[str], what: str, example: str) -> str:
    if form.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not {what} in the form NVML writes ({example})")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _MIGDoc(_Strict):
    index: int = Field(ge=0)
    uuid: str
    gpu_instance_id: int = Field(ge=0)
    compute_instance_id: int = Field(ge=0)
    profile: str = Field(min_length=1)
    memory_total_mib: int = Field(ge=0)
    compute_slices: int = Field(ge=1)

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return _exact(
            value,
            _MIG_UUID,
            "a MIG UUID",
            "MIG-<8-4-4-4-12 lower-case hex digits>, or MIG-GPU-<GPU UUID>/<gi>/<ci>",
        )


class _GPUDoc(_Strict):
    index: int = Field(ge=0)
    uuid: str
    pci_bus_id: str
    name: str
    memory_total_mib: int = Field(ge=0)
    mig_mode: bool
    mig_compute_slices_total: int | None = Field(ge=1)
    mig_devices: list[_MIGDoc]

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return _exact(value, _GPU_UUID, "a GPU UUID", "GPU-<8-4-4-4-12 lower-case hex digits>")

    @field_validator("pci_bus_id")
    @classmethod
    def _pci_bus_id(cls, value: str) -> str:
        return _exact(value, _PCI_BUS_ID, "a PCI bus id", "00000000:18:00.0 or 0000:18:00.0")


class _InventoryDoc(_Strict):
    schema_: Literal["gpuroute.inventory/1"] = Field(alias="schema")
    driver_version: str | None
    gpus: list[_GPUDoc]


def decode(data: object, *, source: str = "snapshot") -> Inventory:
    """Validate a snapshot document and build the Inventory it describes."""
    if isinstance(data, dict) and data.get("schema") != SCHEMA:
        found = data.get("schema")
        raise SnapshotError(
            f"{source}: schema is {found!r}, expected {SCHEMA!r}. "
            "Write snapshots with `gpuroute inventory save FILE` or `Inventory.save()`."
        )
    try:
        doc = _InventoryDoc.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'document'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SnapshotError(f"{source} is not a valid {SCHEMA} snapshot: {problems}") from exc
    try:
        return Inventory(
            gpus=tuple(
                GPU(
                    index=g.index,
                    uuid=g.uuid,
                    pci_bus_id=g.pci_bus_id,
                    name=g.name,
                    memory_total_mib=g.memory_total_mib,
                    mig_mode=g.mig_mode,
                    mig_compute_slices_total=g.mig_compute_slices_total,
                    mig_devices=tuple(MIGDevice(**m.model_dump()) for m in g.mig_devices),
                )
                for g in doc.gpus
            ),
            driver_version=doc.driver_version,
        )
    except InventoryError as exc:
        raise SnapshotError(f"{source} is inconsistent: {exc.message}") from exc


def encode(inventory: Inventory) -> dict[str, Any]:
    """The snapshot document of an Inventory, keys in the documented order."""
    return {
        "schema": SCHEMA,
        "driver_version": inventory.driver_version,
        "gpus": [
            {
                "index": g.index,
                "uuid": g.uuid,
                "pci_bus_id": g.pci_bus_id,
                "name": g.name,
                "memory_total_mib": g.memory_total_mib,
                "mig_mode": g.mig_mode,
                "mig_compute_slices_total": g.mig_compute_slices_total,
                "mig_devices": [
                    {
                        "index": m.index,
                        "uuid": m.uuid,
                        "gpu_instance_id": m.gpu_instance_id,
                        "compute_instance_id": m.compute_instance_id,
                        "profile": m.profile,
                        "memory_total_mib": m.memory_total_mib,
                        "compute_slices": m.compute_slices,
                    }
                    for m in g.mig_devices
                ],
            }
            for g in inventory.gpus
        ],
    }
