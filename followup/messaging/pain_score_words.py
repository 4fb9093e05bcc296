"""The words of the pain-score reading (pain_scores.py): what stands around a score, a
time, an amount or a count, and the numbers spelled out. Lists per language, like
triage_words.py's."""

from __future__ import annotations

from collections.abc import Mapping

# Numbers a patient may spell out as a pain score.
NUMBER_WORDS: Mapping[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "cero": 0, "uno": 1,
    "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8,
    "nueve": 9, "diez": 10,
}  # fmt: skip
# Words that may stand beside a pain score in a short answer to the pain check ("it's a
# 9", "about 8", "como un 8"): the reply is then the score (a range, "7 or 8", its top).
SCORE_FILLERS = frozenset(
    {
        "its", "it", "is", "a", "an", "about", "around", "approx", "approximately", "like",
        "maybe", "probably", "say", "id", "i", "would", "guess", "think", "pain", "my",
        "the", "level", "today", "now", "tonight", "right", "this", "morning", "still", "or",
        "to", "and", "de", "como", "un", "una", "es", "hoy", "ahora", "mi", "dolor", "el",
        "o", "unos", "mas", "menos", "tal", "vez", "todavia", "sigue", "en", "esta",
    }
)  # fmt: skip
PAIN_WORDS = frozenset({"pain", "dolor", "duele", "hurts", "hurt", "painful"})
SCORE_UNITS_AFTER = frozenset(
    {"am", "pm", "days", "day", "dias", "dia", "hours", "hour", "horas", "hora", "h",
     "min", "mins", "minutes", "minutos", "weeks", "semanas", "years", "anos", "mg", "pills",
     "pastillas", "times", "veces", "o'clock", "oclock"}
)  # fmt: skip

TEN = frozenset({"10", "ten", "diez"})
HEDGES = frozenset(
    {"about", "like", "nearly", "almost", "around", "maybe", "roughly", "casi", "como",
     "unos", "unas", "alrededor", "aproximadamente"}
)  # fmt: skip
# Words of a clause about a date, whose "9/10" is no score ("follow up visit 9/10").
DATE_WORDS = frozenset(
    {"appointment", "appt", "visit", "see", "date", "cita", "consulta", "fecha", "turno"}
)
IS_OF_THE_PAIN = frozenset({"it", "still", "that", "level"})
ARTICLES = frozenset({"a", "an", "un", "una", "el", "la"})
RANGE_WORDS = frozenset({"or", "o"})
# Words that may follow a pain score in its clause ("8 when I stand", "9 at night", "8/10",
# "8 sometimes"), besides the pain words and a gerund or participle ("8 walking").
AFTER_A_SCORE = frozenset(
    {"when", "whenever", "if", "after", "while", "at", "in", "on", "with", "by", "now",
     "today", "tonight", "this", "still", "again", "or", "to", "out", "of", "/", "and",
     "cuando", "si", "despues", "mientras", "en", "con", "por", "hoy", "ahora", "esta",
     "todavia", "otra", "o", "de", "al", "sobre", "sometimes", "usually", "mostly", "often",
     "always", "without", "sin", "all"}
)  # fmt: skip
# Words before a pain word that say there is none ("no pain", "sin dolor").
DENIALS = frozenset({"no", "not", "sin", "zero", "without", "doesnt", "dont", "isnt", "nada"})
# Words after a number that name what it counts, besides plurals ("my 8 year old").
COUNTED = frozenset(
    {"year", "yr", "mile", "block", "step", "pound", "lb", "foot", "ft", "kid", "grandkid",
     "cup", "ano", "cuadra", "paso", "libra"}
)  # fmt: skip
# Words ending in "s" that are no plural of a thing counted ("its 9 pls call").
NOT_PLURAL = frozenset(
    {"its", "is", "was", "has", "as", "us", "yes", "plus", "pls", "thanks", "mas", "menos",
     "less", "unless", "pues", "always", "perhaps"}
)  # fmt: skip
# Words before an amount compared ("lift more than 10", "over 10"), not "up to 9".
COMPARED = frozenset({"than", "over", "under"})
TIME_WORDS = frozenset(
    {"after", "before", "until", "till", "since", "despues", "antes", "hasta", "desde"}
)
# Words before a number that make it a clock time, a first score too ("pain 3, slept till
# 9"; "at" is one only after a score: "pain at 9" is a score).
CLOCK_BEFORE = frozenset({"till", "til", "until", "untill", "by", "las"})
# Words after a number that make it no score, besides triage_words' ("10 %", "8 degrees").
UNITS_AFTER = SCORE_UNITS_AFTER | frozenset(
    {"oclock", "%", "percent", "porciento", "pct", "degrees", "grados", "°"}
)
# Endings of a word that says how or when, after a score: "8 walking", "9 caminando",
# "8 parada", "9 sentado".
DOING_ENDINGS = ("ing", "ando", "iendo", "ado", "ada", "ido", "ida")
# The time of an earlier score, standing before a later one: "yesterday 8 this morning".
EARLIER = frozenset({"yesterday", "ayer", "anoche", "night", "noche", "earlier"})
# Times of the day, in the day's order ("this morning", "esta tarde").
DAYPARTS = {"morning": 0, "manana": 0, "afternoon": 1, "tarde": 1, "evening": 2, "noche": 3}
# "No pain meds" denies no pain.
MEDICINE = frozenset(
    {"med", "meds", "medicine", "medication", "medications", "pill", "pills", "killer", "killers",
     "reliever", "relief", "patch", "medicina", "medicamento", "pastilla", "pastillas"}
)  # fmt: skip
NOW_WORDS = frozenset({"now", "today", "tonight", "currently", "hoy", "ahora", "actualmente"})
PAST_WORDS = frozenset(
    {"was", "were", "yesterday", "before", "earlier", "from", "ayer", "era", "estaba", "antes",
     "fue", "de", "del", "desde", "anoche", "last"}
)  # fmt: skip
# Of PAST_WORDS, those that say past only before the number ("de 8 a 3", "from 8"), not
# after it ("8 de pie": standing).
FROM_WORDS = frozenset({"de", "del", "desde", "from"})
# The word in front of a later number that ties it to the score before.
SCORE_LINKS = RANGE_WORDS | NOW_WORDS | frozenset({"to", "al", "a", "is", "its", "es", "then", "y"})
# Words before a number that make it no score: a day, a date, a time.
NOT_SCORE_BEFORE = frozenset({"day", "dia", "on", "at", "el", "the", "week", "semana", "since"})
# Words beside a number that say it is the pain while doing something: "9 when I stand".
DOING_WHEN = frozenset({"when", "whenever", "cuando", "al"})
