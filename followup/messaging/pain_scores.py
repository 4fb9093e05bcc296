"""Pain scores in a reply: "my pain is 8", "dolor 9/10", a bare "8", and of several the
pain now ("went from a 3 to an 8" is 8; "3 now, it was 9 yesterday" is 3).

Words are read as triage.py reads them (normalised, cut into clauses); the vocabulary is
pain_score_words.py's and triage_words.py's. Pure: no database.
"""

from __future__ import annotations

import re

from followup.messaging.pain_score_words import (
    AFTER_A_SCORE,
    ARTICLES,
    CLOCK_BEFORE,
    COMPARED,
    COUNTED,
    DATE_WORDS,
    DAYPARTS,
    DENIALS,
    DOING_ENDINGS,
    DOING_WHEN,
    EARLIER,
    FROM_WORDS,
    HEDGES,
    IS_OF_THE_PAIN,
    MEDICINE,
    NOT_PLURAL,
    NOT_SCORE_BEFORE,
    NOW_WORDS,
    NUMBER_WORDS,
    PAIN_WORDS,
    PAST_WORDS,
    RANGE_WORDS,
    SCORE_FILLERS,
    SCORE_LINKS,
    TEN,
    TIME_WORDS,
    UNITS_AFTER,
)
from followup.messaging.triage import clauses, normalize


def pain_in_words(text: str) -> int | None:
    """A pain score stated in words: "my pain is 8", "dolor 9/10", "8 out of 10"; of several,
    the pain now: "went from a 3 to an 8", "was 3 yesterday, it is 8 today" and "del 3 al 8"
    are 8, "3 now, it was 9 yesterday" and "down from 8 to 3" are 3, "7 or 8" is 8.

    The first score follows a pain word or is written as one ("3/10", "3 out of 10"); a
    later number counts only when tied to the one before ("to", "now", "is", "or" ...), so
    "pain 3 now. walked 8 blocks", "pain 2, appointment 9/10" and "day 7" are not scores.
    Returns the number as written (it may be above 10: "pain 12/10"); None if no score.
    """
    words, clause_of = _read(text)
    scores: list[tuple[int, str, int]] = []  # (value, "now" / "past" / "", its daypart)
    last = 0  # where the score before was stated
    for index, word in enumerate(words):
        value = _number(word)
        if value is None or _not_a_score(words, clause_of, index, bool(scores)):
            continue
        if scores and value > 10:
            continue
        stated = _stated_as_score(words, index)
        if scores:
            # Tied to the score before, or a score of its own ("2 at rest, 8 out of 10
            # when I stand up"), unless its clause is about a date ("appointment 9/10").
            if (
                not _tied(words, clause_of, index, last)
                and not _time_after(words, clause_of, index)
                and not _restated(words, clause_of, index)
                and not (stated and not _about_a_date(words, clause_of, index))
            ):
                continue
        elif not stated:
            pains = [at for at in range(max(0, index - 4), index) if words[at] in PAIN_WORDS]
            if not pains or (
                all(_denied(words, clause_of, at) for at in pains)
                and _counts(words, clause_of, index)
            ):
                continue  # no pain word before it; "no pain, walked 8 blocks"
        when = _tense(words, clause_of, index, stated)
        if scores and RANGE_WORDS & _words_before(words, index):
            value = max(value, scores.pop()[0])  # "7 or 8": a range counts as its top
        scores.append((value, when, _daypart(words, clause_of, index)))
        last = index
    if not scores:
        match = re.search(r"\b(\d{1,2})\s*/\s*10\b", normalize(text))
        return int(match.group(1)) if match else None
    now = [value for value, when, _ in scores if when == "now"]
    if now:
        return now[-1]
    not_past = [(value, part) for value, when, part in scores if when != "past"]
    if not not_past:
        if _says_no_pain(words, clause_of):
            return None  # "no pain today, it was 8 yesterday": no score now, not the old 8
        return scores[-1][0]
    if all(part >= 0 for _, part in not_past):
        # "3 this afternoon, 9 this morning": the later time of the day is now
        latest = max(part for _, part in not_past)
        not_past = [(value, part) for value, part in not_past if part == latest]
    return not_past[-1][0]


def _read(text: str) -> tuple[list[str], list[int]]:
    """The reply's words, and the clause of each. A clock time is read as one: "8:30" (which
    ":" would cut into the clauses "8" and "30") and "8 o clock" as "8 oclock"."""
    plain = _CLOCK_RE.sub(r"\1 oclock ", normalize(text))
    plain = _SPELLED_UNITS_RE.sub(lambda m: m.group(0).replace(" ", ""), plain)
    words: list[str] = []
    clause_of: list[int] = []
    for number, clause in enumerate(clauses(plain)):
        words += clause
        clause_of += [number] * len(clause)
    return words, clause_of


