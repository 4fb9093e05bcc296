"""Triage matching: find the warning signs, closings and questions in a reply (its pain
score is pain_scores.py's).

The words live in followup.messaging.triage_words (how a term is written is told there);
this module normalises a reply the same way as the words (lower case, accents dropped,
apostrophes removed), cuts it into clauses, and matches the terms against them, with a
negation counting only within its clause. Pure: no database.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache

from followup.messaging.reply_words import (
    BEGAN,
    CLOSING_ANCHORS,
    CLOSING_FILLERS,
    NOT_ENDED_BEFORE,
    OTHER_MEASURES,
    QUESTION_STARTS,
    WORRYING_EMOJI,
    WORSE_WORDS,
)
from followup.messaging.triage_words import (
    BARE_FAHRENHEIT_BELOW,
    DEGREE_WORDS,
    FEVER_FROM_C,
    FEVER_FROM_F,
    FUZZY_MIN_LENGTH,
    GAP,
    NEGATION_BRIDGES,
    NEGATION_BRIDGES_BEFORE_I,
    NEGATION_WINDOW,
    NEGATIONS,
    NOT_FUZZY,
    NOT_NEGATING_BEFORE,
    NOT_SYMPTOMS,
    NOT_TEMPERATURE_UNITS,
    PARTICIPLE_ENDINGS,
    POST_NEGATION_WINDOW,
    POST_NEGATIONS,
    SCOPE_ENDS,
    SPANISH_HE,
    SPANISH_HINTS,
    SUBJECTS,
    TEMPERATURE_WORDS,
    URGENT_RULES,
    SymptomRule,
)

MAX_CHARS = 2000  # a reply longer than this (Twilio allows 1600) is read this far only


def normalize(text: str) -> str:
    """Lower-case, drop accents and apostrophes, and spell "cannot" as one word."""
    decomposed = unicodedata.normalize("NFKD", text[:MAX_CHARS].lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    plain = re.sub(r"['\u2019\u2018`\u00b4]", "", plain)
    plain = re.sub(r"\bcan ?not\b", "cant", plain)
    return plain


_TOKEN_RE = re.compile(r"[a-z0-9]+|[^\sa-z0-9.,;:!?¡¿()\"'\-]")
_CLAUSE_RE = re.compile(r"[.,;:!?¡¿()\n]+|\s-+\s")


def tokens(text: str) -> list[str]:
    """The words (and emoji) of already normalised text."""
    return _TOKEN_RE.findall(text)


def clauses(text: str) -> list[list[str]]:
    """Split normalised text into clauses of tokens: punctuation and SCOPE_ENDS cut them,
    but not inside a warning sign's words ("pins and needles")."""
    result: list[list[str]] = []
    for part in _CLAUSE_RE.split(text):
        current: list[str] = []
        found = tokens(part)
        for index, token in enumerate(found):
            if token in _SCOPE_ENDS and (
                tuple(found[index - 1 : index + 2]) not in _joined() or not current
            ):
                if current:
                    result.append(current)
                current = []
            else:
                current.append(token)
        if current:
            result.append(current)
    return result


Pattern = tuple[str, ...]


def compile_term(term: str) -> Pattern:
    """A term as normalised tokens ("~" kept as the gap marker, "*" kept on prefixes)."""
    parts: list[str] = []
    for word in term.split():
        if word == "~":
            parts.append("~")
            continue
        star = word.endswith("*")
        found = tokens(normalize(word.rstrip("*")))
        parts.extend(found[:-1])
        if found:
            parts.append(found[-1] + ("*" if star else ""))
    return tuple(parts)


_SCOPE_ENDS = frozenset(normalize(w) for w in SCOPE_ENDS)


@lru_cache(maxsize=1)
def _joined() -> frozenset[tuple[str, ...]]:
    """A SCOPE_ENDS word inside a warning sign's term, with the words either side of it."""
    return frozenset(
        pattern[i - 1 : i + 2]
        for _rule, _language, pattern in _compiled().rules
        for i in range(1, len(pattern) - 1)
        if pattern[i] in _SCOPE_ENDS
    )


