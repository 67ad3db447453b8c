"""Resolution: a parsed spec, an inventory and a context in, a RoutingPlan out. Pure.

Strict by design: a device named twice (in any two forms), an unknown or ambiguous id, a
whole GPU in MIG mode, whole GPUs mixed with MIG devices, and more than one MIG device
without an explicit opt-in all raise, naming the token and listing what is available.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Device, Inventory
from gpuroute.core.plan import (
    DEFAULT_DRIVER_CAPABILITIES,
    DRIVER_CAPABILITIES,
    LocalIds,
    RoutingPlan,
)
from gpuroute.core.spec import Kind, SpecInput, Token, parse_spec
from gpuroute.errors import (
    AmbiguousDeviceError,
    ContextError,
    DuplicateDeviceError,
    MIGModeError,
    MixedDeviceError,
    MultipleMIGError,
    SpecError,
    UnknownDeviceError,
)

__all__ = ["Target", "resolve"]

Target = Literal["container", "local"]

MULTI_MIG_MIN_DRIVER = 570
"""CUDA enumerates several MIG devices in one process (one compute instance per GPU
instance) from driver R570 on; before, a process sees a single MIG device."""


def resolve(
    spec: SpecInput,
    inventory: Inventory,
    *,
    context: CallerContext | None = None,
    target: Target | None = None,
    allow_multiple_mig: bool = False,
    driver_capabilities: Iterable[str] | None = None,
    local_ids: LocalIds = "uuid",
) -> RoutingPlan:
    """Resolve ``spec`` against ``inventory`` into a RoutingPlan.

    ``target="local"`` makes a context violation (a device outside the parent mask) an
    immediate ContextError; otherwise it is recorded in the plan and raised only when
    ``plan.local_env`` is read, since container routing is not bound by the parent mask.
    """
    context = context or CallerContext()
    parsed = parse_spec(spec)
    given = driver_capabilities is not None
    caps = _capabilities(
        DEFAULT_DRIVER_CAPABILITIES if driver_capabilities is None else driver_capabilities,
        parsed.text,
    )
    if local_ids not in ("uuid", "index"):
        raise SpecError(f"local_ids must be 'uuid' or 'index', not {local_ids!r}")
    if target not in (None, "container", "local"):
        raise SpecError(f"target must be 'container' or 'local', not {target!r}")

    notes: list[str] = []
    named: list[tuple[Token, Device]] = []
    for token in parsed.tokens:
        if token.kind is Kind.NONE:
            break
        if token.kind is Kind.ALL:
            named += [(token, d) for d in _all(token, inventory, parsed.text, notes)]
            break
        if token.kind is Kind.ANY:
            raise SpecError(
                f"{token.text!r} asks for free GPUs, which only a lease can choose: use "
                f"gpuroute.acquire({token.text!r}) or launch(..., gpus={token.text!r}, "
                "lease=True) (CLI: --lease), or name the devices",
                spec=parsed.text,
                token=token.text,
            )
        named.append((token, _lookup(token, inventory, parsed.text)))

    _check_duplicates(named, parsed.text)
    _check_mig_rules(named, inventory, parsed.text, allow_multiple_mig)
    devices = tuple(d for _, d in named)
    if context.in_container:
        notes.append(
            "this process runs inside a container: indices here are this container's own; "
            "the host-side variables use UUIDs, which mean the same on the host"
        )
    refusal = _local_refusal(devices, inventory, context, local_ids, parsed.text)
    if refusal is not None and target == "local":
        raise ContextError(refusal, spec=parsed.text)
    return RoutingPlan(
        spec=parsed.text,
        devices=devices,
        inventory=inventory,
        context=context,
        driver_capabilities=caps,
        capabilities_given=given,
        local_ids=local_ids,
        local_refusal=refusal,
        notes=tuple(notes),
    )


def _capabilities(requested: Iterable[str], spec: str) -> tuple[str, ...]:
    if isinstance(requested, str):
        requested = requested.split(",")
    caps: list[str] = []
    for raw in requested:
        cap = raw.strip().lower()
        if cap not in DRIVER_CAPABILITIES:
            allowed = ", ".join(sorted(DRIVER_CAPABILITIES))
            raise SpecError(
                f"{raw!r} is not an NVIDIA driver capability; use some of: {allowed}",
                spec=spec,
                token=raw,
            )
        if cap not in caps:
            caps.append(cap)
    if not caps:
        raise SpecError("driver capabilities cannot be empty; the usual set is compute,utility")
    return tuple(caps)


def _all(token: Token, inventory: Inventory, spec: str, notes: list[str]) -> list[Device]:
    whole = [Device(g) for g in inventory.gpus if not g.mig_mode]
    skipped = inventory.mig_gpus
    if not whole:
        where = "this host has no GPUs" if not inventory.gpus else "every GPU is in MIG mode"
        raise UnknownDeviceError(
            f"{token.text!r} matched no whole GPU: {where}. Name MIG devices instead.\n"
            f"{inventory.available()}",
            spec=spec,
            token=token.text,
        )
    if skipped:
        listed = ", ".join(str(g.index) for g in skipped)
        notes.append(
            f"'all' leaves out GPU(s) {listed}: their MIG mode is on, so only their MIG devices "
            "run CUDA work; name one (for example 1:0) to use it"
        )
    return whole


def _lookup(token: Token, inventory: Inventory, spec: str) -> Device:
    def unknown(why: str) -> UnknownDeviceError:
        return UnknownDeviceError(
            f"{token.text!r} in spec {spec!r}: {why}.\n{inventory.available()}",
            spec=spec,
            token=token.text,
        )

    device: Device | None
    if token.kind is Kind.INDEX:
        assert token.index is not None
        if token.index >= len(inventory.gpus):
            n = len(inventory.gpus)
            have = f"indices 0-{n - 1}" if n else "no GPUs"
            raise unknown(f"index {token.index} is out of range; this host has {have}")
        device = Device(inventory.gpus[token.index])
    elif token.kind is Kind.MIG_INDEX:
        assert token.index is not None
        assert token.mig_index is not None
        if token.index >= len(inventory.gpus):
            raise unknown(f"there is no GPU {token.index}")
        gpu = inventory.gpus[token.index]
        if not gpu.mig_mode:
            raise unknown(f"GPU {gpu.index} is not in MIG mode, so it has no MIG devices")
        mig = next((m for m in gpu.mig_devices if m.index == token.mig_index), None)
        if mig is None:
            raise unknown(f"GPU {gpu.index} has no MIG device {token.mig_index}")
        device = Device(gpu, mig)
    elif token.kind is Kind.PCI:
        assert token.pci is not None
        found = inventory.by_pci(token.pci)
        if found is None:
            raise unknown(f"no GPU sits at PCI bus id {token.pci}")
        device = Device(found)
    elif token.kind is Kind.MIG_LEGACY:
        assert token.uuid is not None
        parent = _by_uuid_prefix(token, token.uuid, inventory, spec, mig=False)
        gpu = parent.gpu
        mig = next(
            (
                m
                for m in gpu.mig_devices
                if (m.gpu_instance_id, m.compute_instance_id)
                == (token.gpu_instance, token.compute_instance)
            ),
            None,
        )
        if mig is None:
            raise unknown(
                f"GPU {gpu.index} has no MIG device with GPU instance {token.gpu_instance} "
                f"and compute instance {token.compute_instance}"
            )
        device = Device(gpu, mig)
    else:
        assert token.uuid is not None
        device = _by_uuid_prefix(
            token, token.uuid, inventory, spec, mig=token.kind is Kind.MIG_UUID
        )

    if not device.is_mig and device.gpu.mig_mode:
        migs = (
            "\n".join(
                f"  {device.gpu.index}:{m.index}  {m.uuid}  {m.profile}"
                for m in device.gpu.mig_devices
            )
            or "  (none yet: create GPU and compute instances with nvidia-smi mig)"
        )
        raise MIGModeError(
            f"{token.text!r} in spec {spec!r} names GPU {device.gpu.index} as a whole, but its "
            f"MIG mode is on: CUDA work runs only on its MIG devices. Name one of them:\n{migs}",
            spec=spec,
            token=token.text,
        )
    return device


def _by_uuid_prefix(
    token: Token, prefix: str, inventory: Inventory, spec: str, *, mig: bool
) -> Device:
    matches = [d for d in inventory.uuids_starting_with(prefix) if d.is_mig == mig]
    if len(matches) == 1:
        return matches[0]
    what = "MIG device" if mig else "GPU"
    if not matches:
        raise UnknownDeviceError(
            f"{token.text!r} in spec {spec!r}: no {what} has a UUID starting with {prefix}.\n"
            f"{inventory.available()}",
            spec=spec,
            token=token.text,
        )
    listed = "\n".join(f"  {d.label:<5} {d.uuid}" for d in matches)
    raise AmbiguousDeviceError(
        f"{token.text!r} in spec {spec!r} is a prefix of {len(matches)} {what} UUIDs; "
        f"give more digits to pick one:\n{listed}",
        spec=spec,
        token=token.text,
    )


def _check_duplicates(named: list[tuple[Token, Device]], spec: str) -> None:
    seen: dict[str, Token] = {}
    for token, device in named:
        first = seen.get(device.uuid)
        if first is not None:
            same = "" if first.text == token.text else f" (as {first.text!r})"
            raise DuplicateDeviceError(
                f"{token.text!r} in spec {spec!r} names {device.describe()}, which the spec "
                f"already names{same}: list each device once",
                spec=spec,
                token=token.text,
            )
        seen[device.uuid] = token


def _check_mig_rules(
    named: list[tuple[Token, Device]], inventory: Inventory, spec: str, allow_multiple_mig: bool
) -> None:
    migs = [(t, d) for t, d in named if d.is_mig]
    if not migs:
        return
    whole = [(t, d) for t, d in named if not d.is_mig]
    if whole:
        raise MixedDeviceError(
            f"spec {spec!r} mixes whole GPUs ({', '.join(t.text for t, _ in whole)}) with MIG "
            f"devices ({', '.join(t.text for t, _ in migs)}): CUDA cannot enumerate both in one "
            "process. Request whole GPUs or MIG devices, in separate launches.",
            spec=spec,
            token=migs[0][0].text,
        )
    if len(migs) == 1:
        return
    if not allow_multiple_mig:
        raise MultipleMIGError(
            f"spec {spec!r} names {len(migs)} MIG devices, but a CUDA process uses one MIG "
            "device (several need driver R570+, one compute instance per GPU instance, and no "
            "NCCL between them). Launch one process per MIG device, or pass "
            "allow_multiple_mig=True (CLI: --allow-multiple-mig) if your program handles it.",
            spec=spec,
            token=migs[1][0].text,
        )
    major = _driver_major(inventory.driver_version)
    if major is not None and major < MULTI_MIG_MIN_DRIVER:
        raise MultipleMIGError(
            f"spec {spec!r} names several MIG devices, but driver {inventory.driver_version} "
            f"lets a process see only one; that needs R{MULTI_MIG_MIN_DRIVER} or newer",
            spec=spec,
            token=migs[1][0].text,
        )
    instances: dict[tuple[str, int], Token] = {}
    for token, device in migs:
        assert device.mig is not None
        key = (device.gpu.uuid, device.mig.gpu_instance_id)
        if key in instances:
            raise MultipleMIGError(
                f"{token.text!r} and {instances[key].text!r} in spec {spec!r} are compute "
                f"instances of the same GPU instance ({device.mig.gpu_instance_id} on GPU "
                f"{device.gpu.index}); CUDA enumerates one compute instance per GPU instance",
                spec=spec,
                token=token.text,
            )
        instances[key] = token


def _driver_major(version: str | None) -> int | None:
    if not version:
        return None
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _local_refusal(
    devices: tuple[Device, ...],
    inventory: Inventory,
    context: CallerContext,
    local_ids: LocalIds,
    spec: str,
) -> str | None:
    if not devices:
        return None
    if context.reserves_gpus_for_containers:
        return (
            "CUDA_VISIBLE_DEVICES is set to an empty string here: this host reserves its GPUs "
            "for containers, so a process started directly on it may use none. Run the work "
            f"in a container instead: gpuroute.launch(cmd, gpus={spec!r}, image=IMAGE), or "
            f"`gpuroute run --gpus {spec} --image IMAGE -- CMD`."
        )
    try:
        allowed = context.visible_devices(inventory)
    except ContextError as exc:
        return exc.message
    if allowed is not None:
        allowed_uuids = {d.uuid for d in allowed}
        for device in devices:
            if device.uuid not in allowed_uuids and device.gpu.uuid not in allowed_uuids:
                shown = ", ".join(d.label for d in allowed) or "nothing"
                return (
                    f"{device.describe()} is outside this process's allocation "
                    f"(CUDA_VISIBLE_DEVICES={context.cuda_visible_devices!r} allows {shown}); "
                    "a local launch never escapes the parent mask. Request a device inside it."
                )
    if local_ids == "index":
        if any(d.is_mig for d in devices):
            return (
                "a MIG device has no integer CUDA id on the host: use local_ids='uuid' "
                "(MIG-… in CUDA_VISIBLE_DEVICES), or run it in a container, where it is device 0"
            )
        if inventory.mig_gpus:
            return (
                "integer CUDA ids are not reliable on a host with GPUs in MIG mode (CUDA does "
                "not number those like NVML): use local_ids='uuid'"
            )
    return None
