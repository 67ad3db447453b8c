"""Plain-text tables: the one renderer behind ``gpuroute ls``, ``gpuroute leases``,
``RoutingPlan.explain()`` and the benchmark summary."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["format_table"]


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    align: str = "",
    rule: bool = False,
    indent: str = "",
) -> str:
    """The header line and one line per row, each column as wide as its widest cell, columns
    two spaces apart, trailing blanks cut; the lines joined by newlines, with no newline at
    the end.

    ``align`` has one character per column, ``<`` (left, the default for columns it does
    not reach) or ``>`` (right, for numbers). ``rule`` puts a line of dashes under the
    headers; ``indent`` goes before every line.
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
