"""Triage rules as data: the words of a reply that closes ("thanks", "gracias", an emoji),
asks ("can I shower") or says something got worse, in English and Spanish, and the words
that make a sign's "went down" a way it went ("down my leg"), not its end. Written and
normalised as triage_words.py's warning signs are; matched by followup.messaging.triage.
Pure data.
"""

from __future__ import annotations

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
    # worried, unwell, feverish or cold, dizzy, in pain, or about care and the body
    "\N{WORRIED FACE}\N{PENSIVE FACE}\N{DISAPPOINTED BUT RELIEVED FACE}"
    "\N{FACE WITH OPEN MOUTH AND COLD SWEAT}\N{FACE WITH COLD SWEAT}"
    "\N{FROWNING FACE WITH OPEN MOUTH}\N{GRIMACING FACE}\N{OVERHEATED FACE}"
    "\N{FREEZING FACE}\N{SNEEZING FACE}\N{FACE WITH UNEVEN EYES AND WAVY MOUTH}"
    "\N{DIZZY FACE}\N{SHOCKED FACE WITH EXPLODING HEAD}\N{FACE WITH MEDICAL MASK}"
    "\N{NAUSEATED FACE}\N{CRYING CAT FACE}\N{POUTING FACE}\N{ANGRY FACE}"
    "\N{THUMBS DOWN SIGN}\N{CROSS MARK}\N{BLACK QUESTION MARK ORNAMENT}"
    "\N{WHITE QUESTION MARK ORNAMENT}\N{HOSPITAL}\N{SYRINGE}\N{PILL}"
    "\N{ADHESIVE BANDAGE}\N{STETHOSCOPE}\N{LEG}\N{FOOT}\N{BONE}"
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

# --- a warning sign that went somewhere, not away ----------------------------------------

# Words that make a post-negation just before them a way the sign went, not an end to it:
# "the numbness is going down my leg", "tingling went down to my feet".
NOT_ENDED_BEFORE = frozenset(
    {"leg", "legs", "foot", "feet", "toes", "thigh", "thighs", "hip", "hips", "knee", "knees",
     "butt", "buttock", "buttocks", "arm", "arms", "back", "spine", "both", "side", "sides",
     "groin", "private", "privates", "crotch", "genitals", "bottom", "ankle", "ankles",
     "calf", "calves", "shin", "shins", "body", "waist", "below", "bum"}
)  # fmt: skip
# A post-negation and the word after it that say a sign began or stayed, not ended: "fever
# broke out", "fever broke through the tylenol".
BEGAN = frozenset({("broke", "out"), ("broke", "through")})

# --- numbers that are not a temperature ---------------------------------------------------

# A later number in a reply about temperature ("temp 97 this morning 102 tonight") is a
# reading unless one of these names it: "temp 98 pulse 104", "temperatura 36.5 pulso 102".
OTHER_MEASURES = (
    "pulse", "heart rate", "hr", "bpm", "bp", "blood pressure", "pressure", "o2", "oxygen",
    "sat", "sats", "sugar", "glucose", "weight", "weighs", "room", "apt", "pulso", "presión",
    "oxígeno", "saturación", "azúcar", "glucosa", "peso", "pesa", "cuarto", "habitación",
)  # fmt: skip
