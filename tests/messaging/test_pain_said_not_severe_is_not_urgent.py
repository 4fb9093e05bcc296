"""A reply that says the pain is NOT severe is no warning sign. The severe-pain terms let
words sit between the two ends ("dolor ~ muy fuerte", "pain ~ severe"), and the negation
then sits inside that gap ("el dolor no es muy fuerte", "pain not severe"): a negation is
only looked for BEFORE the first word of a term, so the denial itself is read as severe
pain. The reply is filed urgent, the on-call nurse is paged (at night too) and the
patient, who just said the pain is better, is told to call the clinic now."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

SAYS_NOT_SEVERE = [
    # new with 0bfb029 ("dolor ~ muy fuerte"): filed needs-reading before it
    "el dolor no es muy fuerte",
    "Me siento mejor, el dolor no es muy fuerte",
    "el dolor no está muy fuerte",
    # the same gap in the older "pain ~ severe" / "pain ~ terrible"
    "my back pain is not severe",
    "Pain not severe, about a 4",
    "the pain isn't terrible anymore",
]


@pytest.mark.parametrize("body", SAYS_NOT_SEVERE)
def test_pain_said_not_severe_is_not_filed_urgent(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    status, answer = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    assert row.triage != "urgent", (
        f"{body!r} (the pain is NOT severe) filed urgent ({row.triage_reason}): staff "
        "paged and the patient told to call now"
    )
    root = ET.fromstring(answer)  # noqa: S314 - our own response
    texts = [m.text or "" for m in root.iter("Message")]
    assert not any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