def higher_numbers(text: str, *, score: int, floor: int, doing: bool = False) -> list[int]:
    """Numbers from `floor` to 10 in the reply, above the `score` read from it, that could
    be a pain score the reading passed over: not a time, a day, a date, an amount, the "10"
    of "8/10", nor said of the past ("it was 9 yesterday", "down from 8").

    A reply whose score was read low but names such a number ("pain was 4 yesterday. 8 when
    i get up") is not filed away as that low score: a nurse reads it.

    `doing`: only those said of doing something, the word beside them a gerund or "when"
    ("pain 4 at rest 8 walking", "standing 8", "9 when I stand"): the pain reaches them."""
    words, clause_of = _read(text)
    found: list[int] = []
    for index, word in enumerate(words):
        value = _number(word)
        if value is None or not score < value <= 10 or value < floor:
            continue
        if _not_a_score(words, clause_of, index) or _about_a_date(words, clause_of, index):
            continue
        if _counts(words, clause_of, index):
            continue  # "walked 8 blocks", "9 grandkids"
        if _tense(words, clause_of, index, _stated_as_score(words, index)) == "past":
            continue
        if doing and not _beside_doing(words, clause_of, index):
            continue
        found.append(value)
    return found


def _beside_doing(words: list[str], clause_of: list[int], index: int) -> bool:
    after = words[index + 1 : index + 3]
    if after == ["de", "pie"] and clause_of[index + 2] == clause_of[index]:
        return True  # "9 de pie": standing
    for near in (index - 1, index + 1):
        if 0 <= near < len(words) and clause_of[near] == clause_of[index]:
            word = words[near]
            if word in DOING_WHEN or (len(word) >= 5 and word.endswith(DOING_ENDINGS)):
                return True
    return False


def unplaced_high_number(text: str, *, floor: int) -> int | None:
    """In a reply that speaks of pain but gives no score the reading can place ("an 8 today
    for the pain", "9 with pain meds"), the highest number from `floor` to 10 that could be
    one; None if there is none, or the reply does not speak of pain."""
    words, clause_of = _read(text)
    if not PAIN_WORDS & set(words):
        return None
    found = higher_numbers(text, score=-1, floor=floor)
    # "can I drive after 7?": a time; "can I lift more than 10?" (a clause not of the pain,
    # not "it's over 8"): an amount
    times = {_number(w) for at, w in enumerate(words) if at and words[at - 1] in TIME_WORDS}
    amounts = {
        _number(words[at])
        for at in range(2, len(words))
        if words[at - 1] in COMPARED
        and words[at - 2] not in IS_OF_THE_PAIN | {"its", "is", "es"}
        and not _of_the_pain(words, clause_of, at)
    }
    return max((value for value in found if value not in times | amounts), default=None)


def _said_of_a_score(word: str) -> bool:
    """A word that may follow a pain score: "8 when I stand", "9 at night", "8 walking",
    "8 parada", "9 sometimes", "9 without"; not a thing counted ("8 blocks", "9 grandkids")."""
    return word in AFTER_A_SCORE | PAIN_WORDS or word.endswith(DOING_ENDINGS)


def _of_the_pain(words: list[str], clause_of: list[int], index: int) -> bool:
    """The clause of words[index] names the pain, and not to say there is none ("no pain can
    I lift more than 10")."""
    return any(
        word in PAIN_WORDS and not _denied(words, clause_of, at)
        for at, word in enumerate(words)
        if clause_of[at] == clause_of[index]
    )


def _denied(words: list[str], clause_of: list[int], at: int) -> bool:
    """The pain word at words[at] said not to be: "no pain", "ya no le duele", "pain free";
    not "no pain meds", "without pain meds"."""
    before = {words[i] for i in range(max(0, at - 2), at) if clause_of[i] == clause_of[at]}
    after = words[at + 1] if at + 1 < len(words) and clause_of[at + 1] == clause_of[at] else ""
    return after == "free" or (bool(DENIALS & before) and after not in MEDICINE)


def _not_a_score(words: list[str], clause_of: list[int], index: int, later: bool = True) -> bool:
    """The "10" of "8 out of 10" / "9/10", a time, a day, a date, an amount."""
    same = index >= 1 and clause_of[index - 1] == clause_of[index]
    before = words[index - 1] if same else ""  # "most of the day, 8 at night": no "day 8"
    if words[index] in TEN and before in ("of", "de", "en", "sobre", "/"):
        return True
    after = index + 1
    if _in_a_date(words, index):
        return True  # "since 9/15", "10/28": neither number is a score
    if after < len(words) and clause_of[after] == clause_of[index] and words[after] in UNITS_AFTER:
        return True  # "at 9 pm", "8 days", "10 %"
    if before in CLOCK_BEFORE:
        return True  # "slept till 9", "in bed by 9", "a las 8": a time, even at first
    if before == "at" and not later:
        return False
    if before == "day" and index >= 2 and words[index - 2] in ("the", "all", "a", "every"):
        return False  # "pain 3 during the day 8 at night": no day 8
    return before in NOT_SCORE_BEFORE


