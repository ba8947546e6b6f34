"""The file name rule, example-based and as properties (hypothesis)."""

from __future__ import annotations

import contextlib
import os
import unicodedata
from pathlib import PurePosixPath

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from downloaderApp.errors import InvalidFilename
from downloaderApp.safety import MAX_FILENAME_BYTES, validate_filename

BASE = PurePosixPath("/var/lib/downloader/files")

# Characters that matter for the rule, mixed with arbitrary text.
_TRICKY = st.sampled_from(
    ["/", "\\", ".", "..", "\x00", "\n", "\r", "\t", "\x7f", "\x85", "\u202e", "\u200b",
     "\ufeff", "\ud800", " ", "~", "$", "*", "é", "\U0001f600", "-", "a", "Z", "0"]
)  # fmt: skip
NAMES = st.one_of(
    st.text(max_size=300),
    st.lists(_TRICKY | st.text(max_size=5), max_size=40).map("".join),
    st.text(alphabet="é€𝄞a", min_size=60, max_size=260),  # around the 255-byte limit
)


def _blank(char: str) -> bool:
    return unicodedata.category(char) == "Zs" or char in "\u115f\u1160\u3164\uffa0\u2800"


def breaks_a_rule(name: str) -> bool:
    """The rules of the README, restated apart from the code: whether NAME breaks one."""
    if not name or any(
        unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")
        for ch in name
    ):
        return True
    nfc = unicodedata.normalize("NFC", name)
    nfkc = unicodedata.normalize("NFKC", nfc)
    return (
        len(nfc.encode("utf-8")) > MAX_FILENAME_BYTES
        or _blank(nfc[0])
        or _blank(nfc[-1])
        or any(sep in form for form in (nfc, nfkc) for sep in ("/", "\\", ".."))
        or nfkc.startswith(".")
        or any(ch in nfc for ch in "\u2215\u2044\u29f8\u29f9\u2216\u2571\u2572")
    )


@given(NAMES)
@settings(max_examples=400, deadline=None)
@example("..")
@example(".")
@example("a/../../etc/passwd")
@example("x" * 255)
@example("é" * 127 + "x")
def test_accepted_names_stay_inside_the_directory(name: str) -> None:
    try:
        accepted = validate_filename(name)
    except InvalidFilename as exc:
        assert str(exc).startswith("filename"), exc
        assert breaks_a_rule(name), f"{name!r} follows every rule but was refused: {exc}"
        return
    assert accepted == unicodedata.normalize("NFC", name)
    name = accepted
    path = BASE / name
    assert path.parent == BASE
    assert os.path.normpath(str(path)) == str(path)  # nothing for the OS to collapse
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..") and not name.startswith(".") and ".." not in name
    assert not any(unicodedata.category(ch)[0] == "C" for ch in name)
    assert not any(unicodedata.category(ch) in ("Zl", "Zp") for ch in name)
    assert 0 < len(name.encode("utf-8")) <= MAX_FILENAME_BYTES


@given(NAMES)
@settings(max_examples=400, deadline=None)
def test_rejection_is_always_invalid_filename(name: str) -> None:
    """The rule never fails with anything but InvalidFilename (no UnicodeError etc.)."""
    with contextlib.suppress(InvalidFilename):
        validate_filename(name)


@given(
    st.text(min_size=1, max_size=3),
    st.sampled_from(["/", "\\", "\x00", "\n", "\x1b", "..", "\u2028", "\u202e"]),
    st.text(max_size=3),
)
def test_names_with_a_forbidden_part_are_rejected(prefix: str, bad: str, suffix: str) -> None:
    with pytest.raises(InvalidFilename):
        validate_filename(prefix + bad + suffix)


@given(
    st.text(
        alphabet=st.characters(
            categories=["L", "N"], exclude_characters="\u115f\u1160\u3164\uffa0"
        ),
        min_size=1,
        max_size=60,
    )
)
def test_plain_names_are_accepted(name: str) -> None:
    assert validate_filename(name + ".txt") == unicodedata.normalize("NFC", name + ".txt")


@pytest.mark.parametrize("value", [None, 3, b"name", ["a"]])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(InvalidFilename, match="must be a string"):
        validate_filename(value)


def test_byte_limit_counts_utf8_bytes() -> None:
    assert validate_filename("é" * 127 + "x")  # 255 bytes
    with pytest.raises(InvalidFilename, match="256 bytes"):
        validate_filename("é" * 128)


def test_composed_and_decomposed_names_are_one_name() -> None:
    composed, decomposed = "caf\u00e9.txt", "cafe\u0301.txt"
    assert validate_filename(decomposed) == validate_filename(composed) == composed


@pytest.mark.parametrize("name", [" ", "\u3000", "\u115f", "\u3164", "\u2800", "\u00a0\u3000"])
def test_names_made_only_of_blanks_are_refused(name: str) -> None:
    with pytest.raises(InvalidFilename, match="made only of blanks"):
        validate_filename(name)


@pytest.mark.parametrize("name", ["report.pdf ", " report.pdf", "report\u3000", "\u3164report"])
def test_names_that_begin_or_end_with_a_blank_are_refused(name: str) -> None:
    with pytest.raises(InvalidFilename, match="begins or ends with a blank"):
        validate_filename(name)


@pytest.mark.parametrize(
    "name",
    [
        "\uff0e\uff0e",
        "\u2215etc\u2215passwd",
        "a\uff0fb",
        "a\uff3cb",
        "\uff0ehidden",
        "a\u2044b",
        "x\u2025y",
    ],
)
def test_look_alikes_of_separators_and_dots_are_refused(name: str) -> None:
    with pytest.raises(InvalidFilename, match="look-alike of a path separator or of a dot"):
        validate_filename(name)


def test_a_space_inside_a_name_is_kept() -> None:
    assert validate_filename("my report.pdf") == "my report.pdf"
