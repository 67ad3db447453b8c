"""A stand-in for the NVIDIA Container Toolkit, for a simulated GPU host.

Two executables are made from this module by ``SimulatedGPUHost``:

* ``nvidia-container-runtime-hook prestart``: the OCI prestart hook that a Docker Engine adds
  for a GPU device request. It reads the container's OCI config, resolves
  ``NVIDIA_VISIBLE_DEVICES`` the way the toolkit's legacy path does (the last value wins;
  ``void``/empty/unset mean no GPU container; ``none`` means no devices; ``all``; indices,
  full UUIDs, PCI bus ids, MIG UUIDs and ``i:j``; duplicates ignored; an unknown id fails the
  start with the toolkit's own text), and records in the container's root filesystem what it
  "mounted" (``/etc/gpuroute-sim/``). A privileged container sees every GPU, as with
  ``--privileged`` the engine passes every device node.
* ``nvidia-container-runtime``: the runtime named ``nvidia`` (``runtime: nvidia``), which adds
  the same hook to every container and then runs ``runc``, as the toolkit's legacy runtime does.

The simulated host's topology is the snapshot named by ``GPUROUTE_SIM_INVENTORY`` in the
engine's environment, read at every container start (so a test may switch topologies); from
the engine's own copy beside it (``save_inventory``) when there is one, which a start reads
without validating the snapshot again (pydantic's import alone takes longer than the rest).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from gpuroute.core.inventory import GPU, Device, Inventory
from gpuroute.core.spec import normalize_pci_bus_id

__all__ = ["Selection", "ToolkitError", "hook_main", "runtime_main", "select"]

INVENTORY_VAR = "GPUROUTE_SIM_INVENTORY"
CONFIG_VAR = "GPUROUTE_SIM_TOOLKIT_CONFIG"
HOOK_PATH_VAR = "GPUROUTE_SIM_HOOK"
RUNC_VAR = "GPUROUTE_SIM_RUNC"
RECORD_DIR = "etc/gpuroute-sim"
NVIDIA_SMI_SECONDS = "sim-nvidia-smi-seconds"
"""A setting of the simulated host's own, not the toolkit's: how long ``nvidia-smi -L`` takes
in the containers started from then on (a real one takes from 0.1 s to seconds)."""
CAPABILITIES = ("compute", "compat32", "graphics", "utility", "video", "display", "ngx")
DEFAULT_CAPABILITIES = ("utility", "compute")

# Relative speed for CUDA's FASTEST_FIRST emulation inside the container (higher first).
_SPEED = {"H100": 900, "A100": 800, "RTX 4090": 700, "RTX 3060": 300}


class ToolkitError(Exception):
    """The start fails; the message is what the toolkit prints on stderr."""


@dataclass(frozen=True)
class Selection:
    """What the hook mounts: parent GPUs and MIG devices, and the driver capabilities."""

    gpus: tuple[GPU, ...]
    migs: tuple[Device, ...]
    capabilities: tuple[str, ...]
    requested: str


def _env_map(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in env:
        key, sep, value = entry.partition("=")
        if sep:
            out[key] = value  # the last duplicate wins, as in the toolkit
    return out


def _capabilities(value: str | None) -> tuple[str, ...]:
    if not value or not value.strip():
        return DEFAULT_CAPABILITIES
    caps = tuple(c.strip() for c in value.split(",") if c.strip())
    if "all" in caps:
        return CAPABILITIES
    bad = [c for c in caps if c not in CAPABILITIES]
    if bad:
        raise ToolkitError(
            f"unsupported capabilities found in '{value}' (allowed '{','.join(CAPABILITIES)}')"
        )
    return caps


def select(env: list[str], inventory: Inventory, *, privileged: bool = False) -> Selection | None:
    """Resolve a container's environment as the toolkit's legacy hook does.

    Returns None for a container that is not a GPU container (the hook then does nothing).
    Raises ToolkitError with the toolkit's message for an unknown device or capability.
    """
    values = _env_map(env)
    raw = values.get("NVIDIA_VISIBLE_DEVICES")
    if raw is None:
        legacy = "CUDA_VERSION" in values and "NVIDIA_REQUIRE_CUDA" not in values
        if not legacy:
            return None
        raw = "all"
    tokens = [t.strip() for t in raw.split(",") if t.strip()]
    if not tokens or "void" in tokens:
        return None
    caps = _capabilities(values.get("NVIDIA_DRIVER_CAPABILITIES"))
    special = next((t for t in tokens if t in ("all", "none")), None)
    if privileged:
        special = "all"
    if special == "none":
        return Selection((), (), caps, raw)
    gpus: dict[int, GPU] = {}
    migs: dict[str, Device] = {}
    everything = list(inventory.devices())
    if special != "all":
        for token in tokens:
            if token.lower() == "all":
                special = "all"
                break
            for device in _match(token, inventory):
                gpus[device.gpu.index] = device.gpu
                if device.mig is not None:
                    migs[device.uuid] = device
    if special == "all":
        for device in everything:
            gpus[device.gpu.index] = device.gpu
            if device.mig is not None:
                migs[device.uuid] = device
    ordered = tuple(sorted(gpus.values(), key=lambda g: g.pci_bus_id))
    mig_order = tuple(sorted(migs.values(), key=lambda d: d.sort_key))
    return Selection(ordered, mig_order, caps, raw)


def _match(token: str, inventory: Inventory) -> list[Device]:
    upper = token.upper()
    found: Device | None = None
    if upper.startswith(("GPU-", "MIG-")):
        device = inventory.by_uuid(token)
        if device is not None and len(device.uuid) == len(token):
            found = device
    elif token.isdigit():
        index = int(token)
        if index < len(inventory.gpus):
            found = Device(inventory.gpus[index])
    elif token.count(":") == 1 and all(p.isdigit() for p in token.split(":")):
        i, j = (int(p) for p in token.split(":"))
        if i < len(inventory.gpus):
            gpu = inventory.gpus[i]
            mig = next((m for m in gpu.mig_devices if m.index == j), None)
            found = Device(gpu, mig) if mig is not None else None
    else:
        pci = normalize_pci_bus_id(token)
        gpu_at = inventory.by_pci(pci) if pci is not None else None
        found = Device(gpu_at) if gpu_at is not None else None
    if found is None:
        raise ToolkitError(f"nvidia-container-cli: device error: {token}: unknown device")
    return [found]


def _speed(name: str) -> int:
    return next((v for k, v in _SPEED.items() if k in name), 100)


def render(selection: Selection) -> dict[str, str]:
    """The files the hook writes under /etc/gpuroute-sim in the container."""
    smi: list[str] = []
    devices: list[str] = []
    for number, gpu in enumerate(selection.gpus):
        smi.append(f"GPU {number}: {gpu.name} (UUID: {gpu.uuid})")
        own = [d for d in selection.migs if d.gpu.uuid == gpu.uuid]
        for mig_number, device in enumerate(own):
            assert device.mig is not None
            smi.append(
                f"  MIG {device.mig.profile:<13} Device {mig_number:>2}: (UUID: {device.uuid})"
            )
            devices.append(f"{device.uuid} {gpu.pci_bus_id} {mig_number} {_speed(gpu.name)}")
        if not gpu.mig_mode:
            devices.append(f"{gpu.uuid} {gpu.pci_bus_id} -1 {_speed(gpu.name)}")
    record = {
        "requested": selection.requested,
        "capabilities": list(selection.capabilities),
        "gpus": [
            {"host_index": g.index, "uuid": g.uuid, "pci_bus_id": g.pci_bus_id}
            for g in selection.gpus
        ],
        "mig_devices": [{"label": d.label, "uuid": d.uuid} for d in selection.migs],
    }
    return {
        "nvidia-smi-L": "\n".join(smi) + "\n" if smi else "",
        "cuda-devices": "\n".join(devices) + "\n" if devices else "",
        "capabilities": ",".join(selection.capabilities) + "\n",
        "mounted.json": json.dumps(record, indent=2) + "\n",
    }


def _privileged(config: dict[str, Any]) -> bool:
    rules = config.get("linux", {}).get("resources", {}).get("devices") or []
    return any(
        r.get("allow") and r.get("access") == "rwm" and not r.get("type") and "major" not in r
        for r in rules
    )


def _settings() -> dict[str, Any]:
    path = os.environ.get(CONFIG_VAR)
    if not path or not Path(path).exists():
        return {}
    data = json.loads(Path(path).read_text())
    return data if isinstance(data, dict) else {}


def _copy_path(snapshot: Path) -> Path:
    return snapshot.with_name(f"{snapshot.name}.pickle")


def save_inventory(inventory: Inventory, snapshot: Path) -> None:
    """Write the simulated host's snapshot, and the copy of it that the hook reads fast.
    Both are the engine's own files, in its private directory."""
    inventory.save(snapshot)
    copy = _copy_path(snapshot)
    tmp = copy.with_name(f".{copy.name}.tmp")
    tmp.write_bytes(pickle.dumps((inventory.gpus, inventory.driver_version)))
    tmp.replace(copy)


