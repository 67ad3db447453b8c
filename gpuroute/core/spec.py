"""The spec grammar: text or a sequence in, a tuple of typed tokens out. Pure.

A spec names GPUs, one entry per device, separated by commas::

    3                       NVML index (nvidia-smi's numbering, PCI bus order)
    GPU-8932f937-…          GPU UUID, in full or a unique prefix (at least one hex digit)
    MIG-0c8a5d0e-…          MIG device UUID (drivers R470 and newer), in full or a unique prefix
    MIG-GPU-<uuid>/<gi>/<ci> legacy MIG form: parent GPU UUID, GPU instance, compute instance
    0:1                     MIG device 1 of GPU 0 (the toolkit's GPU_IDX:MIG_IDX)
    0000:18:00.0            PCI bus id, lspci spelling (4-digit domain) ...
    00000000:18:00.0        ... or NVML's spelling (8-digit domain); hex is case-insensitive
    all                     every whole GPU whose MIG mode is off
    any:2                   any 2 free GPUs, chosen when a lease is acquired (gpuroute.acquire)
    none, or empty          no GPU

Whitespace around entries is ignored; keywords and hex digits are case-insensitive.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gpuroute.errors import SpecError

__all__ = ["Kind", "ParsedSpec", "SpecInput", "Token", "normalize_pci_bus_id", "parse_spec"]


FORMS_HELP = (
    "use an NVML index (3), a GPU UUID or a unique prefix of one (GPU-8932f937), "
    "a MIG UUID (MIG-…), a MIG index (0:1), a legacy MIG id (MIG-GPU-<uuid>/<gi>/<ci>), "
    "a PCI bus id (0000:18:00.0), 'all', 'any:N', or 'none'"
)


class Kind(enum.Enum):
    """What form a token is written in."""

    INDEX = "index"
    GPU_UUID = "GPU UUID"
    MIG_UUID = "MIG UUID"
    MIG_LEGACY = "legacy MIG id"
    MIG_INDEX = "MIG index"
    PCI = "PCI bus id"
    ALL = "all"
    ANY = "any:N"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Token:
    """One entry of a spec. ``text`` is the entry as written (stripped).

    ``uuid`` is upper-cased for comparison; ``index``/``mig_index`` hold the numbers of the
    index forms; ``gpu_instance``/``compute_instance`` those of the legacy MIG form; ``pci``
    the bus id in NVML's canonical spelling.
    """

    text: str
    kind: Kind
    index: int | None = None
    mig_index: int | None = None
    uuid: str | None = None
    gpu_instance: int | None = None
    compute_instance: int | None = None
    pci: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedSpec:
    """A parsed spec: its canonical text (entries joined by commas) and its tokens."""

    text: str
    tokens: tuple[Token, ...]


_HEX_UUID = r"[0-9A-F][0-9A-F-]*"
_GPU_UUID = re.compile(rf"GPU-({_HEX_UUID})")
_MIG_UUID = re.compile(rf"MIG-({_HEX_UUID})")
_MIG_LEGACY = re.compile(rf"MIG-(GPU-{_HEX_UUID})/([0-9]+)/([0-9]+)")
_MIG_INDEX = re.compile(r"([0-9]+):([0-9]+)")
_PCI = re.compile(r"(?:([0-9A-F]{1,8}):)?([0-9A-F]{1,2}):([0-9A-F]{1,2})\.([0-7])")
_DIGITS = re.compile(r"[0-9]+")
_ANY = re.compile(r"ANY:([0-9]+)")


SpecInput = str | int | Sequence[int | str] | ParsedSpec | None
"""What ``plan()`` accepts as a spec (a ``ParsedSpec`` is taken as it is: parsed once). Of
sequences, only lists and tuples: bytes and other sequences are refused."""


def normalize_pci_bus_id(text: str) -> str | None:
    """Return NVML's spelling of a PCI bus id (``00000000:18:00.0``), or None if ``text``
    is not one. Accepts an 8- or 4-digit domain, or none (domain 0)."""
    m = _PCI.fullmatch(text.strip().upper())
    if m is None:
        return None
    domain, bus, device, function = m.groups()
    return f"{int(domain or '0', 16):08X}:{int(bus, 16):02X}:{int(device, 16):02X}.{function}"


MAX_DIGITS = 9
"""The most digits a number in a spec may have: no index, count or MIG id comes near, and
``int()`` of more than 4,300 digits is refused by Python itself."""


def _brief(text: str) -> str:
    """``text`` quoted, or its start and length where it is too long to show."""
    return repr(text) if len(text) <= 60 else f"{text[:40]!r}… ({len(text)} characters)"


def _number(digits: str, text: str, spec: str) -> int:
    if len(digits) > MAX_DIGITS:
        raise SpecError(
            f"{_brief(text)} in spec {_brief(spec)} is not a GPU id: a number of "
            f"{len(digits)} digits is more than any GPU index, count or MIG id has "
            f"(at most {MAX_DIGITS} digits)",
            spec=spec,
            token=text,
        )
    return int(digits)


def parse_token(text: str, spec: str) -> Token:
    """Parse one stripped entry. Raises SpecError naming it if it is no known form."""
    upper = text.upper()
    if upper == "ALL":
        return Token(text, Kind.ALL)
    if upper == "NONE":
        return Token(text, Kind.NONE)
    if m := _ANY.fullmatch(upper):
        count = _number(m[1], text, spec)
        if count < 1:
            raise SpecError(
                f"{text!r} in spec {spec!r} asks for no GPU: write 'none'", spec=spec, token=text
            )
        return Token(text, Kind.ANY, index=count)
    if _DIGITS.fullmatch(text):
        return Token(text, Kind.INDEX, index=_number(text, text, spec))
    if m := _MIG_INDEX.fullmatch(text):
        index, mig_index = (_number(d, text, spec) for d in (m[1], m[2]))
        return Token(text, Kind.MIG_INDEX, index=index, mig_index=mig_index)
    if m := _MIG_LEGACY.fullmatch(upper):
        gi, ci = (_number(d, text, spec) for d in (m[2], m[3]))
        return Token(text, Kind.MIG_LEGACY, uuid=m[1], gpu_instance=gi, compute_instance=ci)
    if _MIG_UUID.fullmatch(upper):
        return Token(text, Kind.MIG_UUID, uuid=upper)
    if _GPU_UUID.fullmatch(upper):
        return Token(text, Kind.GPU_UUID, uuid=upper)
    if (pci := normalize_pci_bus_id(text)) is not None:
        return Token(text, Kind.PCI, pci=pci)
    if text.startswith("-") and _DIGITS.fullmatch(text[1:]):
        hint = "indices start at 0; there are no negative indices"
    elif upper in ("VOID", "NODEVFILES"):
        hint = "write 'none' (or an empty spec) for no GPU"
    elif upper.startswith(("GPU-", "MIG-")):
        hint = "a UUID has hex digits and dashes after its GPU- or MIG- prefix"
    else:
        hint = FORMS_HELP
    raise SpecError(f"{text!r} in spec {spec!r} is not a GPU id: {hint}", spec=spec, token=text)


def parse_spec(spec: SpecInput) -> ParsedSpec:
    """Split a spec into tokens.

    Raises SpecError for a malformed spec: an empty entry between commas, a token of no known
    form, ``all``/``none`` mixed with other entries, or a value of the wrong type.
    """
    if isinstance(spec, ParsedSpec):
        return spec
    if spec is None:
        return ParsedSpec("none", (Token("none", Kind.NONE),))
    if isinstance(spec, bool):
        raise SpecError(f"a GPU spec cannot be {spec!r}: pass an index, a string or a list")
    if isinstance(spec, int):
        text = _int_text(spec)
        return _finish(text, [_int_token(spec, text)])
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            return ParsedSpec("none", (Token("", Kind.NONE),))
        tokens = []
        for position, raw in enumerate(text.split(","), start=1):
            entry = raw.strip()
            if not entry:
                raise SpecError(
                    f"entry {position} of spec {spec!r} is empty: remove the extra comma",
                    spec=spec,
                    token="",
                )
            tokens.append(parse_token(entry, spec))
        return _finish(spec, tokens)
    if isinstance(spec, bytes | bytearray | memoryview):
        kind = type(spec).__name__
        raise SpecError(
            f"a GPU spec cannot be {kind}: its items are byte values, not GPU ids "
            f"(b'1,2' would name GPUs 49, 44 and 50); decode it to a string first "
            f"(spec.decode()), or pass a list of ints and strings",
            spec=f"<{kind} of length {len(spec)}>",
        )
    if isinstance(spec, list | tuple):
        shown = "[" + ", ".join(_int_text(i) if _is_int(i) else repr(i) for i in spec) + "]"
        tokens = []
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise SpecError(
                    f"{item!r} in spec {shown} is not a GPU id: list ints and strings only",
                    spec=shown,
                    token=repr(item),
                )
            if isinstance(item, int):
                tokens.append(_int_token(item, shown))
                continue
            entry = item.strip()
            if not entry or "," in entry:
                raise SpecError(
                    f"{item!r} in spec {shown} must name exactly one device per list entry",
                    spec=shown,
                    token=item,
                )
            tokens.append(parse_token(entry, shown))
        if not tokens:
            return ParsedSpec("none", (Token("", Kind.NONE),))
        return _finish(shown, tokens)
    raise SpecError(
        f"a GPU spec must be a string, an int, or a list or tuple of ints and strings, "
        f"not {type(spec).__name__}; convert it (list(...)) if it holds GPU ids",
        spec=f"<{type(spec).__name__}>",
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_text(value: int) -> str:
    """The int as text, or a short description where it has too many digits to be a GPU id
    (Python will not even write one of more than 4,300 digits)."""
    if value.bit_length() > 64:
        return f"<an int of {value.bit_length()} bits>"
    return str(value)


def _int_token(value: int, spec: str) -> Token:
    if abs(value) >= 10**MAX_DIGITS:
        raise SpecError(
            f"{_int_text(value)} in spec {_brief(spec)} is not a GPU id: it has more digits than "
            f"any GPU index (at most {MAX_DIGITS})",
            spec=spec,
            token=_int_text(value),
        )
    if value < 0:
        raise SpecError(
            f"{value} in spec {spec!r} is not a GPU id: indices start at 0",
            spec=spec,
            token=str(value),
        )
    return Token(str(value), Kind.INDEX, index=value)


def _finish(spec: str, tokens: list[Token]) -> ParsedSpec:
    if len(tokens) > 1:
        for token in tokens:
            if token.kind in (Kind.ALL, Kind.NONE, Kind.ANY):
                raise SpecError(
                    f"{token.text!r} in spec {spec!r} cannot be combined with other entries: "
                    f"write {token.text!r} alone, or list the devices",
                    spec=spec,
                    token=token.text,
                )
    return ParsedSpec(",".join(t.text for t in tokens), tuple(tokens))
