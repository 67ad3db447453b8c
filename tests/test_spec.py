"""The spec grammar: every form parses to the right token; malformed specs name the token."""

from __future__ import annotations

from typing import Any

import pytest

import gpuroute
from gpuroute import SpecError
from gpuroute.core.spec import Kind, normalize_pci_bus_id, parse_spec
from gpuroute.testing import topology


class TestForms:
    def test_index(self) -> None:
        (token,) = parse_spec("3").tokens
        assert (token.kind, token.index) == (Kind.INDEX, 3)

    def test_gpu_uuid_is_upper_cased_for_matching(self) -> None:
        (token,) = parse_spec("gpu-8932f937").tokens
        assert (token.kind, token.uuid, token.text) == (
            Kind.GPU_UUID,
            "GPU-8932F937",
            "gpu-8932f937",
        )

    def test_mig_uuid(self) -> None:
        (token,) = parse_spec("MIG-0c8a5d0e-1f2a-5b3c-9d4e-5f60718293a4").tokens
        assert token.kind is Kind.MIG_UUID

    def test_legacy_mig(self) -> None:
        (token,) = parse_spec("MIG-GPU-8932f937-aaaa-bbbb-cccc-0123456789ab/1/2").tokens
        assert token.kind is Kind.MIG_LEGACY
        assert token.uuid == "GPU-8932F937-AAAA-BBBB-CCCC-0123456789AB"
        assert (token.gpu_instance, token.compute_instance) == (1, 2)

    def test_mig_index(self) -> None:
        (token,) = parse_spec("0:1").tokens
        assert (token.kind, token.index, token.mig_index) == (Kind.MIG_INDEX, 0, 1)

    @pytest.mark.parametrize(
        ("text", "canonical"),
        [
            ("00000000:18:00.0", "00000000:18:00.0"),
            ("0000:3b:00.0", "00000000:3B:00.0"),
            ("3b:00.0", "00000000:3B:00.0"),
            ("0001:AB:1f.3", "00000001:AB:1F.3"),
        ],
    )
    def test_pci_bus_id_both_spellings(self, text: str, canonical: str) -> None:
        (token,) = parse_spec(text).tokens
        assert (token.kind, token.pci) == (Kind.PCI, canonical)
        assert normalize_pci_bus_id(text) == canonical

    @pytest.mark.parametrize("text", ["all", "ALL", " All "])
    def test_all(self, text: str) -> None:
        assert [t.kind for t in parse_spec(text).tokens] == [Kind.ALL]

    @pytest.mark.parametrize("spec", ["none", "NONE", "", "   ", None, []])
    def test_no_gpu(self, spec: Any) -> None:
        assert [t.kind for t in parse_spec(spec).tokens] == [Kind.NONE]

    def test_stray_whitespace(self) -> None:
        parsed = parse_spec("  3 ,\t1  ,0:1 ")
        assert [t.text for t in parsed.tokens] == ["3", "1", "0:1"]
        assert parsed.text == "3,1,0:1"

    def test_sequence_of_ints_and_strings(self) -> None:
        parsed = parse_spec([3, "GPU-ab", " 0:1 "])
        assert [t.kind for t in parsed.tokens] == [Kind.INDEX, Kind.GPU_UUID, Kind.MIG_INDEX]

    def test_single_int(self) -> None:
        assert parse_spec(5).tokens[0].index == 5


class TestMalformed:
    @pytest.mark.parametrize(
        ("spec", "token", "hint"),
        [
            ("0,,1", "", "empty"),
            ("0,1,", "", "empty"),
            ("-1", "-1", "no negative"),
            ("GPU-", "GPU-", "hex digits"),
            ("GPU-zz", "GPU-zz", "hex digits"),
            ("MIG-xyz", "MIG-xyz", "hex digits"),
            ("void", "void", "'none'"),
            ("cuda:0", "cuda:0", "NVML index"),
            ("3.5", "3.5", "NVML index"),
            ("0:1:2", "0:1:2", "NVML index"),
            ("all,0", "all", "alone"),
            ("0,none", "none", "alone"),
        ],
    )
    def test_bad_text_names_the_token(self, spec: str, token: str, hint: str) -> None:
        with pytest.raises(SpecError) as err:
            parse_spec(spec)
        assert err.value.token == token
        assert hint in str(err.value)
        if token:
            assert repr(token) in str(err.value)

    @pytest.mark.parametrize(
        "spec", [[True], [1.5], [None], ["0,1"], [""], [-2], True, 2.0, {"0": 1}]
    )
    def test_bad_values(self, spec: Any) -> None:
        with pytest.raises(SpecError):
            parse_spec(spec)

    @pytest.mark.parametrize(
        "spec",
        [b"1,2", bytearray(b"1,2"), memoryview(b"1,2"), b"", range(2), b"01"],
    )
    def test_bytes_and_other_sequences_are_refused_never_guessed(self, spec: Any) -> None:
        """b"1,2" is a sequence of the ints 49, 44, 50: it must not name GPUs 49, 44 and 50."""
        with pytest.raises(SpecError, match=type(spec).__name__) as err:
            parse_spec(spec)
        assert "list" in str(err.value)
        if isinstance(spec, bytes | bytearray | memoryview):
            assert "decode" in str(err.value)

    def test_plan_refuses_bytes(self) -> None:
        with pytest.raises(SpecError, match=r"bytes.*decode"):
            gpuroute.plan(b"1,2", topology("h100-sxm-8"))

    @pytest.mark.parametrize(
        "spec",
        [
            "1" * 5000,
            "any:" + "2" * 5000,
            "0:" + "1" * 5000,
            "1" * 5000 + ":0",
            "MIG-GPU-8932f937-aaaa-bbbb-cccc-0123456789ab/" + "1" * 5000 + "/0",
            10**5000,
            [10**5000],
            ["1" * 5000],
            "1234567890",
        ],
        ids=[
            "index",
            "any",
            "mig-gpu",
            "mig-index",
            "legacy",
            "int",
            "int-in-list",
            "str-in-list",
            "ten-digits",
        ],
    )
    def test_numbers_too_long_for_any_gpu_are_a_spec_error(self, spec: Any) -> None:
        """int() of more than 4,300 digits raised a bare ValueError; str() of such an int too."""
        with pytest.raises(SpecError, match=r"digits|is not a GPU id") as err:
            parse_spec(spec)
        assert len(str(err.value)) < 400
