"""Spanish warning signs said of the patient by family ("no puede mover las piernas", "se
cayó", "no puede orinar") or in another form of the verb ("le falta el aire", "no ha
orinado") are urgent. The lists had most signs in the first person only ("no puedo
orinar", "me caí", "me falta el aire"), so a daughter writing for her mother was filed
needs-reading, "not understood automatically": nobody paged, told a nurse reads it when
the clinic opens. A test per sign, with the denials that must stay denials."""

from __future__ import annotations

import pytest

from followup.messaging.models import TRIAGE_READING, TRIAGE_URGENT
from followup.messaging.replies import classify_reply
from followup.messaging.triage_words import URGENT_RULES

REASONS = {rule.key: rule.reason for rule in URGENT_RULES}

SAID_OF_SOMEONE_ELSE = {
    "legs": [
        "no puede mover las piernas",
        "mi mama no puede mover la pierna",
        "no se puede mover",
        "no sienten las piernas",
        "no tiene sensibilidad en las piernas",
        "perdio la sensibilidad en los pies",
    ],
    "weakness": [
        "no puede caminar",
        "mi mamá ya no puede caminar",
        "no pudo caminar hoy",
        "no ha podido caminar",
        "no puede pararse",
        "no se puede parar",
        "no tiene fuerza en las piernas",
    ],
    "continence": [
        "no puede orinar",
        "no puede hacer pipi",
        "no ha orinado en todo el dia",
        "no ha podido orinar",
        "se orino",
        "se orinó en la cama",
        "se hizo pipi",
        "se hizo popo",
        "se hizo encima",
        "se le sale la orina",
        "no controla la orina",
        "perdio el control de la vejiga",
    ],
    "numbness": ["se le duermen las piernas", "cosquilleo en las piernas"],
    "breathing": [
        "no puede respirar",
        "le falta el aire",
        "le cuesta respirar",
        "se ahoga",
        "se esta ahogando",
    ],
    "fall": ["se cayo", "mi mama se cayo", "se cayó en el baño", "nos caimos", "se resbalo"],
    "fever": ["tiene temperatura"],
    "severe-pain": [
        "le duele mucho la espalda",
        "me duele muchisimo",
        "no aguanta el dolor",
        "no aguanto el dolor",
    ],
    "infection": ["la herida esta caliente"],
}


@pytest.mark.parametrize(
    ("key", "body"),
    [(key, body) for key, bodies in SAID_OF_SOMEONE_ELSE.items() for body in bodies],
)
def test_a_warning_sign_said_of_someone_else_in_spanish_is_urgent(key: str, body: str) -> None:
    result = classify_reply(body, opt_out_type=None, pain_check_sent=False)
    assert result.triage == TRIAGE_URGENT, (body, result)
    assert REASONS[key] in (result.reason or ""), (body, result)
    assert result.language == "es", (body, result)


@pytest.mark.parametrize(
    "body",
    [
        "no se cayo",
        "no se ha caido",
        "no le falta el aire",
        "no me duele mucho",
        "ya no le duele mucho",
        "no se orino",
        "no se ha orinado",
        "no me he orinado",
    ],
)
def test_their_denials_stay_denials(body: str) -> None:
    result = classify_reply(body, opt_out_type=None, pain_check_sent=False)
    assert result.triage == TRIAGE_READING, result
    assert "(says not)" in (result.reason or ""), result


@pytest.mark.parametrize(
    "body",
    [
        "se cayo la gasa",
        "se me cayó la curita",
        "la venda se cayo",
        "no se si puede caminar mañana",
        "¿puedo usar una bolsa de agua caliente?",
    ],
)
def test_look_alikes_are_not_those_signs(body: str) -> None:
    result = classify_reply(body, opt_out_type=None, pain_check_sent=False)
    assert result.triage == TRIAGE_READING, result
