"""A leading "No" that answers the text is no denial of the warning sign the patient then
describes, when the two run on without a comma (as a phone's typist or an older patient
writes): "no my chest hurts", "No the bleeding won't stop", "no el dolor es insoportable".
"the", "my" and "el" carry a negation ("I don't have the chills"), so each of these was
filed needs-reading as "(says not)": nobody paged, the patient told a nurse would read it.
A "no" followed at once by "the"/"my"/"mi"/"el" is an answer: "no fever", "no more
bleeding", "no signs of fever" deny the sign and stay needs-reading.

Likewise Spanish "he" ("no he tenido fiebre": I have not had a fever) carried a negation
in English too: "no he has a fever", "no he fell" were read as denials. "he" carries it
as Spanish, before a participle, or as a subject after think/believe/guess, as "I" does
("I don't think he has a fever" stays a denial, and so does "... she has ...")."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import TRIAGE_READING, InboundMessage
from followup.messaging.replies import classify_reply
from followup.patients.validation import EnrollmentResult

NO_THEN_A_SIGN = [
    ("no my chest hurts", "chest pain"),
    ("no my chest is tight", "chest pain"),
    ("no my legs gave out", "new weakness"),
    ("No the bleeding won't stop", "bleeding"),
    ("nope the fever is back", "fever or chills"),
    ("no el dolor es insoportable", "severe pain"),
    ("no he has a fever", "fever or chills"),
    ("no he fell", "a fall"),
]


@pytest.mark.parametrize(("body", "reason"), NO_THEN_A_SIGN)
def test_no_then_the_sign_said_in_full_is_urgent(
    body: str,
    reason: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    status, answer = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    root = ET.fromstring(answer) if answer else None  # noqa: S314 - our own response
    texts = [m.text or "" for m in root.iter("Message")] if root is not None else []
    assert (row.triage, row.triage_reason) == ("urgent", reason), (
        f"{body!r} filed {row.triage} ({row.triage_reason}): nobody paged; the patient "
        f"was answered {texts!r}"
    )
    assert any("call us now" in t for t in texts), texts


@pytest.mark.parametrize(
    "body",
    [
        "no fever",
        "no more bleeding",
        "no the fever is gone",
        "no he tenido fiebre",
        "I don't think he has a fever",
        "I don't think she has a fever",
    ],
)
def test_a_denial_stays_a_denial(body: str) -> None:
    result = classify_reply(body, opt_out_type=None, pain_check_sent=False)
    assert result.triage == TRIAGE_READING, result
    assert "(says not)" in (result.reason or ""), result
