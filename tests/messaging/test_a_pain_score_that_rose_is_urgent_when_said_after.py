"""A pain score of 7 or more is urgent (README: "call us now", staff alerted). 605b172 made
a rise urgent when the change word stands between the two scores ("my pain was 2 but now
it is 9"), but patients as often put it after the new score, or say the rise in other
words: "pain was 3 yesterday, it is 8 today", "it's 8 now", "del 3 al 8". The second
number is not counted, the reply is recorded as "pain score 3 of 10", kept off the
nurses' queue with nobody alerted, and the patient in pain at 8 is answered "Thank you,
we recorded your pain score of 3 of 10"."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

ROSE_TO = [
    ("pain was 3 yesterday, it is 8 today", 8),
    ("pain was 3 this morning, it's 8 now", 8),
    ("my pain was 3 on day 2, it's 8 now", 8),
    ("pain 3 before, 8 now", 8),
    ("el dolor subió del 3 al 8", 8),
]


@pytest.mark.parametrize(("body", "score"), ROSE_TO)
def test_a_pain_score_that_rose_to_7_or_more_is_urgent_whatever_the_word_order(
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
    assert row.triage == "urgent", (
        f"{body!r} (pain now {score}) filed {row.triage} ({row.triage_reason}), needs "
        f"attention {row.needs_attention}: no staff alert; the patient was answered {texts!r}"
    )
    assert row.pain_score == score
    assert any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
