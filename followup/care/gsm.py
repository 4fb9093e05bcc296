"""GSM-7: the SMS alphabet, and how many segments a text costs."""

from __future__ import annotations

# GSM 03.38 basic character set (the escape code and the control characters left out).
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs two septets (escape + character).
_EXTENSION = "^{}\\[~]|€\f"

BASIC = frozenset(_BASIC)
EXTENSION = frozenset(_EXTENSION)
SINGLE_SEGMENT = 160
MULTI_SEGMENT = 153  # each part of a concatenated text loses 7 septets to its header


def non_gsm_characters(text: str) -> list[str]:
    """Return the characters of `text` that GSM-7 cannot encode, in order, once each."""
    seen: list[str] = []
    for char in text:
        if char not in BASIC and char not in EXTENSION and char not in seen:
            seen.append(char)
    return seen


def septets(text: str) -> int:
    """Count the GSM-7 septets `text` needs (extension characters cost two)."""
    return sum(2 if char in EXTENSION else 1 for char in text)


def segment_count(text: str) -> int:
    """Count the SMS segments a GSM-7 text needs."""
    length = septets(text)
    if length <= SINGLE_SEGMENT:
        return 1
    return -(-length // MULTI_SEGMENT)
