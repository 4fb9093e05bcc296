"""A patient answering the pain check often says how the pain went: "my pain is 3 now, it
was 9 yesterday". The score the clinic asked for, and the one it charts, is the pain now.
Since 605b172 a reply's score is the HIGHEST it names, a later number counting when a
change word ("now", "to", "a", "hoy") stands anywhere between the two: a pain that FELL to
3 is filed urgent as "pain score 9 of 10", the on-call phone is paged (at night too), the
9 is stored as the patient's pain score, and the patient, who just said they are better,
is told to call the clinic now. Before 605b172 the first two were recorded as 3."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

FELL_TO = [
    ("my pain is 3 now, it was 9 yesterday", 3),
    ("pain 3 now, down from 8", 3),
    ("my pain was 9 yesterday, now it is 3", 3),
    ("pain went down from 8 to 3", 3),
    ("el dolor bajó de 8 a 3", 3),
]


@pytest.mark.parametrize(("body", "now"), FELL_TO)
def test_a_pain_score_that_fell_is_recorded_as_the_pain_now_not_paged(
    body: str,
    now: int,
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
        f"{body!r} (the pain fell to {now}) filed urgent ({row.triage_reason}), pain score "
        f"stored {row.pain_score}: staff paged; the patient was answered {texts!r}"
    )
    assert row.pain_score == now, (row.pain_score, row.triage_reason)
    assert not any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