def load_inventory(snapshot: Path) -> Inventory:
    """The simulated host's GPUs: the engine's copy (``save_inventory``), else the snapshot."""
    try:
        gpus, driver_version = pickle.loads(_copy_path(snapshot).read_bytes())  # noqa: S301
    except Exception:  # no copy, or one this Python cannot read: the snapshot says the same
        return Inventory.load(snapshot)
    return Inventory(gpus, driver_version)


def hook_main(argv: list[str] | None = None) -> int:
    """``nvidia-container-runtime-hook prestart``, with the OCI state on stdin."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["prestart"]:
        return 0
    state = json.load(sys.stdin)
    bundle = Path(state["bundle"])
    config = json.loads((bundle / "config.json").read_text())
    rootfs = Path(config["root"]["path"])
    if not rootfs.is_absolute():
        rootfs = bundle / rootfs
    inventory = load_inventory(Path(os.environ[INVENTORY_VAR]))
    settings = _settings()
    privileged = _privileged(config)
    if not privileged and not settings.get(
        "accept-nvidia-visible-devices-envvar-when-unprivileged", True
    ):
        # The toolkit then ignores NVIDIA_VISIBLE_DEVICES in unprivileged containers
        # (Bottlerocket's default, for example): the container gets no GPU at all.
        print(
            "Ignoring devices requested by environment variable(s) in unprivileged container",
            file=sys.stderr,
        )
        return 0
    try:
        selection = select(
            config.get("process", {}).get("env", []), inventory, privileged=privileged
        )
    except ToolkitError as exc:
        print(exc, file=sys.stderr)
        return 1
    if selection is None:
        return 0
    target = rootfs / RECORD_DIR
    target.mkdir(parents=True, exist_ok=True)
    files = render(selection)
    seconds = settings.get(NVIDIA_SMI_SECONDS)
    if seconds is not None:
        files["nvidia-smi-seconds"] = f"{float(seconds)}\n"
    for name, text in files.items():
        (target / name).write_text(text)
    return 0


def runtime_main(argv: list[str] | None = None) -> NoReturn:
    """The ``nvidia`` runtime: add the hook to the bundle on ``create``, then run runc."""
    args = sys.argv[1:] if argv is None else argv
    if "create" in args:
        bundle = None
        for flag in ("--bundle", "-b"):
            if flag in args:
                bundle = Path(args[args.index(flag) + 1])
        bundle = bundle or Path.cwd()
        config_path = bundle / "config.json"
        config = json.loads(config_path.read_text())
        hook = {
            "path": os.environ[HOOK_PATH_VAR],
            "args": ["nvidia-container-runtime-hook", "prestart"],
            "env": [f"{k}={v}" for k, v in os.environ.items()],
        }
        config.setdefault("hooks", {}).setdefault("prestart", []).append(hook)
        config_path.write_text(json.dumps(config))
    runc = os.environ.get(RUNC_VAR, "runc")
    os.execvp(runc, [runc, *args])
