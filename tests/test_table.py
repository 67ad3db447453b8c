"""The one table renderer behind `gpuroute ls`, `gpuroute leases`, `explain()` and summaries."""

from __future__ import annotations

import pytest

from gpuroute.core.table import format_table


def test_columns_are_as_wide_as_their_widest_cell_and_trailing_blanks_are_cut() -> None:
    table = format_table(("GPU", "NAME", "STATE"), [("0", "H100", ""), ("10", "A100-SXM4", "idle")])
    assert table == "GPU  NAME       STATE\n0    H100\n10   A100-SXM4  idle"


def test_right_aligned_columns_a_rule_and_an_indent() -> None:
    table = format_table(
        ("config", "ok", "tok/s"),
        [("a", "1", "9.5"), ("long name", "12", "1234.0")],
        align="<>>",
        rule=True,
        indent="  ",
    )
    assert table.split("\n") == [
        "  config     ok   tok/s",
        "  ---------  --  ------",
        "  a           1     9.5",
        "  long name  12  1234.0",
    ]


def test_align_reaches_only_the_columns_it_names() -> None:
    assert format_table(("n", "name"), [("7", "x")], align=">") == "n  name\n7  x"


def test_headers_alone() -> None:
    assert format_table(("a", "b"), []) == "a  b"


@pytest.mark.parametrize("align", ["<^", "<<<"])
def test_a_bad_align_is_refused(align: str) -> None:
    with pytest.raises(ValueError, match="one '<' or '>' per column"):
        format_table(("a", "b"), [], align=align)


def test_a_row_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="has 1 cells; the headers name 2"):
        format_table(("a", "b"), [("x",)])