def _in_a_date(words: list[str], index: int) -> bool:
    """A number on either side of a "/" whose other side is above 10: a date ("9/15")."""
    for slash, other in ((index - 1, index - 2), (index + 1, index + 2)):
        if 0 <= other < len(words) and words[slash] == "/":
            if words[max(index, other)] in TEN:
                return False  # "12/10": a pain beyond the scale
            return max(_number(words[index]) or 0, _number(words[other]) or 0) > 10
    return False


def _stated_as_score(words: list[str], index: int) -> bool:
    following = words[index + 1 : index + 4]
    if following[:2] == ["out", "of"] or following[:1] in (["de"], ["en"], ["/"]):
        return bool(TEN & set(following[1:3]))
    return False


def _unhedged(words: list[str], index: int) -> int:
    """Where the number at words[index] stands once the hedges before it are passed over
    ("to about 8", "to like an 8", "a casi 9" read as "to 8", "a 9")."""
    at = index
    if at >= 2 and words[at - 1] in ARTICLES and words[at - 2] in HEDGES:
        at -= 1
    while at >= 1 and words[at - 1] in HEDGES:
        at -= 1
    return at


def _words_before(words: list[str], index: int) -> set[str]:
    """The word before words[index] (past any hedge), and the one before it when that is an
    article ("to an 8", "es un 8")."""
    at = _unhedged(words, index)
    found = {words[at - 1]} if at >= 1 else set()
    if at >= 2 and words[at - 1] in ARTICLES:
        found.add(words[at - 2])
    return found


def _tied(words: list[str], clause_of: list[int], index: int, last: int) -> bool:
    """A later number tied to the score before by the word in front of it, in the same
    clause, or in one that speaks of the pain or of now ("pain was 3 this morning, it's 8
    now"; not "pain is a 2. My visit is 9/10")."""
    links = SCORE_LINKS & _words_before(words, index)
    if not links:
        return False
    if links <= {"is", "es"}:
        # "is" ties only what is said of the pain ("it is 8", "pain is still 8"), not
        # "my pulse is 72", "my appointment is 9".
        at = index - 1 if words[index - 1] in ("is", "es") else index - 2
        if at < 1 or words[at - 1] not in PAIN_WORDS | NOW_WORDS | IS_OF_THE_PAIN:
            return False
    clause = [w for w, c in zip(words, clause_of, strict=True) if c == clause_of[index]]
    if clause_of[last] == clause_of[index] or (PAIN_WORDS | NOW_WORDS) & set(clause):
        return True
    # "pain was 4 yesterday, it's 8": a clause opening on "it", right after the score's,
    # speaks of the same pain.
    return (
        clause[0] in ("it", "its")
        and clause_of[last] == clause_of[index] - 1
        and not _counts(words, clause_of, index)
    )


def _counts(words: list[str], clause_of: list[int], index: int) -> bool:
    """The word after the number, in its clause, names a thing counted: a plural ("walked 8
    blocks", "it's 9 miles") or a unit ("my 8 year old"), not "9 pls", "8 bad", "9 walking"."""
    at = index + 1
    if at >= len(words) or clause_of[at] != clause_of[index]:
        return False
    word = words[at]
    if _said_of_a_score(word) or word in NOT_PLURAL:
        return False
    return word in COUNTED or (len(word) > 2 and word.endswith("s"))


def _restated(words: list[str], clause_of: list[int], index: int) -> bool:
    """A later number with its own pain word or "now" word shortly before it, in its clause
    ("ayer dolor 3, hoy dolor 8", "yesterday it hurt 3 today it hurts 8")."""
    near = [
        w
        for i, w in enumerate(words[max(0, index - 3) : index], max(0, index - 3))
        if clause_of[i] == clause_of[index]
    ]
    return bool((PAIN_WORDS | NOW_WORDS) & set(near))


def _about_a_date(words: list[str], clause_of: list[int], index: int) -> bool:
    clause = {w for w, c in zip(words, clause_of, strict=True) if c == clause_of[index]}
    return bool(clause & DATE_WORDS)


