"""Triage of replies: the warning signs, a test per rule in English and Spanish with
misspellings, and their negations (the rest: test_triage_scores.py)."""

from __future__ import annotations

import pytest

from followup.messaging.models import (
    TRIAGE_READING,
    TRIAGE_URGENT,
)
from followup.messaging.replies import Classified, classify_reply
from followup.messaging.triage import find_warning_signs
from followup.messaging.triage_words import URGENT_RULES


def triage(body: str, *, pain_check_sent: bool = True, media: int = 0) -> Classified:
    return classify_reply(
        body, opt_out_type=None, pain_check_sent=pain_check_sent, media_count=media
    )


# Every warning sign, in English and Spanish, as patients type it (misspellings included).
URGENT_EXAMPLES = {
    "legs": [
        "I can't feel my legs",
        "i cant move my left leg",
        "not able to feel my legs",
        "could not move my legs this morning",
        "Cannot feel my feet",
        "I don't feel my legs",
        "i dont feel my feet since this morning",
        "I do not feel my left leg",
        "No siento las piernas",
        "no puedo mover la pierna derecha",
        "I can't really feel my legs",
        "can't even move my feet",
        "no puedo sentir las piernas",
        "no puedo sentir los pies",
    ],
    "numbness": [
        "my leg is numb",
        "Numbness in my foot since this morning",
        "numbnes in my toes",
        "tingling down my leg",
        "tengo la pierna entumecida",
        "siento hormigueo en el pie",
        "la pierna adormecida",
    ],
    "weakness": [
        "my legs feel weak",
        "Weakness in my legs",
        "weaknes when I stand",
        "tengo debilidad en las piernas",
        "me siento débil",
        "me siento debil",
        "I'm not able to walk",
        "couldn't walk today",
        "Haven't been able to walk since yesterday",
        "I wasn't able to walk this morning",
        "I can hardly walk",
        "can barely walk",
        "I have no strength in my legs",
        "no he podido caminar",
    ],
    "continence": [
        "I can't pee since yesterday",
        "no puedo orinar",
        "lost control of my bowels",
        "I peed myself",
        "pooped myself last night",
        "can't hold my urine",
        "no bladder control",
        "me oriné encima",
        "me hice pipí",
        "perdí el control de la vejiga",
    ],
    "bleeding": [
        "some BLEEDING where the needle went",
        "it is bleding",
        "blood on the bandage",
        "está sangrando",
        "hay sangre en la gasa",
    ],
    "fever": [
        "I have a fever",
        "feaver last night",
        "2 but feverish",
        "chills and sweats",
        "tengo fiebre",
        "fiebr 38.5",
        "escalofríos toda la noche",
        "escalofrios",
        "\N{FACE WITH THERMOMETER}",
        "temp 101",
        "temperature 101.5 last night",
        "my temp was 38.6",
        "temperatura 39",
        "100.8F",
        "38,5 grados",
    ],
    "redness": [
        "the site is red",
        "redness around the bandage",
        "la herida está roja",
        "está enrojecida",
    ],
    "swelling": [
        "it's swollen",
        "sweling at the site",
        "swolen",
        "está hinchado",
        "inchado",
        "hay inflamación",
    ],
    "drainage": ["pus coming out", "the site is draining", "oozing", "sale pus", "está supurando"],
    "chest": [
        "chest pain since this morning",
        "my chest feels tight",
        "dolor en el pecho",
        "me duele el pecho",
    ],
    "breathing": [
        "I can't breathe well",
        "short of breath",
        "trouble breathing",
        "no puedo respirar",
        "me falta el aire",
    ],
    "infection": [
        "I think the site is infected",
        "looks like an infection where the needle went in",
        "creo que se infectó la herida",
        "tengo una infección",
    ],
    "fainting": [
        "I fainted this morning",
        "she passed out in the kitchen",
        "I blacked out for a minute",
        "me desmayé",
        "se desmayó en el baño",
    ],
    "fall": ["I fell in the bathroom", "had a fall", "me caí en la cocina", "tuve una caída"],
    "severe-pain": ["severe pain in my back", "the pain is unbearable", "dolor insoportable"],
}


@pytest.mark.parametrize(
    ("key", "body"), [(key, body) for key, bodies in URGENT_EXAMPLES.items() for body in bodies]
)
def test_triage_warning_sign_is_urgent(key: str, body: str) -> None:
    result = triage(body)
    assert result.triage == TRIAGE_URGENT, (key, body, result)
    rule = next(r for r in URGENT_RULES if r.key == key)
    assert rule.reason in (result.reason or "")
    assert result.needs_attention


def test_every_urgent_rule_has_words_in_both_languages_and_an_example() -> None:
    keys = {rule.key for rule in URGENT_RULES}
    assert keys == set(URGENT_EXAMPLES)
    for key in keys:
        words = [
            t for r in URGENT_RULES if r.key == key for lang in ("en", "es") for t in r.terms[lang]
        ]
        assert words, key
        assert any(r.terms.get("es") for r in URGENT_RULES if r.key == key), key