def _token_matches(pattern: str, token: str) -> bool:
    if pattern.endswith("*"):
        return token.startswith(pattern[:-1])
    if token == pattern:
        return True
    return (
        len(pattern) >= FUZZY_MIN_LENGTH
        and abs(len(token) - len(pattern)) <= 1
        and token not in _NOT_FUZZY
        and _one_edit_apart(pattern, token)
    )


def _one_edit_apart(a: str, b: str) -> bool:
    """True when b is a with one letter changed, added, dropped or two neighbours swapped."""
    if a == b:
        return True
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    for i in range(len(long_)):
        if long_[:i] + long_[i + 1 :] == short:
            return True
    return False


def match_at(
    pattern: Pattern, words: Sequence[str], start: int, unskipped: Collection[str] = ()
) -> int | None:
    """Match `pattern` at words[start]; return the index after the match, or None. A gap
    ("~") never skips a word of `unskipped` (a warning sign's negations: "pain not
    severe", "el dolor no es muy fuerte" say it is not)."""

    def walk(p: int, w: int) -> int | None:
        if p == len(pattern):
            return w
        if pattern[p] == "~":
            for skip in range(GAP + 1):
                if skip and w + skip - 1 < len(words) and words[w + skip - 1] in unskipped:
                    return None
                end = walk(p + 1, w + skip)
                if end is not None:
                    return end
            return None
        if w < len(words) and _token_matches(pattern[p], words[w]):
            return walk(p + 1, w + 1)
        return None

    return walk(0, start)


@dataclass(frozen=True)
class Found:
    """A warning sign found in a reply."""

    rule: SymptomRule
    language: str
    negated: bool


@dataclass(frozen=True)
class _Compiled:
    rules: tuple[tuple[SymptomRule, str, Pattern], ...]
    not_symptoms: tuple[Pattern, ...]
    negations: frozenset[str]
    bridges: frozenset[str]
    post_negations: tuple[Pattern, ...]


_NOT_FUZZY = frozenset(normalize(w) for w in NOT_FUZZY)


@lru_cache(maxsize=1)
def _compiled() -> _Compiled:
    rules = tuple(
        (rule, language, compile_term(term))
        for rule in URGENT_RULES
        for language, terms in rule.terms.items()
        for term in terms
    )
    return _Compiled(
        rules=rules,
        not_symptoms=tuple(compile_term(t) for terms in NOT_SYMPTOMS.values() for t in terms),
        negations=frozenset(normalize(w) for w in NEGATIONS),
        bridges=frozenset(normalize(w) for w in NEGATION_BRIDGES),
        post_negations=tuple(compile_term(t) for t in POST_NEGATIONS),
    )


def _mask_not_symptoms(words: list[str], compiled: _Compiled) -> list[str]:
    """Replace the words of look-alike phrases ("blood thinner") with a blank."""
    masked = list(words)
    for pattern in compiled.not_symptoms:
        for start in range(len(masked)):
            end = match_at(pattern, masked, start)
            if end is not None:
                masked[start:end] = ["_"] * (end - start)
    return masked


def find_warning_signs(text: str) -> list[Found]:
    """Every warning sign a reply mentions, each with whether it is negated."""
    compiled = _compiled()
    found: list[Found] = []
    for clause in clauses(normalize(text)):
        words = _mask_not_symptoms(clause, compiled)
        matches: list[tuple[SymptomRule, str, Pattern, int, int]] = []
        for rule, language, pattern in compiled.rules:
            # A gap never skips a negation ("pain not severe"), but in a term that is a
            # negation itself ("no siento ~ pierna*") one stresses it ("ni las piernas").
            unskipped = (
                frozenset()
                if pattern[0].rstrip("*") in compiled.negations or pattern[0] in _SELF_NEGATING
                else compiled.negations
            )
            for start in range(len(words)):
                end = match_at(pattern, words, start, unskipped)
                if end is not None:
                    matches.append((rule, language, pattern, start, end))
        # Other warning words may sit between a negation and the one it negates ("no
        # redness or swelling").
        symptom_words = {i for *_, start, end in matches for i in range(start, end)}
        for rule, language, pattern, start, end in matches:
            negated = _negated_before(
                pattern, words, start, symptom_words, compiled, rule.key in LESSENED
            ) or _negated_after(words[end:], compiled)
            found.append(Found(rule, language, negated))
    fever = _fever_in_numbers(text)
    if fever is not None:
        found.append(fever)
    # One finding per warning sign: negated only if every mention of it is.
    merged: dict[str, Found] = {}
    for item in found:
        seen = merged.get(item.rule.key)
        if seen is None or (seen.negated and not item.negated):
            merged[item.rule.key] = item
    return list(merged.values())


