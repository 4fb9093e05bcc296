""" "nada más" is Mexican Spanish for "only": "nada más tiene fiebre" (she only has a fever)
was read as "nada" denying the fever, "(says not)", filed needs-reading; a leading "No"
before "my"/"the" was the same (test_no_then_the_sign_said_in_full_is_urgent.py), and
both are now one table, NOT_NEGATING_BEFORE. "cannot" said with "ni", "tampoco" or "ni
siquiera" ("tampoco puede caminar", "no puedo ni caminar"), or with another thing it
cannot do first ("she can't eat or walk"), was not understood at all."""

from __future__ import annotations

import pytest

from followup.messaging.models import TRIAGE_READING, TRIAGE_URGENT
from followup.messaging.replies import classify_reply


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("nada mas tiene fiebre", "fever or chills"),
        ("nada más que tiene fiebre", "fever or chills"),
        ("tampoco puede caminar", "new weakness"),
        ("ya tampoco puede mover las piernas", "cannot feel or move the legs"),
        ("no come ni puede caminar", "new weakness"),
        ("no puedo ni caminar", "new weakness"),
        ("ni siquiera puede caminar", "new weakness"),
        ("she can't eat or walk", "new weakness"),
        ("can't sleep or pee", "cannot control the bladder or bowels"),
    ],
)
def test_only_neither_and_or_are_no_denial(body: str, reason: str) -> None:
    result = classify_reply(body, opt_out_type=None, pain_check_sent=False)
    assert (result.triage, result.reason) == (TRIAGE_URGENT, reason), (body, result)


@pytest.mark.parametrize("body", ["no tengo nada de fiebre", "nada de fiebre", "no fever"])
def test_nada_de_still_denies(body: str) -> None:
    result = classify_reply(body, opt_out_type=None, pain_check_sent=False)
    assert result.triage == TRIAGE_READING
    assert "(says not)" in (result.reason or "")
