"""Severe pain is a warning sign (README: urgent, "call us now", staff alerted). After a
kyphoplasty or vertebroplasty the pain a patient reports is back pain, and the natural way
to say it puts the body part between the adjective and "pain": "severe back pain". Such a
reply must be filed urgent like "severe pain", not left for a nurse to read on the next
business day with no one alerted."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

SEVERE_PAIN = [
    "severe back pain",
    "I have severe back pain",
    "severe lower back pain since this morning",
    "terrible back pain",
    "horrible back pain",
    "the worst back pain",
    "severe leg pain",
    "tengo un dolor de espalda terrible",
    "dolor de espalda muy fuerte",
]


@pytest.mark.parametrize("body", SEVERE_PAIN)
def test_severe_back_pain_is_filed_urgent_and_told_to_call_now(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    status, answer = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    assert (row.triage, row.triage_reason) == ("urgent", "severe pain"), (
        f"{body!r} filed {row.triage} ({row.triage_reason}): no staff alert, and the patient "
        "is told a nurse will read it later"
    )
    root = ET.fromstring(answer)  # noqa: S314 - our own response
    [text] = [m.text or "" for m in root.iter("Message")]
    assert "call us now" in text or "Llámenos ahora" in text