_NUMBER = (
    r"(\d{2,3}(?:[.,]\d{1,2})?)(?![\d.,]*\d)(?!\s*(?:"
    + "|".join(re.escape(normalize(w)) for w in NOT_TEMPERATURE_UNITS)
    + r")\b)"
)
_AFTER_WORD_RE = re.compile(
    r"\b(?:"
    + "|".join(re.escape(normalize(w)) for w in TEMPERATURE_WORDS)
    + r")\b\D{0,15}?(?<!\d)"
    + _NUMBER
)
_BEFORE_UNIT_RE = re.compile(
    r"(?<![\d.,])"
    + _NUMBER
    + r"\s*(?:°|(?:"
    + "|".join(re.escape(normalize(w)) for w in DEGREE_WORDS)
    + r")\b)"
)


_BARE_FAHRENHEIT_RE = re.compile(r"(?<![\d.,])(1\d\d[.,]\d)(?![\d.,]*\d)")
# Any later reading in a reply that speaks of temperature ("temp 97 this morning 102
# tonight"): Fahrenheit, or Celsius with its decimal (a whole Celsius-sized number is too
# often an age or a count), never a blood pressure ("104/70").
_TEMPERATURE_WORD_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(normalize(w)) for w in TEMPERATURE_WORDS) + r")\b"
)
_LATER_READING_RE = re.compile(r"(?<![\d.,/])" + _NUMBER.replace("(?!\\s*(?:", "(?!\\s*(?:/|", 1))
_OTHER_MEASURE_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(normalize(w)) for w in OTHER_MEASURES) + r")\b"
)


def _named_otherwise(plain: str, start: int) -> bool:
    """The number at plain[start] is named by another measure since the last number: "temp
    98 pulse 104"."""
    return bool(_OTHER_MEASURE_RE.search(re.split(r"\d", plain[:start])[-1]))


def _fever_in_numbers(text: str) -> Found | None:
    """A fever stated as a temperature: "temp 101", "38,5 grados", "100.8F", "101.5"."""
    plain = normalize(text)
    regexes = [_AFTER_WORD_RE, _BEFORE_UNIT_RE, _BARE_FAHRENHEIT_RE]
    if _TEMPERATURE_WORD_RE.search(plain):
        regexes.append(_LATER_READING_RE)
    for regex in regexes:
        for match in regex.finditer(plain):
            value = float(match.group(1).replace(",", "."))
            if regex is _BARE_FAHRENHEIT_RE and value >= BARE_FAHRENHEIT_BELOW:
                continue
            if regex is _LATER_READING_RE and _named_otherwise(plain, match.start()):
                continue
            if regex is _LATER_READING_RE and value < FEVER_FROM_F:
                if not ("." in match.group(1) or "," in match.group(1)):
                    continue  # a Celsius reading only with its decimal ("38.5")
            if FEVER_FROM_F <= value < 110 or FEVER_FROM_C <= value < 44:
                rule = next(r for r in URGENT_RULES if r.key == "fever")
                return Found(rule, "es" if "temperatura" in plain else "en", negated=False)
    return None


_NOT_NEGATING_BEFORE = {
    normalize(word): frozenset(normalize(w) for w in after)
    for word, after in NOT_NEGATING_BEFORE.items()
}
_SELF_NEGATING = frozenset({"cant", "couldnt", "unable", "lost", "losing"})
LESSENED = frozenset({"severe-pain"})  # the signs of a degree "less" lowers
LESSENING = frozenset({"less", "menos"})


