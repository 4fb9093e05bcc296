"""A reply that gives its pain score and a date written month/day or day/month ("pain 2,
follow up appointment 9/10": September 10th; "mi cita es el 9/10": October 9th) names one
pain score. Since 605b172 every "N/10" anywhere in a reply is added to its scores and the
highest wins: the date's 9 (or 10) is stored as the pain score, the reply filed urgent,
staff paged, and the patient told to call now. Before 605b172 a "N/10" counted only when
the reply stated no other score, and each of these was recorded as the score it gives."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

SCORE_AND_A_DATE = [
    ("pain 2, follow up appointment 9/10", 2),
    ("my pain is a 2. My follow up visit is 9/10", 2),
    ("pain is 2. see you 10/10", 2),
    ("dolor 2, mi cita es el 9/10", 2),
]


@pytest.mark.parametrize(("body", "score"), SCORE_AND_A_DATE)
def test_a_date_after_a_low_pain_score_is_not_a_pain_score(
    body: str,
    score: int,
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
    assert (row.triage, row.pain_score) == ("recorded", score), (
        f"{body!r} (pain {score}) filed {row.triage} ({row.triage_reason}), pain score "
        f"stored {row.pain_score}; the patient was answered {texts!r}"
    )
    assert not any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