@pytest.mark.parametrize(
    "body",
    [
        "no fever",
        "No fever, no chills",
        "no redness no swelling",
        "I don't have a fever",
        "not bleeding",
        "the bleeding stopped",
        "numbness is gone",
        "No tengo fiebre ni escalofríos",
        "sin fiebre",
        "ya no sangra",
    ],
)
def test_triage_negated_warning_sign_is_not_urgent_but_read(body: str) -> None:
    result = triage(body)
    assert result.triage == TRIAGE_READING, result
    assert "(says not)" in (result.reason or "")


@pytest.mark.parametrize("body", ["temperature 98.6", "temp 37.2", "temp 99", "took 100 mg"])
def test_triage_a_normal_temperature_is_not_a_fever(body: str) -> None:
    assert triage(body).triage != TRIAGE_URGENT


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("no fever but my leg is numb", "new numbness or tingling"),
        ("I don't have a fever and my leg is numb", "new numbness or tingling"),
        ("Not bleeding, but a little red", "redness at the needle site"),
        ("no tengo fiebre pero la pierna está entumecida", "new numbness or tingling"),
    ],
)
def test_triage_negation_ends_at_but_and_punctuation(body: str, reason: str) -> None:
    result = triage(body)
    assert result.triage == TRIAGE_URGENT
    assert result.reason == reason


# A negation word negates a warning sign only over words that carry it ("I don't have a
# fever", "no more bleeding"); a "no" that answers, or a "not" about something else, does
# not ("No I can't feel my legs", "no puedo dormir tengo fiebre"). Each of these was filed
# as "needs reading" with the nurse told the patient "says not".
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("No I can't feel my legs", "cannot feel or move the legs"),
        ("no puedo dormir tengo fiebre", "fever or chills"),
        ("I didn't sleep because of the fever", "fever or chills"),
        ("I'm not ok my legs are numb", "new numbness or tingling"),
        ("Nope legs are weak", "new weakness"),
        ("no energy legs weak", "new weakness"),
        ("no se me quitó la fiebre", "fever or chills"),
        ("never been this numb", "new numbness or tingling"),
        ("not numb yesterday now numb", "new numbness or tingling"),
    ],
)
def test_triage_negation_does_not_reach_over_other_words(body: str, reason: str) -> None:
    result = triage(body)
    assert (result.triage, result.reason) == (TRIAGE_URGENT, reason)


# "stopped", "gone", "se fue" negate a warning sign; negated themselves, they say it goes on.
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("it hasn't stopped bleeding", "bleeding"),
        ("the bleeding hasn't stopped", "bleeding"),
        ("fever is not gone", "fever or chills"),
        ("the numbness hasn't gone away", "new numbness or tingling"),
        ("la fiebre no se fue", "fever or chills"),
        ("el sangrado no paró", "bleeding"),
    ],
)
def test_triage_a_negated_resolution_is_not_a_negation(body: str, reason: str) -> None:
    result = triage(body)
    assert (result.triage, result.reason) == (TRIAGE_URGENT, reason)


# The other side: how patients say they do NOT have a warning sign stays "needs reading".
@pytest.mark.parametrize(
    "body",
    [
        "I don't have any fever",
        "I haven't had a fever",
        "I do not have a fever",
        "I have not had any chills",
        "I don't think I have a fever",
        "no more bleeding",
        "no signs of fever",
        "no sign of infection or fever",
        "not feeling any numbness",
        "no leg weakness",
        "no new numbness",
        "no longer numb",
        "it's not red anymore",
        "doesn't look red",
        "doesn't seem swollen",
        "no real redness",
        "not too swollen",
        "the site isn't red or swollen",
        "no redness or swelling",
        "no fever or chills today",
        "no numbness or tingling",
        "there's no bleeding",
        "the bleeding has stopped",
        "no hay sangre",
        "no tengo nada de fiebre",
        "la fiebre ya se fue",
        "no he tenido fiebre",
        "nunca tuve fiebre",
        "no está hinchado",
        "no me sangra",
        "no tiene pus",
        "no hay enrojecimiento ni hinchazón",
        "ya no tengo fiebre",
        "nothing red or swollen",
        "no issues with bleeding",
        "no signs of infection",
        "it doesn't look infected",
        "no infection",
        "no hay infección",
        "haven't fainted",
    ],
)
def test_triage_how_patients_deny_a_warning_sign_is_read_not_urgent(body: str) -> None:
    result = triage(body)
    assert result.triage == TRIAGE_READING, result
    assert "(says not)" in (result.reason or "")


@pytest.mark.parametrize(
    "body",
    [
        "Can I restart my blood thinner tomorrow?",
        "What number should I call?",
        "I fell asleep early",
        "what is my blood pressure supposed to be?",
        "my order shipped",
        "¿Cuándo puedo tomar la pastilla para adelgazar la sangre?",
    ],
)
def test_triage_look_alike_words_are_not_warning_signs(body: str) -> None:
    assert triage(body).triage == TRIAGE_READING
    assert find_warning_signs(body) == []