def _time_after(words: list[str], clause_of: list[int], index: int) -> bool:
    """A time of day just after the number: "8 now", "8 today", "8 this morning"."""
    after = index + 1
    if after >= len(words) or clause_of[after] != clause_of[index]:
        return False
    if words[after] in NOW_WORDS:
        return True
    if _daypart(words, clause_of, index) < 0:
        return False
    # "but 8 this morning", "yesterday 8 this morning" is a score; "got up 8 this morning",
    # "took my pills 8 this morning" the time something was done.
    at = _unhedged(words, index)
    if at < 1 or clause_of[at - 1] != clause_of[index]:
        return True
    return words[at - 1] in SCORE_LINKS | ARTICLES | IS_OF_THE_PAIN | EARLIER | DAYPARTS.keys()


def _daypart(words: list[str], clause_of: list[int], index: int) -> int:
    """The time of day said right after a score, in the day's order ("8 this morning" 0,
    "3 esta tarde" 1); -1 if none."""
    at = index + 2
    if (
        at >= len(words)
        or words[at - 1] not in ("this", "esta")
        or clause_of[at] != clause_of[index]
    ):
        return -1
    return DAYPARTS.get(words[at], -1)


def _says_no_pain(words: list[str], clause_of: list[int]) -> bool:
    """ "No pain", "sin dolor", "ya no le duele": the reply says there is none."""
    return any(
        word in PAIN_WORDS and _denied(words, clause_of, at) for at, word in enumerate(words)
    )


def _changed_to(words: list[str], index: int) -> bool:
    """The number is what the pain changed to: "to 8", "to an 8", "al 8", "de 8 a 3" (a
    Spanish "a" between two numbers; an English "a" is an article: "was a 3")."""
    at = _unhedged(words, index)
    prev = words[at - 1] if at >= 1 else ""
    before = words[at - 2] if at >= 2 else ""
    if prev in ("to", "al"):
        return True
    if prev == "a":
        return _number(before) is not None
    return prev in ARTICLES and before in ("to", "al")


def _tense(words: list[str], clause_of: list[int], index: int, stated: bool = False) -> str:
    """Whether a score is the pain now, a past one, or neither said: the nearest marker in
    its clause decides (the word after, the word before, then further out; past the "de 10"
    of a score written "8 de 10")."""
    if _changed_to(words, index):
        return "now"  # "to an 8", "al 8", "de 8 a 3": what it changed to
    for offset in (-1, -2, -3) if stated else (1, -1, 2, -2, -3):
        near = index + offset
        if 0 <= near < len(words) and clause_of[near] == clause_of[index]:
            if words[near] in NOW_WORDS:
                return "now"
            if words[near] in PAST_WORDS and not (offset > 0 and words[near] in FROM_WORDS):
                return "past"  # not "8 de pie" (standing), "9 from walking"
    return ""


def _number(word: str) -> int | None:
    # isdecimal, not isdigit: "፩" or "²" are digits int() cannot read (a reply crashed on one).
    if word.isdecimal() and len(word) <= 2:
        return int(word)
    return NUMBER_WORDS.get(word)


_CLOCK_RE = re.compile(r"(?<!\d)(\d{1,2}):(?!10\b)\d\d(?!\d)")  # "8:10" may be 8/10
_SPELLED_UNITS_RE = re.compile(r"\bo clock\b|\bpor ciento\b")
_BARE_SCORE_RE = re.compile(r"^(?:(\d{1,2})|([a-z]+))(?:\s*(?:/|out of|de)\s*(?:10|ten|diez))?$")


_DENOMINATOR_RE = re.compile(r"(?:\b(?:out of|of|de|en|sobre)\s*|/\s*)(?:10|ten|diez)\b")
_SCORE_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)?|[a-z]+")
_NEGATIVE_RE = re.compile(r"(?<!\d)(?<!\d )-\s*\d")  # "-1", not the range "8-9"


def bare_score(text: str) -> int | None:
    """The reply is only a number 0-10: "8", "8/10", "eight", "ocho", or a short answer
    around it ("it's a 9", "about 8", "9 of 10", "como un 8"; "7 or 8" is 8)."""
    plain = normalize(text).strip().rstrip(".!")
    match = _BARE_SCORE_RE.match(plain)
    if match:
        value = int(match.group(1)) if match.group(1) else NUMBER_WORDS.get(match.group(2) or "")
        return value if value is not None and 0 <= value <= 10 else None
    if _NEGATIVE_RE.search(plain):
        return None  # "-1": not a score, whatever else it is
    numbers: list[int] = []
    for word in _SCORE_TOKEN_RE.findall(_DENOMINATOR_RE.sub(" ", plain)):
        if word in SCORE_FILLERS:
            continue
        value = _number(word)
        if value is None or value > 10:
            return None  # another word, a decimal, a number that is no score: not only a score
        numbers.append(value)
    return max(numbers) if 1 <= len(numbers) <= 2 else None
