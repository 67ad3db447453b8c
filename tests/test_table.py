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


def test_a_table_too_wide_cuts_only_the_columns_it_may_shrink() -> None:
    rows = [("0", "NVIDIA A100-SXM4-80GB", "80.0 GiB"), ("1", "RTX", "12.0 GiB")]
    table = format_table(("GPU", "NAME", "MEMORY"), rows, max_width=24, shrink=(1,))
    assert table.split("\n") == [
        "GPU  NAME       MEMORY",
        "0    NVIDIA A…  80.0 GiB",
        "1    RTX        12.0 GiB",
    ]
    assert max(len(line) for line in table.split("\n")) <= 24
    # wide enough: nothing is cut
    assert format_table(("GPU", "NAME", "MEMORY"), rows, max_width=80, shrink=(1,)) == (
        format_table(("GPU", "NAME", "MEMORY"), rows)
    )


def test_a_column_is_never_cut_below_its_header() -> None:
    table = format_table(("GPU", "NAME"), [("0", "NVIDIA H100")], max_width=5, shrink=(1,))
    assert table.split("\n") == ["GPU  NAME", "0    NVI…"]


def test_short_ids_are_unique_prefixes_of_eight_hex_digits_or_more() -> None:
    from gpuroute.core.table import short_ids

    a = "GPU-bfcd005c-00dc-5dc4-9cf5-8b0fda00d7e2"
    b = "GPU-bfcd005c-11dc-5dc4-9cf5-8b0fda00d7e2"
    c = "MIG-37f4e573-18f9-5449-8674-0e9397051008"
    legacy = "MIG-GPU-2513ead0-be2d-5696-9377-d4831ecd4e98/1/0"
    assert short_ids([a, b, c, legacy]) == {
        a: "GPU-bfcd005c-0",
        b: "GPU-bfcd005c-1",
        c: "MIG-37f4e573",
        legacy: legacy,
    }
    assert short_ids([a]) == {a: "GPU-bfcd005c"}