def _negated_before(
    pattern: Pattern,
    words: Sequence[str],
    start: int,
    symptom_words: set[int],
    c: _Compiled,
    lessened: bool = False,
) -> bool:
    """A negation shortly before words[start], with only words that carry it between."""
    if pattern[0].rstrip("*") in c.negations or pattern[0] in _SELF_NEGATING:
        return False  # "no siento las piernas", "can't feel my legs": a negation already
    for index in range(start - 1, max(0, start - NEGATION_WINDOW) - 1, -1):
        word = words[index]
        if word in LESSENING:
            # "less severe", "menos intenso": a degree lowered, of the word right after
            # only, and not "more or less" / "más o menos" (somewhat). Of a sign that is
            # there or not, it says it is there: "less bleeding", "menos fiebre".
            return (
                lessened and index == start - 1 and words[index - 1 : index] not in (["or"], ["o"])
            )
        if word in c.negations:
            # "no my chest hurts": an answer, then what is wrong; "nada más": only
            return words[index + 1] not in _NOT_NEGATING_BEFORE.get(word, ())
        after_think = index > 0 and words[index - 1] in NEGATION_BRIDGES_BEFORE_I
        carries = (
            (word in SUBJECTS and after_think)
            or (
                word in c.bridges
                and (word != SPANISH_HE or words[index + 1].endswith(PARTICIPLE_ENDINGS))
            )
            or index in symptom_words
        )
        if not carries:
            return False
    return False


def _negated_after(after: Sequence[str], c: _Compiled) -> bool:
    """Negated by what follows ("the bleeding stopped"), unless that is negated itself or
    says which way the sign went ("the numbness is going down my leg")."""
    for index in range(min(len(after), POST_NEGATION_WINDOW)):
        if any(w in c.negations for w in after[:index]):
            return False
        for pattern in c.post_negations:
            end = match_at(pattern, after, index)
            if end is not None:
                if tuple(after[index : end + 1]) in BEGAN:
                    return False  # "fever broke out": it began
                return not _NOT_ENDED_BEFORE & set(after[end : end + 3])
    return False


_NOT_ENDED_BEFORE = frozenset(normalize(w) for w in NOT_ENDED_BEFORE)


def is_closing(text: str) -> bool:
    """Thanks, ok, gracias, or only emoji: nothing asked and nothing to read."""
    if "?" in text or "¿" in text:
        return False
    words = tokens(normalize(text))
    letters = [w for w in words if w.isalnum()]
    symbols = [w for w in words if not w.isalnum()]
    if not letters:
        return (
            bool(symbols)
            and not any(char in WORRYING_EMOJI for char in text)
            and any(unicodedata.category(char) == "So" for char in text)
        )
    if any(char in WORRYING_EMOJI for char in text):
        return False
    allowed = _CLOSING_ANCHORS | _CLOSING_FILLERS
    return all(w in allowed for w in letters) and any(w in _CLOSING_ANCHORS for w in letters)


_CLOSING_ANCHORS = frozenset(normalize(w) for w in CLOSING_ANCHORS)
_CLOSING_FILLERS = frozenset(normalize(w) for w in CLOSING_FILLERS)


def is_question(text: str) -> bool:
    """A question mark, or a first word that starts a question ("can I shower")."""
    if "?" in text or "¿" in text:
        return True
    words = tokens(normalize(text))
    return bool(words) and words[0] in QUESTION_STARTS


def says_worse(text: str) -> bool:
    """The reply says something got worse ("worse", "peor", "empeoró")."""
    return any(w in WORSE_WORDS or w.startswith("empeor") for w in tokens(normalize(text)))


def spanish_words(text: str) -> bool:
    """The reply is in Spanish, as far as its triage words tell (to answer in Spanish)."""
    words = [w for clause in clauses(normalize(text)) for w in clause]
    if any(w in SPANISH_HINTS for w in words):
        return True
    return any(
        language == "es" and any(match_at(pattern, words, i) is not None for i in range(len(words)))
        for _rule, language, pattern in _compiled().rules
    )
