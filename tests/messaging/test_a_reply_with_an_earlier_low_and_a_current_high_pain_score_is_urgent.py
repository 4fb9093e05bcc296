"""A pain score of 7 or more is urgent (README: "call us now", staff alerted). A patient
telling how the pain changed names two scores, the earlier one first: "my pain went from a
3 to an 8". The reply must be filed urgent on its high score, not recorded as "pain score
3 of 10", thanked, kept off the queue, with nobody alerted."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

WORSENING = [
    "My pain went from a 3 to an 8",
    "my pain was 2 but now it is 9",
    "pain was 3 this morning, now 9",
    "pain 2 yesterday, today 9/10",
    "yesterday 3/10 today 9/10",
    "el dolor era 3 ayer y hoy es 9",
]


@pytest.mark.parametrize("body", WORSENING)
def test_a_pain_score_that_rose_to_7_or_more_is_urgent_and_told_to_call_now(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    status, answer = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    root = ET.fromstring(answer)  # noqa: S314 - our own response
    [text] = [m.text or "" for m in root.iter("Message")]
    assert row.triage == "urgent", (
        f"{body!r} filed {row.triage} ({row.triage_reason}), needs attention "
        f"{row.needs_attention}: no staff alert; the patient was answered {text!r}"
    )
    assert row.needs_attention
    assert "call us now" in text or "Llámenos ahora" in text
