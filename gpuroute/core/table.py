"""Plain-text tables: the one renderer behind ``gpuroute ls``, ``gpuroute leases``,
``RoutingPlan.explain()`` and the benchmark summary."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["format_table", "short_ids"]

ELLIPSIS = "…"


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    align: str = "",
    rule: bool = False,
    indent: str = "",
    max_width: int | None = None,
    shrink: Sequence[int] = (),
) -> str:
    """The header line and one line per row, each column as wide as its widest cell, columns
    two spaces apart, trailing blanks cut; the lines joined by newlines, with no newline at
    the end.

    ``align`` has one character per column, ``<`` (left, the default for columns it does
    not reach) or ``>`` (right, for numbers). ``rule`` puts a line of dashes under the
    headers; ``indent`` goes before every line.

    ``max_width`` fits the lines to that many columns where they would be wider: the columns
    named in ``shrink`` (by position) are narrowed, the widest first but never below their
    header, and a cell cut short ends with ``…``. Other columns are never cut, so a table
    may still be wider than ``max_width`` where those alone do not fit.
    """
    if set(align) - {"<", ">"} or len(align) > len(headers):
        raise ValueError(
            f"align {align!r}: give at most one '<' or '>' per column ({len(headers)} columns)"
        )
    body = [tuple(row) for row in rows]
    for row in body:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells; the headers name {len(headers)}")
    widths = [max(len(line[c]) for line in (headers, *body)) for c in range(len(headers))]
    if max_width is not None:
        _fit(widths, headers, shrink, max_width - len(indent))
        body = [tuple(_cut(cell, w) for cell, w in zip(row, widths, strict=True)) for row in body]
    sides = align.ljust(len(headers), "<")

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if side == ">" else cell.ljust(width)
            for cell, width, side in zip(cells, widths, sides, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    lines = [line(headers)]
    if rule:
        lines.append(line(["-" * width for width in widths]))
    lines.extend(line(row) for row in body)
    return "\n".join(lines)


def _fit(widths: list[int], headers: Sequence[str], shrink: Sequence[int], limit: int) -> None:
    """Narrow the ``shrink`` columns, the widest first, until the line fits ``limit``."""
    floor = {c: max(len(headers[c]), len(ELLIPSIS) + 1) for c in shrink}
    while sum(widths) + 2 * (len(widths) - 1) > limit:
        candidates = [c for c in shrink if widths[c] > floor[c]]
        if not candidates:
            return
        widest = max(candidates, key=lambda c: widths[c])
        widths[widest] -= 1


def _cut(cell: str, width: int) -> str:
    return cell if len(cell) <= width else cell[: width - len(ELLIPSIS)] + ELLIPSIS


_HEX = frozenset("0123456789abcdefABCDEF")


def short_ids(uuids: Iterable[str], *, digits: int = 8) -> dict[str, str]:
    """Each GPU or MIG UUID (``GPU-…``, ``MIG-…``) shortened, as ``docker ps`` shortens ids,
    to its kind and first ``digits`` hex digits (``GPU-8932f937``), or more where that
    prefix would name more than one of ``uuids``: every short form is a unique prefix, which
    a spec accepts. Other ids (the legacy ``MIG-GPU-…/gi/ci`` form) are kept whole."""
    whole = list(dict.fromkeys(uuids))
    short: dict[str, str] = {}
    for uuid in whole:
        kind, _, rest = uuid.partition("-")
        if kind.upper() not in ("GPU", "MIG") or not rest[:1] or rest[0] not in _HEX:
            short[uuid] = uuid
            continue
        others = [u.upper() for u in whole if u != uuid]
        size = len(kind) + 1 + digits
        while size < len(uuid) and any(o.startswith(uuid[:size].upper()) for o in others):
            size += 1
        prefix = uuid[:size].rstrip("-")
        short[uuid] = prefix if len(prefix) < len(uuid) else uuid
    return short
