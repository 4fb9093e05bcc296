"""A reply that says the pain is LESS severe than it was is no warning sign: the patient is
getting better. 605b172 added "dolor ~ intenso", "dolor ~ severo" and "severo ~ dolor",
and made a negation inside a term's gap stop the match ("el dolor no es muy fuerte"), but a
comparative of improvement ("less", "menos") is not one of the negation words, and "no es
tan severo" has words between the negation and the adjective ("es", "tan") that do not
carry it. Each reply below is filed urgent as "severe pain": the on-call phone is paged
(at night too) and the patient who just said the pain is easing is told to call the
clinic now. The Spanish ones are new with 605b172 (needs-reading before it); the English
ones come from the older "pain ~ severe" / "pain ~ terrible"."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

SAYS_LESS_SEVERE = [
    "el dolor es menos intenso",
    "el dolor es menos severo",
    "ya no es tan intenso el dolor",
    "no es tan severo el dolor",
    "the pain is less severe today",
    "pain is less terrible now",
]


@pytest.mark.parametrize("body", SAYS_LESS_SEVERE)
def test_pain_said_less_severe_is_not_filed_urgent(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    status, answer = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    root = ET.fromstring(answer) if answer else None  # noqa: S314 - our own response
    texts = [m.text or "" for m in root.iter("Message")] if root is not None else []
    assert row.triage != "urgent", (
        f"{body!r} (the pain is easing) filed urgent ({row.triage_reason}): staff paged; "
        f"the patient was answered {texts!r}"
    )
    assert not any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
