"""Triage rules as data: which words in a reply mean a warning sign, in English and Spanish.

Everything a reply is matched against lives in this module, one table per purpose: the
warning signs (URGENT_RULES, each with its words per language), the words that negate
them, the phrases that only look like them ("blood thinner" is not bleeding), and the
words of a closing reply ("thanks", "gracias"). Words are written as a patient types
them, accents and all; they are normalised (lower case, accents dropped, apostrophes
removed) the same way the reply is, so "me caí", "me cai" and "ME CAI" are one.

A term is a phrase of tokens: a token ending in "*" matches any word starting with it
("numb*": numb, numbness, numbed), and "~" lets up to two other words sit between
("can't feel ~ leg*": I can't feel my legs). Longer single words also match with one
letter wrong, swapped, missing or extra ("bleding", "sweling"), unless the word is a
common one that happens to be that close ("breeding", "fewer"). Pure: no database.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

MAX_CHARS = 2000  # a reply longer than this (Twilio allows 1600) is read this far only
GAP = 2  # words "~" may skip


@dataclass(frozen=True)
class SymptomRule:
    """One warning sign: its key, how a nurse reads it, and its words per language."""

    key: str
    reason: str
    terms: Mapping[str, Sequence[str]]


# --- warning signs: each makes a reply urgent unless negated ("no fever") -----------------

URGENT_RULES: tuple[SymptomRule, ...] = (
    SymptomRule(
        "legs",
        "cannot feel or move the legs",
        {
            "en": (
                "can't feel ~ leg*", "can't feel ~ feet", "can't feel ~ foot",
                "can't move ~ leg*", "can't move ~ feet", "can't move ~ foot",
                "unable to feel ~ leg*", "unable to move ~ leg*", "no feeling in ~ leg*",
                "lost feeling", "losing feeling", "paralyz*", "paralys*",
            ),
            "es": (
                "no siento ~ pierna*", "no siento ~ pies", "no siento ~ pie",
                "no puedo mover ~ pierna*", "no puedo mover ~ pies", "no me puedo mover",
                "no puedo mover", "perdí ~ sensibilidad", "paraliz*",
            ),
        },
    ),
    SymptomRule(
        "numbness",
        "new numbness or tingling",
        {
            "en": (
                "numb", "numbness", "numbnes", "numbed", "numbish", "numm", "nummness",
                "numness", "nunb", "tingl*", "pins and needles",
            ),
            "es": (
                "entumec*", "entumes*", "entumid*", "adormec*", "adormes*", "hormigue*",
                "dormid* ~ pierna*", "pierna* ~ dormid*",
            ),
        },
    ),
    SymptomRule(
        "weakness",
        "new weakness",
        {
            "en": (
                "weak*", "weeknes*", "legs ~ week", "legs ~ gave out", "leg* ~ giving out",
                "legs ~ give way", "can't walk", "unable to walk", "can't stand up",
            ),
            "es": (
                "débil*", "debilidad", "sin fuerza*", "no tengo fuerza*", "no puedo caminar",
                "no puedo andar", "no puedo pararme", "no me puedo parar",
            ),
        },
    ),
    SymptomRule(
        "continence",
        "cannot control the bladder or bowels",
        {
            "en": (
                "can't pee", "can't urinate", "incontinen*", "wet myself", "lost control ~ bladder",
                "can't control ~ bladder", "can't control ~ bowel*",
            ),
            "es": ("no puedo orinar", "no controlo ~ orina", "me orino", "incontinencia"),
        },
    ),
    SymptomRule(
        "bleeding",
        "bleeding",
        {
            "en": ("bleed*", "bled", "bleading", "blood", "bloody"),
            "es": ("sangr*",),
        },
    ),
    SymptomRule(
        "fever",
        "fever or chills",
        {
            "en": (
                "fever*", "feaver*", "fevor", "fevr", "fver", "feverish", "a temperature",
                "high temperature", "temperature of", "temp of", "temp is", "chills",
                "chils", "shiver*", "\N{FACE WITH THERMOMETER}",
            ),
            "es": (
                "fiebre*", "fiebr", "calentura", "temperatura alta", "tengo temperatura",
                "escalofrío*", "escalosfrío*", "calofrío*", "calosfrío*", "tirit*",
            ),
        },
    ),
    SymptomRule(
        "redness",
        "redness at the needle site",
        {
            "en": ("red", "redness", "rednes", "reddish", "redish", "reddened"),
            "es": ("rojo", "roja", "rojiz*", "rojez", "enrojec*", "colorad*"),
        },
    ),
    SymptomRule(
        "swelling",
        "swelling at the needle site",
        {
            "en": ("swell*", "swolen", "swollen", "swole", "sweling", "puffy", "lump"),
            "es": ("hinch*", "inchad*", "inchaz*", "inflamad*", "inflamación", "bulto"),
        },
    ),
    SymptomRule(
        "drainage",
        "pus or drainage at the needle site",
        {
            "en": ("pus", "puss", "drain", "drainage", "draining", "ooz*", "leak*", "weeping"),
            "es": ("pus", "supur*", "drena*", "secreción", "sale líquido", "líquido ~ herida"),
        },
    ),
    SymptomRule(
        "chest",
        "chest pain",
        {
            "en": (
                "chest pain*", "chest ~ hurt*", "chest ~ tight*", "pain ~ chest",
                "chest ~ pressure", "heart attack",
            ),
            "es": (
                "dolor ~ pecho", "pecho ~ duele", "duele ~ pecho", "opresión ~ pecho",
                "presión ~ pecho", "infarto",
            ),
        },
    ),
    SymptomRule(
        "breathing",
        "trouble breathing",
        {
            "en": (
                "can't breath*", "can't catch ~ breath", "hard to breath*", "trouble breath*",
                "difficulty breath*", "short of breath", "shortness of breath",
                "out of breath", "struggling to breath*", "breathless",
            ),
            "es": (
                "no puedo respirar", "me falta ~ aire", "falta de aire", "dificultad para respirar",
                "me cuesta respirar", "me ahogo", "ahogo",
            ),
        },
    ),
    SymptomRule(
        "fall",
        "a fall",
        {
            "en": ("fell", "fallen", "a fall", "i fall", "tripped", "slipped"),
            "es": ("me caí", "caída", "me he caído", "caído", "caí", "me resbalé"),
        },
    ),
    SymptomRule(
        "severe-pain",
        "severe pain",
        {
            "en": (
                "severe pain", "pain ~ severe", "unbearable", "excruciating", "worst pain",
                "terrible pain", "pain ~ terrible", "agony",
            ),
            "es": (
                "dolor ~ insoportable", "insoportable", "dolor ~ fuerte", "mucho dolor",
                "dolor terrible", "dolor horrible",
            ),
        },
    ),
    SymptomRule(
        "bleeding",
        "bleeding",
        {"en": ("\N{DROP OF BLOOD}",), "es": ()},
    ),
)  # fmt: skip

# Phrases that contain a warning word but are not a warning sign: taken out first.
NOT_SYMPTOMS: Mapping[str, Sequence[str]] = {
    "en": (
        "blood thinner*", "blood pressure", "blood sugar", "blood test*", "blood work",
        "fell asleep", "fall asleep", "falling asleep", "red cross", "weak tea",
        "room temperature", "drain cleaner", "blood thin*",
    ),
    "es": (
        "adelgaz* ~ sangre", "diluy* ~ sangre", "diluir ~ sangre", "aguar ~ sangre",
        "presión ~ sangre", "azúcar ~ sangre", "análisis de sangre", "examen de sangre",
        "me caí dormid*", "vino rojo", "cruz roja",
    ),
}  # fmt: skip

# A warning word is negated by one of these up to NEGATION_WINDOW words before it in the
# same clause ("no fever", "no tengo fiebre"), or by one of POST_NEGATIONS just after it
# ("the bleeding stopped"). A clause ends at punctuation and at SCOPE_ENDS: "no fever but
# my leg is numb" negates the fever only.
NEGATIONS = frozenset(
    {
        "no", "not", "don't", "didn't", "doesn't", "isn't", "aren't", "wasn't", "weren't",
        "haven't", "hasn't", "hadn't", "never", "without", "denies", "deny", "nor",
        "neither", "none", "zero", "nope", "sin", "ni", "nunca", "tampoco", "ningún",
        "ninguna", "ninguno", "nada", "jamás",
    }
)  # fmt: skip
POST_NEGATIONS: Sequence[str] = (
    "gone", "stopped", "went away", "resolved", "free", "se fue", "se quitó", "ya pasó",
    "pasó", "desapareció", "paró", "se me quitó",
)  # fmt: skip
NEGATION_WINDOW = 5
POST_NEGATION_WINDOW = 3
SCOPE_ENDS = frozenset(
    {
        "but", "however", "although", "though", "yet", "except", "and", "also", "plus",
        "pero", "aunque", "sino", "y", "e", "también", "excepto",
    }
)  # fmt: skip

# Words close to a warning word that are ordinary words, never fuzzy-matched to one.
NOT_FUZZY = frozenset(
    {
        "breeding", "feeding", "needing", "reading", "heading", "sending", "weeding",
        "fewer", "never", "seven", "leaving", "smelling", "spelling", "selling", "telling",
        "dwelling", "feedings", "weekend", "weekends", "meekness", "sweeping", "sleeping",
        "speeding", "bleaching", "sangria", "tripled", "slipper", "slippers", "shipped",
        "flipped", "clipped", "skipped", "stripped", "whipped", "chipped", "dripped",
        "trapped", "tapped", "number", "numbers", "numbered", "dormido", "dormida",
    }
)  # fmt: skip
FUZZY_MIN_LENGTH = 6  # only words at least this long match with one letter wrong

# --- closing replies: recorded, not queued, not answered ----------------------------------

# A reply is closing when every word is one of these and at least one is an ANCHOR, or when
# it is only emoji (none of them WORRYING_EMOJI), and it asks nothing.
CLOSING_ANCHORS = frozenset(
    {
        "thanks", "thank", "thx", "ty", "tks", "thanx", "thnx", "thankyou", "ok", "okay",
        "okey", "k", "kk", "great", "good", "fine", "perfect", "cool", "noted", "understood",
        "appreciate", "appreciated", "alright", "bye", "awesome", "wonderful", "gracias",
        "grasias", "gracia", "vale", "bien", "perfecto", "perfecta", "entendido", "listo",
        "claro", "excelente", "genial", "sounds", "got",
    }
)  # fmt: skip
CLOSING_FILLERS = frozenset(
    {
        "you", "u", "very", "much", "so", "a", "lot", "it", "will", "do", "sure", "all",
        "right", "have", "nice", "day", "and", "for", "the", "info", "information",
        "message", "reminder", "again", "too", "dear", "muchas", "mil", "muy", "amable",
        "de", "acuerdo", "por", "la", "el", "informacion", "mensaje", "todo", "y", "que",
        "tenga", "buen", "dia", "buenas", "noches", "tardes", "si", "yes", "thumbs", "up",
        "doctor", "doctora", "dr", "nurse", "enfermera", "team", "equipo", "everyone",
    }
)  # fmt: skip
WORRYING_EMOJI = frozenset(
    "\N{CRYING FACE}\N{LOUDLY CRYING FACE}\N{DISAPPOINTED FACE}\N{WHITE FROWNING FACE}"
    "\N{SLIGHTLY FROWNING FACE}\N{PERSEVERING FACE}\N{CONFOUNDED FACE}\N{TIRED FACE}"
    "\N{WEARY FACE}\N{NAUSEATED FACE}\N{FACE WITH OPEN MOUTH VOMITING}\N{FACE SCREAMING IN FEAR}"
    "\N{ANGUISHED FACE}\N{FEARFUL FACE}\N{FACE WITH HEAD-BANDAGE}\N{AMBULANCE}\N{SQUARED SOS}"
    "\N{WARNING SIGN}\N{BROKEN HEART}"
)

# Words that start a question even without a question mark.
QUESTION_STARTS = frozenset(
    {
        "can", "could", "should", "is", "are", "do", "does", "when", "what", "how", "why",
        "where", "who", "will", "may", "am", "puedo", "debo", "cuando", "que", "como",
        "donde", "hay", "cual", "quien",
    }
)  # fmt: skip
WORSE_WORDS = frozenset({"worse", "worst", "peor", "empeor", "empeora", "empeorado"})

# Numbers a patient may spell out as a pain score.
NUMBER_WORDS: Mapping[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "cero": 0, "uno": 1,
    "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8,
    "nueve": 9, "diez": 10,
}  # fmt: skip
PAIN_WORDS = frozenset({"pain", "dolor", "duele", "hurts", "hurt", "painful"})
SCORE_UNITS_AFTER = frozenset(
    {"am", "pm", "days", "day", "dias", "dia", "hours", "hour", "horas", "hora", "h",
     "min", "mins", "minutes", "minutos", "weeks", "semanas", "years", "anos", "mg", "pills",
     "pastillas", "times", "veces", "o'clock"}
)  # fmt: skip


# --- matching ---------------------------------------------------------------------------


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
    """Split normalised text into clauses of tokens: punctuation and SCOPE_ENDS cut them."""
    result: list[list[str]] = []
    for part in _CLAUSE_RE.split(text):
        current: list[str] = []
        for token in tokens(part):
            if token in _SCOPE_ENDS:
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


def match_at(pattern: Pattern, words: Sequence[str], start: int) -> int | None:
    """Match `pattern` at words[start]; return the index after the match, or None."""

    def walk(p: int, w: int) -> int | None:
        if p == len(pattern):
            return w
        if pattern[p] == "~":
            for skip in range(GAP + 1):
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
        for rule, language, pattern in compiled.rules:
            for start in range(len(words)):
                end = match_at(pattern, words, start)
                if end is None:
                    continue
                before = words[max(0, start - NEGATION_WINDOW) : start]
                after = words[end : end + POST_NEGATION_WINDOW + 1]
                negated = any(w in compiled.negations for w in before) or any(
                    match_at(p, after, i) is not None
                    for p in compiled.post_negations
                    for i in range(min(len(after), POST_NEGATION_WINDOW))
                )
                found.append(Found(rule, language, negated))
                break
    # One finding per warning sign: negated only if every mention of it is.
    merged: dict[str, Found] = {}
    for item in found:
        seen = merged.get(item.rule.key)
        if seen is None or (seen.negated and not item.negated):
            merged[item.rule.key] = item
    return list(merged.values())


def pain_in_words(text: str) -> int | None:
    """A pain score stated in words: "my pain is 8", "dolor 9/10", "8 out of 10".

    Returns the number as written (it may be above 10: "pain 12/10"); None if no score.
    """
    words = [w for clause in clauses(normalize(text)) for w in clause]
    for index, word in enumerate(words):
        value = _number(word)
        if value is None:
            continue
        following = words[index + 1 : index + 4]
        if following[:2] == ["out", "of"] or following[:1] in (["de"], ["en"]):
            if "10" in following[1:3] or "diez" in following[1:3] or "ten" in following[1:3]:
                return value
        if following[:1] and following[0] in SCORE_UNITS_AFTER:
            continue
        if any(w in PAIN_WORDS for w in words[max(0, index - 4) : index]):
            return value
    match = re.search(r"\b(\d{1,2})\s*/\s*10\b", normalize(text))
    return int(match.group(1)) if match else None


def _number(word: str) -> int | None:
    # isdecimal, not isdigit: "፩" or "²" are digits int() cannot read (a reply crashed on one).
    if word.isdecimal() and len(word) <= 2:
        return int(word)
    return NUMBER_WORDS.get(word)


_BARE_SCORE_RE = re.compile(r"^(?:(\d{1,2})|([a-z]+))(?:\s*(?:/|out of|de)\s*(?:10|ten|diez))?$")


def bare_score(text: str) -> int | None:
    """The whole reply is a number 0-10 (or spelled out): "8", "8/10", "eight", "ocho"."""
    plain = normalize(text).strip().rstrip(".!")
    match = _BARE_SCORE_RE.match(plain)
    if not match:
        return None
    value = int(match.group(1)) if match.group(1) else NUMBER_WORDS.get(match.group(2) or "")
    return value if value is not None and 0 <= value <= 10 else None


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


SPANISH_HINTS = frozenset(
    {"gracias", "hola", "tengo", "estoy", "dolor", "puedo", "ayuda", "por", "favor", "me", "mi"}
)


def spanish_words(text: str) -> bool:
    """The reply is in Spanish, as far as its triage words tell (to answer in Spanish)."""
    words = [w for clause in clauses(normalize(text)) for w in clause]
    if any(w in SPANISH_HINTS for w in words):
        return True
    return any(
        language == "es" and any(match_at(pattern, words, i) is not None for i in range(len(words)))
        for _rule, language, pattern in _compiled().rules
    )
