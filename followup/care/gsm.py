"""GSM-7 and UCS-2: the SMS encodings, and how many segments a text costs.

A text made only of GSM-7 characters goes as GSM-7 (160 characters, or 153 a part);
one character outside it (á, í, ó, ú, a curly quote) sends the whole text as UCS-2
(70 UTF-16 units, or 67 a part).
"""

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
GSM = BASIC | EXTENSION
SINGLE_SEGMENT = 160
MULTI_SEGMENT = 153  # each part of a concatenated text loses 7 septets to its header
UCS2_SINGLE_SEGMENT = 70
UCS2_MULTI_SEGMENT = 67  # UTF-16 units a part, after the header

# Every text the dispatcher hands over is counted (the console's segments, the send log's):
# these run in C (set and str methods), not a Python step per character, which cost the
# console transport about a tenth of the dispatcher's time per text.


def non_gsm_characters(text: str) -> list[str]:
    """Return the characters of `text` that GSM-7 cannot encode, in order, once each."""
    if GSM.issuperset(text):
        return []
    return list(dict.fromkeys(char for char in text if char not in GSM))


def septets(text: str) -> int:
    """Count the GSM-7 septets `text` needs (extension characters cost two)."""
    return len(text) + sum(text.count(char) for char in _EXTENSION)


def is_gsm(text: str) -> bool:
    """Tell whether `text` can go as GSM-7."""
    return GSM.issuperset(text)


def ucs2_units(text: str) -> int:
    """Count the UTF-16 code units a UCS-2 text needs (characters beyond the BMP cost two)."""
    return len(text.encode("utf-16-le")) // 2


def encoding(text: str) -> str:
    """The encoding a text goes in: "GSM-7" or "UCS-2"."""
    return "GSM-7" if is_gsm(text) else "UCS-2"


def segment_count(text: str) -> int:
    """Count the SMS segments a text needs, in the encoding it goes in."""
    if is_gsm(text):
        length, single, multi = septets(text), SINGLE_SEGMENT, MULTI_SEGMENT
    else:
        length, single, multi = ucs2_units(text), UCS2_SINGLE_SEGMENT, UCS2_MULTI_SEGMENT
    if length <= single:
        return 1
    return -(-length // multi)
