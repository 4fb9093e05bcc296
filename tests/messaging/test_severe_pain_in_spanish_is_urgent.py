"""Severe pain is a warning sign in both languages (README: urgent, "call us now", staff
alerted; replies are triaged in English and Spanish). "Severe pain" is urgent; the words a
Spanish-speaking patient uses for it, "dolor severo" and "dolor intenso" (the words of the
Spanish pain scale: leve, moderado, severo/intenso), must be too, not left for a nurse to
read when the clinic opens with no one alerted."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

SEVERE_PAIN_ES = [
    "dolor severo",
    "tengo dolor severo en la espalda",
    "dolor intenso",
    "tengo un dolor muy intenso",
    "un dolor de espalda intenso",
]


@pytest.mark.parametrize("body", SEVERE_PAIN_ES)
def test_severe_pain_in_spanish_is_filed_urgent_and_told_to_call_now(
    body: str,
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
    assert (row.triage, row.triage_reason) == ("urgent", "severe pain"), (
        f"{body!r} filed {row.triage} ({row.triage_reason}): no staff alert; the patient was "
        f"answered {texts!r}"
    )
    assert any("call us now" in t or "Llámenos ahora" in t for t in texts)
