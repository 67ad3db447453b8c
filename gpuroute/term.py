"""Terminal output: how wide a table may be, and colour only where it helps.

* ``width()``: the columns a table should fit: ``COLUMNS`` where it is set, else the width
  of the terminal stdout is, else None (a pipe or a file: nothing is cut, as ``docker ps``
  cuts nothing but its ids there).
* ``colour_enabled()``: colour only on a terminal, never where ``NO_COLOR`` is set to
  anything (https://no-color.org) or ``TERM`` is ``dumb``; ``FORCE_COLOR`` (any value but
  ``0``) forces it, in a pipe too, but not over ``NO_COLOR``.
* ``paint(text, style, enabled)``: ``text`` in one of a few styles (``ok``, ``warn``,
  ``fail``, ``note``), or unchanged where colour is not enabled.

Standard library only.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

__all__ = ["colour_enabled", "paint", "width"]

_STYLES = {"ok": "32", "warn": "33", "fail": "1;31", "note": "2"}


def width(stream: TextIO | None = None) -> int | None:
    """The number of columns output to ``stream`` (stdout by default) should fit, or None
    where there is no limit."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    out = sys.stdout if stream is None else stream
    try:
        if out.isatty():
            return os.get_terminal_size(out.fileno()).columns or None
    except (AttributeError, ValueError, OSError):  # closed, or not a real file
        pass
    return None


def colour_enabled(stream: TextIO | None = None) -> bool:
    """Whether output to ``stream`` (stdout by default) may be coloured."""
    if os.environ.get("NO_COLOR", ""):
        return False
    force = os.environ.get("FORCE_COLOR", "")
    if force:
        return force != "0"
    if os.environ.get("TERM", "") == "dumb":
        return False
    out = sys.stdout if stream is None else stream
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False


def paint(text: str, style: str, enabled: bool) -> str:
    """``text`` in ``style`` (``ok``, ``warn``, ``fail`` or ``note``) where ``enabled``."""
    if not enabled or not text:
        return text
    return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"
