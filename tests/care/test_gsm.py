"""The GSM-7 counts (run in C) against their definition, a character at a time (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from followup.care import gsm

# Both tables, characters beyond them (Spanish accents, curly quotes, an emoji) and the
# extension characters that cost two septets, mixed at random.
CHARACTERS = st.sampled_from(sorted(gsm.BASIC | gsm.EXTENSION) + list("áíóúÁ“”’😀\t\u00a0"))
TEXTS = st.lists(CHARACTERS, max_size=500).map("".join) | st.text(max_size=300)


def reference_non_gsm(text: str) -> list[str]:
    seen: list[str] = []
    for char in text:
        if char not in gsm.BASIC and char not in gsm.EXTENSION and char not in seen:
            seen.append(char)
    return seen


def reference_segments(text: str) -> int:
    if all(char in gsm.BASIC or char in gsm.EXTENSION for char in text):
        length = sum(2 if char in gsm.EXTENSION else 1 for char in text)
        single, multi = gsm.SINGLE_SEGMENT, gsm.MULTI_SEGMENT
    else:
        length = len(text.encode("utf-16-le")) // 2
        single, multi = gsm.UCS2_SINGLE_SEGMENT, gsm.UCS2_MULTI_SEGMENT
    return 1 if length <= single else -(-length // multi)


@given(TEXTS)
def test_counts_match_their_definition_character_by_character(text: str) -> None:
    assert gsm.non_gsm_characters(text) == reference_non_gsm(text)
    assert gsm.is_gsm(text) == (not reference_non_gsm(text))
    assert gsm.segment_count(text) == reference_segments(text)
    if gsm.is_gsm(text):
        assert gsm.septets(text) == sum(2 if c in gsm.EXTENSION else 1 for c in text)
