"""``gpuroute doctor``: check what GPU launches depend on, and say how to fix what is wrong.

Each check ends ``ok``, ``info``, ``warn`` or ``fail``; ``fail`` means a launch would fail,
and makes the command exit non-zero.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuroute.core.inventory import Inventory
from gpuroute.errors import EngineError, GpurouteError, LeaseDirError
from gpuroute.host import detect_context, reads_live_state

if TYPE_CHECKING:
    from gpuroute.kernel_log import KernelLogState
    from gpuroute.nvml import NVMLApi

__all__ = ["Check", "diagnose", "render"]

CDI_DIRS = ("/etc/cdi", "/var/run/cdi")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | info | warn | fail
    detail: str
    fix: str = ""


def diagnose(
    *,
    inventory: Inventory | None = None,
    environ: Mapping[str, str] | None = None,
    docker_host: str | None = None,
    image: str | None = None,
    lease_dir: str | None = None,
    nvml: NVMLApi | None = None,
    kernel_log: str | os.PathLike[str] | None = None,
) -> list[Check]:
    """Run every check. ``inventory`` skips reading NVML; ``image`` enables a real GPU
    container start on the engine (needs ``nvidia-smi`` in the image); ``kernel_log`` is
    where Xids are read (default: ``GPUROUTE_KERNEL_LOG``, else ``/dev/kmsg`` with the real
    NVML)."""
    env = os.environ if environ is None else environ
    checks: list[Check] = []
    inv, check = _inventory(inventory, env)
    checks.append(check)
    client = None
    try:
        client, check = _engine(docker_host)
        checks.append(check)
        if client is not None:
            checks.append(_toolkit(client, inv, image, docker_host))
    finally:
        if client is not None:
            client.close()
    checks.append(_cdi())
    checks += _caller_policy(env, inv)
    if inv is not None:
        checks += _mig(inv)
        if not reads_live_state(inventory is not None, nvml, env):
            # Not this host's NVML inventory: its live state is not to be read here.
            checks.append(
                Check(
                    "GPU health",
                    "info",
                    "not checked: the inventory is not this host's live NVML inventory",
                )
            )
        else:
            kernel, check = _kernel_log(kernel_log, env, nvml)
            checks.append(check)
            checks.append(_health(inv, nvml, kernel, lease_dir, env))
    checks.append(_leases(lease_dir, env))
    return checks


def _inventory(
    inventory: Inventory | None, env: Mapping[str, str]
) -> tuple[Inventory | None, Check]:
    from gpuroute.host import INVENTORY_ENV, default_inventory

    name = "GPU inventory"
    if inventory is not None:
        return inventory, Check(name, "info", f"given: {len(inventory.gpus)} GPU(s)")
    try:
        inv = default_inventory(env)
    except GpurouteError as exc:
        return None, Check(
            name,
            "fail",
            exc.message,
            "install the NVIDIA driver (nvidia-smi must work), or plan for "
            f"another host with {INVENTORY_ENV}=snapshot.json",
        )
    source = f"snapshot {env[INVENTORY_ENV]}" if env.get(INVENTORY_ENV) else "NVML"
    driver = f", driver {inv.driver_version}" if inv.driver_version else ""
    return inv, Check(name, "ok", f"{len(inv.gpus)} GPU(s) from {source}{driver}")


def _engine(docker_host: str | None) -> tuple[Any, Check]:
    from gpuroute.backends.docker import RetryPolicy, connect, engine_address

    where = docker_host or engine_address()
    try:
        client = connect(docker_host, retry=RetryPolicy(attempts=2, initial_wait=0.2))
    except EngineError as exc:
        return None, Check(
            "Docker engine",
            "fail",
            exc.message,
            "start dockerd, fix the socket's permissions, or set DOCKER_HOST; "
            "container launches fail until then (local launches do not)",
        )
    version = client.version().get("Version", "?")
    return client, Check("Docker engine", "ok", f"Docker Engine {version} at {where}")


def _toolkit(
    client: Any, inventory: Inventory | None, image: str | None, docker_host: str | None
) -> Check:
    from gpuroute.backends.docker import TOOLKIT_FIX

    runtimes = sorted((client.info().get("Runtimes") or {}).keys())
    name = "NVIDIA Container Toolkit"
    if image is None or inventory is None or not inventory.gpus:
        if "nvidia" in runtimes:
            return Check(
                name,
                "ok",
                f"runtime 'nvidia' registered (runtimes: {', '.join(runtimes)})",
                "run `gpuroute doctor --image IMAGE` to start a real GPU container",
            )
        return Check(
            name,
            "warn",
            "no 'nvidia' runtime registered; whether the engine has its "
            "'nvidia' device driver shows only when a GPU container starts",
            f"run `gpuroute doctor --image IMAGE` to try one. {TOOLKIT_FIX}",
        )
    from gpuroute.api import launch

    first = next((g for g in inventory.gpus if not g.mig_mode), None)
    mig = next(((g, m) for g in inventory.gpus for m in g.mig_devices), None)
    if first is not None:
        spec = str(first.index)
    elif mig is not None:
        spec = f"{mig[0].index}:{mig[1].index}"
    else:
        return Check(
            name,
            "warn",
            "every GPU is in MIG mode without MIG devices: nothing to start a container on",
        )
    try:
        with launch(
            ["nvidia-smi", "-L"],
            gpus=spec,
            image=image,
            inventory=inventory,
            docker_host=docker_host,
            docker_client=client,
            verify=True,
            pull="never",
            docker_kwargs={"network_mode": "none"},
        ) as run:
            run.wait(timeout=120)
    except GpurouteError as exc:
        return Check(
            name, "fail", f"a GPU container on {spec} did not start as planned: {exc.message}"
        )
    return Check(name, "ok", f"a container of {image} on GPU {spec} saw exactly that GPU")


def _cdi() -> Check:
    specs = []
    for directory in CDI_DIRS:
        path = Path(directory)
        if path.is_dir():
            for spec in sorted(path.iterdir()):
                try:
                    if "nvidia.com/gpu" in spec.read_text(errors="replace"):
                        specs.append(str(spec))
                except OSError:
                    continue
    if specs:
        return Check(
            "CDI specs",
            "ok",
            f"NVIDIA CDI spec(s): {', '.join(specs)} (launch with "
            "cdi=True to use them; regenerate after changing MIG: "
            "`nvidia-ctk cdi generate`)",
        )
    return Check(
        "CDI specs",
        "info",
        f"none in {' or '.join(CDI_DIRS)}; gpuroute uses the "
        "engine's 'nvidia' device driver, which needs none",
    )


def _caller_policy(env: Mapping[str, str], inventory: Inventory | None) -> list[Check]:
    context = detect_context(env)
    mask = context.cuda_visible_devices
    checks = []
    if mask is None:
        checks.append(
            Check("CUDA_VISIBLE_DEVICES", "ok", "not set: local launches may use any GPU they name")
        )
    elif context.reserves_gpus_for_containers:
        checks.append(
            Check(
                "CUDA_VISIBLE_DEVICES",
                "info",
                "set to an empty string: this host "
                "reserves GPU compute for containers; local GPU launches are "
                "refused, container launches work",
            )
        )
    else:
        checks.append(
            Check(
                "CUDA_VISIBLE_DEVICES",
                "info",
                f"{mask!r}: local launches stay "
                "inside this allocation; containers are not bound by it",
            )
        )
    order = context.device_order
    if inventory is None:
        checks.append(Check("CUDA_DEVICE_ORDER", "info", f"{order}; GPU models unknown"))
        return checks
    models = sorted({g.name for g in inventory.gpus})
    if not context.ordinals_follow_pci(inventory):
        checks.append(
            Check(
                "CUDA_DEVICE_ORDER",
                "warn",
                f"{order} on a host mixing {', '.join(models)}: CUDA's device 0 is the "
                "fastest GPU, not nvidia-smi's GPU 0, for programs gpuroute does not start",
                "export CUDA_DEVICE_ORDER=PCI_BUS_ID in the shell profile (gpuroute sets it for "
                "what it launches)",
            )
        )
    else:
        checks.append(
            Check(
                "CUDA_DEVICE_ORDER",
                "ok",
                f"{order}; "
                + (
                    "one GPU model, so CUDA's order is PCI order"
                    if len(models) <= 1
                    else "CUDA numbers GPUs as nvidia-smi does"
                ),
            )
        )
    return checks


def _mig(inventory: Inventory) -> list[Check]:
    on = [g for g in inventory.gpus if g.mig_mode]
    if not on:
        return [Check("MIG", "ok", "no GPU in MIG mode")]
    checks = []
    for gpu in on:
        if not gpu.mig_devices:
            checks.append(
                Check(
                    "MIG",
                    "warn",
                    f"GPU {gpu.index} is in MIG mode with no MIG devices: it can run no CUDA work",
                    f"create instances (`nvidia-smi mig -i {gpu.index} -cgi 1g.10gb "
                    "-C`) or turn MIG off (`nvidia-smi -i N -mig 0`)",
                )
            )
        else:
            profiles = ", ".join(f"{gpu.index}:{m.index} {m.profile}" for m in gpu.mig_devices)
            checks.append(Check("MIG", "ok", f"GPU {gpu.index} in MIG mode: {profiles}"))
    return checks


def _kernel_log(
    path: str | os.PathLike[str] | None, env: Mapping[str, str], nvml: NVMLApi | None
) -> tuple[KernelLogState | None, Check]:
    from gpuroute.kernel_log import DEFAULT_KERNEL_LOG, KERNEL_LOG_ENV, KernelLog
    from gpuroute.nvml import critical_xid

    name = "Kernel log"
    where = path or env.get(KERNEL_LOG_ENV, "").strip() or None
    if where is None and nvml is None:
        where = DEFAULT_KERNEL_LOG
    if where is None:
        return None, Check(name, "info", "not read: a given NVML stands for another host")
    reader = KernelLog(where)
    try:
        state = reader.poll()
    finally:
        reader.close()
    if not state.readable:
        return state, Check(
            name,
            "warn",
            f"Xids cannot be read: {state.reason}. They are then seen only through NVML, "
            "which delivers each Xid to a single reader that was already waiting for it",
            "let gpuroute read the kernel log (root, CAP_SYSLOG or kernel.dmesg_restrict=0)",
        )
    critical = sorted({e.xid for e in state.xids if critical_xid(e.xid)})
    detail = f"{state.path}: {len(state.xids)} Xid(s) since boot" + (
        f" (critical: {', '.join(map(str, critical))})" if critical else ""
    )
    return state, Check(name, "ok", detail)


def _health(
    inventory: Inventory,
    nvml: NVMLApi | None,
    kernel: KernelLogState | None,
    lease_dir: str | None,
    env: Mapping[str, str],
) -> Check:
    from gpuroute.health import observe
    from gpuroute.nvml import read_state

    try:
        state = read_state(inventory, nvml)
    except GpurouteError as exc:
        return Check("GPU health", "warn", f"cannot read: {exc.message}")
    state = observe(inventory, state, kernel=kernel, lease_dir=lease_dir, environ=env)
    if state.source == "none" and not any(d.problems for d in state.devices.values()):
        return Check("GPU health", "info", "not checked: NVML is not available here")
    bad = [
        (d.label, state.of(d.uuid).problems)
        for d in inventory.devices()
        if state.of(d.uuid).problems
    ]
    if not bad:
        return Check("GPU health", "ok", "no Xid, ECC, retired-page or lost-GPU problem")
    listing = "; ".join(f"{label}: {', '.join(p)}" for label, p in bad)
    return Check(
        "GPU health",
        "warn",
        f"not offered to leases: {listing}",
        "reset the GPU (`nvidia-smi -r -i N`) or reboot, see `dmesg` for Xids; then "
        "`gpuroute health clear N` clears a recorded Xid",
    )


def _leases(lease_dir: str | None, env: Mapping[str, str]) -> Check:
    from gpuroute.leases import LeaseDir

    try:
        directory = LeaseDir(lease_dir, create=False, environ=env)
    except LeaseDirError as exc:
        return Check("Lease directory", "warn", exc.message)
    return Check("Lease directory", "ok", f"{directory.path} is usable")


_MARK = {"ok": "[ ok ]", "info": "[info]", "warn": "[warn]", "fail": "[FAIL]"}


_STYLE = {"ok": "ok", "info": "note", "warn": "warn", "fail": "fail"}


def render(checks: list[Check], *, colour: bool = False) -> str:
    """The checks, one a line, with the fix under each warning and failure; with ``colour``,
    the status marks are coloured (see ``gpuroute.term``)."""
    from gpuroute.term import paint

    lines = []
    for check in checks:
        mark = paint(_MARK[check.status], _STYLE[check.status], colour)
        lines.append(f"{mark} {check.name}: {check.detail}")
        if check.fix and check.status in ("warn", "fail"):
            lines.append(f"       fix: {check.fix}")
    failed = sum(c.status == "fail" for c in checks)
    lines.append("")
    lines.append(
        "A launch would fail: see the [FAIL] lines." if failed else "Nothing stops a launch."
    )
    return "\n".join(lines) + "\n"
