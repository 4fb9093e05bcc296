""" "The worst of the pain is over" says the pain is getting better. Since 0bfb029 the
severe-pain term "worst ~ pain" lets two words sit between ("the worst back pain"), and
"worst OF THE pain" fills that gap: the patient who writes that they are improving is
filed urgent ("severe pain"), the on-call nurse is paged, at night too, and the patient is
told to call the clinic now. Before that change it was filed for a nurse to read."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

IMPROVING = [
    "the worst of the pain is over",
    "The worst of the pain is over now, thank you",
    "I think the worst of the pain is over",
    "Feeling better, the worst of the pain has passed",
    "the worst of my pain is over",
]


@pytest.mark.parametrize("body", IMPROVING)
def test_worst_of_the_pain_is_over_is_not_filed_urgent(
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
        f"{body!r} (the pain is easing) filed urgent ({row.triage_reason}): staff paged "
        "and the patient told to call now"
    )
    root = ET.fromstring(answer)  # noqa: S314 - our own response
    texts = [m.text or "" for m in root.iter("Message")]
    assert not any("call us now" in t for t in texts), texts
