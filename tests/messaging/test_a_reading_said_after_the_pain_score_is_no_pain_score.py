"""A patient answering the pain check often adds a reading: "pain 2 my pulse is 72", "dolor
3 mi temperatura es 37". Since 1d71d10 any later number after "is" / "es" in the same clause
is tied to the score before (`SCORE_LINKS` holds "is", "its", "es"; `_tied` in triage.py
asks nothing of what "is" is said of), and as it is not said to be past, it becomes the
pain now: the pulse, the sugar, a normal temperature is filed urgent as "pain score 72 of
10" (no score stored), the on-call phone is paged, at night too, and the patient, whose
pain is 2, is told to call the clinic now. "pain 2 my appointment is 9 tomorrow" is "pain
score 9 of 10" the same way. Before 1d71d10 each was recorded with its pain score."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

WITH_A_READING = [
    ("pain 2 my pulse is 72", 2),
    ("pain 3 my sugar is 90", 3),
    ("pain 3 my oxygen is 95", 3),
    ("dolor 3 mi temperatura es 37", 3),
    ("my pain is 2 my appointment is 9 tomorrow", 2),
]


@pytest.mark.parametrize(("body", "score"), WITH_A_READING)
def test_a_reading_after_a_low_pain_score_is_not_paged_as_the_pain(
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
    assert row.triage != "urgent", (
        f"{body!r} (pain {score}) filed urgent ({row.triage_reason}), pain score stored "
        f"{row.pain_score}: staff paged; the patient was answered {texts!r}"
    )
    assert (row.triage, row.pain_score) == ("recorded", score), (row.triage, row.triage_reason)
    assert not any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
