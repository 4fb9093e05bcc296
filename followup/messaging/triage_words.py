"""Triage rules as data: which words in a reply mean a warning sign, in English and Spanish.

Every warning-sign word a reply is matched against lives in this module, one table per
purpose: the warning signs (URGENT_RULES, each with its words per language), the words
that negate them, the phrases that only look like them ("blood thinner" is not bleeding),
and the words that tell Spanish; the pain-score words are pain_score_words.py's, those of
a closing reply ("thanks", "gracias") or a question reply_words.py's. Words are written as
a patient types them, accents and all; they are normalised (lower case, accents dropped,
apostrophes removed) the same way the reply is, so "me caí", "me cai" and "ME CAI" are
one. The matching itself is followup.messaging.triage.

A term is a phrase of tokens: a token ending in "*" matches any word starting with it
("numb*": numb, numbness, numbed), and "~" lets up to two other words sit between
("can't feel ~ leg*": I can't feel my legs). Longer single words also match with one
letter wrong, swapped, missing or extra ("bleding", "sweling"), unless the word is a
common one that happens to be that close ("breeding", "fewer"). Pure data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

GAP = 2  # words "~" may skip


@dataclass(frozen=True)
class SymptomRule:
    """One warning sign: its key, how a nurse reads it, and its words per language."""

    key: str
    reason: str
    terms: Mapping[str, Sequence[str]]


# --- warning signs: each makes a reply urgent unless negated ("no fever") -----------------

# Spanish "cannot", said by the patient or of them, now or before: "no puedo caminar", "no
# puede caminar", "no me puedo mover", "no se puede parar", "no pudo", "no ha podido".
_CANNOT_ES = (
    "no pued*", "no me pued*", "no se pued*", "no le pued*", "no pud*", "no ~ podido",
    "sin poder", "no pued* ni", "ni pued*", "ni siquiera pued*", "tampoco pued*",
)  # fmt: skip


def _cannot_es(*actions: str) -> tuple[str, ...]:
    return tuple(f"{cannot} {action}" for cannot in _CANNOT_ES for action in actions)


# English "cannot", now or before: "can't pee", "unable to", "haven't been able to".
_CANNOT_EN = (
    "can't", "couldn't", "could not", "unable to", "not able to", "wasn't able to",
    "weren't able to", "haven't been able to", "hasn't been able to", "not been able to",
    "can no longer", "no longer able to",
)  # fmt: skip


def _cannot_en(*actions: str) -> tuple[str, ...]:
    return tuple(f"{cannot} {action}" for cannot in _CANNOT_EN for action in actions)


def _of_anyone(*phrases: str) -> tuple[str, ...]:
    """Said by the patient or of them: "wet myself", "wet herself", "wet himself"."""
    return tuple(f"{p} {self}" for p in phrases for self in ("myself", "herself", "himself"))


URGENT_RULES: tuple[SymptomRule, ...] = (
    SymptomRule(
        "legs",
        "cannot feel or move the legs",
        {
            "en": (
                *_cannot_en("~ feel ~ leg*", "~ feel ~ feet", "~ feel ~ foot", "~ move ~ leg*",
                            "~ move ~ feet", "~ move ~ foot", "~ feel ~ below ~ waist",
                            "~ feel ~ waist down", "~ feel anything in ~ leg*",
                            "~ feel anything in ~ feet", "~ feel ~ toes", "~ move ~ toes"),
                "no ~ feeling in ~ leg*", "no ~ feeling in ~ feet", "no ~ feeling in ~ foot",
                "no ~ sensation in ~ leg*", "no ~ sensation in ~ feet",
                "no ~ sensation in ~ foot", "don't have feeling in ~ leg*",
                "don't have any feeling in ~ leg*", "leg* ~ aren't working", "leg* ~ won't move",
                "leg* ~ won't work",
                "leg* ~ don't work", "leg* ~ not working", "leg* ~ stopped working",
                "leg* ~ not responding", "leg* ~ won't respond", "lost feeling",
                "losing feeling", "paralyz*", "paralys*",
                "don't feel my ~ leg*", "don't feel my ~ feet", "don't feel my ~ foot",
                "do not feel my ~ leg*", "do not feel my ~ feet", "do not feel my ~ foot",
            ),
            "es": (
                "no sient* ~ pierna*", "no sient* ~ pies", "no sient* ~ pie",
                "no sient* nada en ~ pierna*", "no sient* nada en ~ pies",
                "pierna* ~ no ~ respond*",
                *_cannot_es("mover", "sentir ~ pierna*", "sentir ~ pies", "sentir ~ pie"),
                "perdí* ~ sensibilidad", "no tengo sensibilidad", "no tiene* sensibilidad",
                "sin sensibilidad", "paraliz*",
            ),
        },
    ),
    SymptomRule(
        "numbness",
        "new numbness or tingling",
        {
            "en": (
                "numb", "numbness", "numbnes", "numbed", "numbish", "numm", "nummness",
                "numness", "nunb", "numbing", "tingl*", "pins and needles", "leg* ~ dead",
                "dead leg*", "leg* ~ asleep", "feet ~ asleep", "foot ~ asleep",
            ),
            "es": (
                "entumec*", "entumes*", "entumid*", "adormec*", "adormes*", "hormigue*", "hormige*",
                "dormid* ~ pierna*", "pierna* ~ dormid*", "se me duerm* ~ pierna*",
                "se le duerm* ~ pierna*", "pierna* se ~ duerm*", "cosquilleo",
            ),
        },
    ),
    SymptomRule(
        "weakness",
        "new weakness",
        {
            "en": (
                "weak*", "weeknes*", "legs ~ week", "leg* ~ collapsed", "legs ~ gave out",
                "leg* ~ giving out", "leg* ~ give way", "leg* ~ gave way", "leg* ~ giving way",
                "leg* ~ buckl*", "knee* ~ buckl*", "leg* ~ like jelly", "jelly legs",
                *_cannot_en("walk", "~ or walk", "stand up", "get up off ~ floor",
                            "get up from ~ floor", "get out of bed"),
                "trouble walking",
                "difficulty walking", "hard to walk", "hard time walking",
                "struggling to walk", "hardly walk", "barely walk", "hardly able to walk",
                "barely able to walk",
                "no strength in ~ leg*", "leg* ~ no strength",
            ),
            "es": (
                "débil*", "debilidad", "sin fuerza*", "no tengo fuerza*", "no tiene* fuerza*",
                *_cannot_es("caminar", "andar", "pararme", "pararse", "ponerme de pie",
                            "ponerse de pie", "sostenerme", "sostenerse"),
                "no me puedo parar", "no se puede parar",
            ),
        },
    ),
    SymptomRule(
        "continence",
        "cannot control the bladder or bowels",
        {
            "en": (
                *_cannot_en("pee", "urinate", "~ or pee", "~ or urinate", "control ~ bladder",
                            "control ~ bowel*", "control ~ urine", "hold ~ urine", "hold ~ pee",
                            "hold ~ bladder", "hold ~ bowel*"),
                "haven't peed", "hasn't peed", "not peed", "haven't urinated",
                "hasn't urinated", "not urinated", "incontinen*",
                *_of_anyone("wet", "wetting", "peed", "pee", "peeing", "peed on", "pooped",
                            "poop", "pooping", "pooped on", "soiled"),
                "peed ~ pants", "pooped ~ pants", "wet ~ pants", "wet the bed", "wetting the bed",
                "accident in ~ pants", "accident in ~ bed", "lost control ~ bladder",
                "lost control ~ bowel*", "losing control ~ bladder", "losing control ~ bowel*",
                "lost bladder control", "lost bowel control", "loss of bladder control",
                "loss of bowel control", "losing bladder control", "losing bowel control",
                "no bladder control", "no bowel control", "no control ~ bladder",
                "no control ~ bowel*",
            ),
            "es": (
                *_cannot_es("orinar", "hacer pipí"), "no he orinado", "no ha orinado",
                "no orina", "no orino", "sin orinar", "no he hecho pipí", "no ha hecho pipí",
                "no han orinado", "no control* ~ orina", "no control* ~ vejiga",
                "no control* ~ intestino*", "me orin*", "se orin*", "me he orinado",
                "se ha orinado", "me hice pipí", "me hice popó", "me hice del baño",
                "me hice encima", "se hizo pipí", "se hizo popó", "se hizo del baño",
                "se hizo encima",
                "perdí* el control ~ vejiga", "perdí* el control ~ orina",
                "perdí* el control ~ intestino*", "no aguant* ~ orina", "se ~ sale ~ orina",
                "incontinencia",
            ),
        },
    ),
    SymptomRule(
        "bleeding",
        "bleeding",
        {
            "en": (
                "bleed*", "bled", "bleading", "bleeing", "blood", "bloody", "soaked through",
                "bandage ~ soaked", "dressing ~ soaked", "gauze ~ soaked",
            ),
            "es": ("sangr*",),
        },
    ),
    SymptomRule(
        "fever",
        "fever or chills",
        {
            "en": (
                "fever*", "feaver*", "fevor", "fevr", "fver", "fevar", "feverish", "a temperature",
                "high temperature", "temperature of", "temp of", "temp is", "running a temp*",
                "burning up", "feber", "chills",
                "chils", "shiver*", "night sweats", "\N{FACE WITH THERMOMETER}",
            ),
            "es": (
                "fiebre*", "fiebr", "fievre*", "febre", "calentur*", "temperatura alta",
                "tengo temperatura", "tiene* temperatura",
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
            "en": (
                "pus", "puss", "drain", "drainage", "draining", "ooz*", "leak*", "weeping",
                # not "discharge" alone: "my discharge papers", "since my discharge"
                "discharge from ~ site", "discharge from ~ wound", "discharge from ~ incision",
                "site ~ discharge", "wound ~ discharge", "incision ~ discharge",
                "coming out of ~ site", "coming out of ~ wound", "coming out of ~ incision",
                "site ~ smell*", "wound ~ smell*", "incision ~ smell*",
                "smelly discharge", "yellow discharge", "green discharge",
            ),
            "es": (
                "pus", "supur*", "drena*", "secreción", "sale líquido", "líquido ~ herida",
                "sale* agua",
            ),
        },
    ),
    SymptomRule(
        "infection",
        "infection at the needle site",
        {
            "en": (
                "infect*", "infeccion*", "warm to ~ touch", "hot to ~ touch", "site ~ warm",
                "site ~ hot",
            ),
            "es": ("infecci*", "infectad*", "infectó", "se infectó", "herida ~ caliente"),
        },
    ),
    SymptomRule(
        "fainting",
        "fainting or passing out",
        {
            "en": (
                "fainted", "fainting", "i faint", "feel* faint", "felt faint", "passed out",
                "pass out", "passing out", "blacked out", "black out", "lost consciousness",
                "unconscious", "i collapsed", "she collapsed", "he collapsed", "just collapsed",
                "unresponsive", "won't wake up", "can't wake her", "can't wake him",
            ),
            "es": (
                "desmay*", "me desmayé", "perdí el conocimiento", "perdí la conciencia",
                "perdió el conocimiento", "inconsciente", "no se despierta", "no despierta",
            ),
        },
    ),
    SymptomRule(
        "chest",
        "chest pain",
        {
            "en": (
                "chest pain*", "chestpain*", "chest ~ hurt*", "chest ~ tight*", "pain ~ chest",
                "chest ~ pressure", "heart attack", "tight* in ~ chest",
                "pressure in ~ chest",
            ),
            "es": (
                "dolor ~ pecho", "pecho ~ duele", "duele ~ pecho", "opresión ~ pecho",
                "presión ~ pecho", "aprieta* ~ pecho", "pecho ~ aprieta*", "pecho ~ apretad*",
                "infarto",
            ),
        },
    ),
    SymptomRule(
        "breathing",
        "trouble breathing",
        {
            "en": (
                *_cannot_en("breath*", "catch ~ breath", "get ~ air"), "hard to breath*",
                "hard time breath*", "trouble breath*", "breathing ~ hard",
                "breathing ~ difficult", "breathing ~ labored", "gasping", "gasp* for",
                "difficulty breath*", "short of breath", "shortness of breath",
                "out of breath", "struggling to breath*", "breathless", "hardly breath*",
                "barely breath*",
            ),
            "es": (
                *_cannot_es("respirar"), "falta* ~ aire", "dificultad para respirar",
                "respir* con dificultad", "cuesta* respirar", "ahog*",
                "cuesta* trabajo respirar", "falta* ~ respiración", "respir* mal",
                "queda* sin aire", "quedo sin aire", "sin aliento",
            ),
        },
    ),
    SymptomRule(
        "fall",
        "a fall",
        {
            "en": (
                "fell", "fallen", "a fall", "i fall", "tripped", "slipped", "found her on ~ floor",
                "found him on ~ floor", "dropped to ~ floor", "hit ~ head",
            ),
            "es": (
                "me caí", "caída", "me he caído", "caído", "caí", "se cayó", "se calló",
                "nos caímos", "me resbalé", "se resbaló",
            ),
        },
    ),
    SymptomRule(
        "severe-pain",
        "severe pain",
        {
            "en": (
                # "~": "severe back pain", "terrible leg pain" (a spine patient's words)
                "severe ~ pain", "pain ~ severe", "unbearable", "excruciating", "worst ~ pain",
                "terrible ~ pain", "horrible ~ pain", "pain ~ terrible", "agony",
                "intense ~ pain", "pain ~ intense", "extreme ~ pain", "pain ~ extreme",
                "killing me", "unbareable", "unberable", "it is severe", "its severe",
                "so severe", "very severe", "hurt* so bad", "hurt* so much", "hurt* really bad",
                "hurt* too much", "hurt* like hell",
                *_cannot_en("take ~ pain anymore", "bear ~ pain", "stand ~ pain"),
            ),
            "es": (
                "dolor ~ insoportable", "insoportable", "dolor ~ fuerte", "mucho dolor",
                "dolor ~ terrible", "dolor ~ horrible", "dolor ~ muy fuerte", "dolor ~ severo",
                "dolor ~ intenso", "severo ~ dolor", "intenso ~ dolor", "duele* mucho",
                "duele* muchísimo", "no aguant* ~ dolor",
                "dolor ~ fuertísimo", "duele* demasiado", "duele* horrible", "duele* un montón",
            ),
        },
    ),
    SymptomRule(
        "bleeding",
        "bleeding",
        {"en": ("\N{DROP OF BLOOD}",), "es": ()},
    ),
)  # fmt: skip

# A temperature with a number is a fever from these (Fahrenheit, Celsius), whether it
# follows one of TEMPERATURE_WORDS ("temp 101", "temperatura 39") or a degree sign or
# unit ("100.8F", "38,5 grados"); below them it says nothing ("temp 98.6").
FEVER_FROM_F = 100.4
FEVER_FROM_C = 38.0
TEMPERATURE_WORDS = (
    "temp", "temps", "temperature", "tempature", "temprature", "temperatura", "fever",
    "fiebre", "running", "thermometer", "termómetro",
)  # fmt: skip
# A number alone is a temperature only as Fahrenheit with a decimal ("101.5"), up to this.
BARE_FAHRENHEIT_BELOW = 106
DEGREE_WORDS = (
    "°", "f", "c", "degree", "degrees", "grado", "grados", "de temperatura", "temp",
    "temperature",
)  # fmt: skip

# A dressing or a scab that came off is no fall: "the bandage fell off", "se cayó la gasa".
_CAME_OFF = {
    "en": ("bandage*", "bandaid*", "band aid*", "dressing*", "gauze", "tape", "strip*", "scab*",
           "patch*", "glue"),
    "es": ("gasa", "curit*", "vend*", "apósito", "costra*", "parche*", "cinta*", "tirita*",
           "bandit*", "esparadrapo", "pegamento"),
}  # fmt: skip
_FELL = {"en": ("fell",), "es": ("se cayó", "se calló")}


def _came_off(language: str) -> tuple[str, ...]:
    return tuple(
        term
        for thing in _CAME_OFF[language]
        for fell in _FELL[language]
        for term in (f"{thing} ~ {fell}", f"{fell} ~ {thing}")
        if language == "es" or term.startswith(thing)  # "fell ~ tape": "I fell, the tape..."
    )


# A temperature read as normal: "temp is 98.6", "temperature of 97", "tiene temperatura
# normal", "temperatura de 36.5" (a number from 100.4 °F / 38 °C is a fever all the same).
_NORMAL_TEMPERATURE = tuple(
    f"{word} ~ {value}"
    for word in ("temp", "temperature", "temperatura")
    for value in ("9*", "35", "36", "37", "normal")
)

# Phrases that contain a warning word but are not a warning sign: taken out first.
NOT_SYMPTOMS: Mapping[str, Sequence[str]] = {
    "en": (
        "blood thinner*", "blood pressure", "blood sugar", "blood test*", "blood work",
        "fell asleep", "fall asleep", "falling asleep", "red cross", "weak tea",
        "room temperature", "drain cleaner", "blood thin*",
        "worst of ~ pain",  # "the worst of the pain is over": getting better
        "much less", "much better",  # "it hurts so much less": not a lot
        # no denial of passing urine: "I haven't peed myself", "haven't peed on myself"
        *_of_anyone("haven't peed", "hasn't peed", "not peed", "haven't peed on",
                    "hasn't peed on", "not peed on"),
        # the local anaesthetic: "the numbing medicine wore off", "the numbing shot hurt"
        "numbing med*", "numbing shot*", "numbing injection*", "numbing cream",
        "numbing agent", "numbing ~ wore off", "numbing ~ wears off", "numbing ~ wearing off",
        "soaked ~ shower", "soaked ~ water", "soaked ~ sweat",  # wet, not bled through
        *_came_off("en"), *_NORMAL_TEMPERATURE,
    ),
    "es": (
        "adelgaz* ~ sangre", "diluy* ~ sangre", "diluir ~ sangre", "aguar ~ sangre",
        "presión ~ sangre", "azúcar ~ sangre", "análisis de sangre", "examen de sangre",
        "me caí dormid*", "vino rojo", "cruz roja",
        *_came_off("es"), *_NORMAL_TEMPERATURE,
        "sale* agua ~ nariz", "sale* agua ~ ojo*",  # a runny nose, watery eyes
        "mucho menos",  # "me duele mucho menos": much less, not a lot
    ),
}  # fmt: skip

# A warning word is negated by one of these up to NEGATION_WINDOW words before it in the
# same clause ("no fever", "no tengo fiebre"), when every word between them is one of
# NEGATION_BRIDGES or another warning word ("I don't have a fever", "no redness or
# swelling"): "no puedo dormir tengo fiebre" and "No I can't feel my legs" are not denials.
# A term that is itself a negation ("can't feel ~ leg*", "no siento ~ pierna*") is never
# negated. One of POST_NEGATIONS just after a warning word negates it too ("the bleeding
# stopped"), unless a negation comes first ("the bleeding hasn't stopped"). A clause ends
# at punctuation and at SCOPE_ENDS: "no fever but my leg is numb" negates the fever only.
NEGATIONS = frozenset(
    {
        "no", "not", "don't", "didn't", "doesn't", "isn't", "aren't", "wasn't", "weren't",
        "haven't", "hasn't", "hadn't", "never", "without", "denies", "deny", "nor",
        "neither", "none", "nothing", "zero", "nope", "sin", "ni", "nunca", "tampoco", "ningún",
        "ninguna", "ninguno", "nada", "jamás", "less", "menos",
    }
)  # fmt: skip
POST_NEGATIONS: Sequence[str] = (
    "gone", "stopped", "went away", "resolved", "free", "se fue", "se quitó", "ya pasó",
    "pasó", "desapareció", "paró", "se me quitó", "broke", "going away", "goes away",
    "went down", "gone down", "going down", "goes down", "came down", "come down",
)  # fmt: skip
# The words that may sit between a negation and the warning word it negates.
NEGATION_BRIDGES = frozenset(
    {
        "a", "an", "any", "the", "my", "much", "more", "longer", "real", "really", "new",
        "sign", "signs", "symptom", "symptoms", "of", "or", "have", "has", "had", "having",
        "get", "got", "getting", "feel", "feeling", "felt", "see", "seen", "notice",
        "noticed", "seem", "seems", "seemed", "look", "looks", "looking", "been", "be",
        "too", "very", "at", "all", "anymore", "think", "leg", "legs", "infection",
        "experiencing", "experienced", "obvious", "visible", "issue", "issues", "problem",
        "problems", "with", "running",
        "tengo", "tiene", "tenido", "tuve", "tuvo", "he", "ha", "hay", "habido", "la", "el",
        "las", "los", "un", "una", "más", "me", "se", "le", "siento", "está", "están",
        "estoy", "nada", "de", "veo", "noto", "parece", "ya", "mucho", "mucha", "nuevo",
        "nueva", "tanto", "tanta", "muy", "o", "u", "ni", "señal", "señales", "signos",
        "síntomas", "infección", "pierna", "piernas", "creo", "que", "tenga", "es", "tan",
        "as", "so",
    }
)  # fmt: skip
# After one of these, a subject carries a negation too: "I don't think I have a fever".
NEGATION_BRIDGES_BEFORE_I = frozenset({"think", "believe", "guess"})
SUBJECTS = frozenset({"i", "he", "she", "we", "they"})
# Spanish "he" (I have) carries a negation before a participle ("no he tenido fiebre"),
# not as English "he": "no he has a fever" answers no, then says he has one.
SPANISH_HE = "he"
PARTICIPLE_ENDINGS = ("ado", "ido", "to", "cho")
# A negation word with one of its words here right after it denies nothing that follows:
# a "No" that answers ("no my chest hurts", "No the bleeding won't stop", "no el dolor es
# insoportable": a denial runs "no fever", "I don't have the chills"), "nada más" (only).
_ANSWERED_BY = frozenset(
    {"my", "the", "her", "his", "our", "your", "their", "mi", "mis", "su", "sus", "el"}
)
NOT_NEGATING_BEFORE: Mapping[str, frozenset[str]] = {
    "no": _ANSWERED_BY, "nope": _ANSWERED_BY, "nah": _ANSWERED_BY, "nada": frozenset({"más"}),
}  # fmt: skip
NEGATION_WINDOW = 5
POST_NEGATION_WINDOW = 3
SCOPE_ENDS = frozenset(
    {
        "but", "however", "although", "though", "yet", "except", "and", "also", "plus",
        "pero", "aunque", "sino", "y", "e", "también", "excepto",
    }
)  # fmt: skip

# A number just before one of these is no temperature ("running 40 minutes late").
NOT_TEMPERATURE_UNITS = (
    "min", "mins", "minute", "minutes", "minutos", "hour", "hours", "hr", "hrs", "horas",
    "day", "days", "dias", "mile", "miles", "yards", "feet", "ft", "steps", "pasos", "mg",
    "pills", "pastillas", "pounds", "lbs", "lb", "kg", "years", "anos",
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

# Words that tell a reply is in Spanish, besides the Spanish words of the warning signs.
SPANISH_HINTS = frozenset(
    {"gracias", "hola", "tengo", "estoy", "dolor", "puedo", "ayuda", "por", "favor", "me", "mi"}
)
