"""Patients (and nurses) give a pain score as "my pain is at 8". Since 1d71d10 a
number right after "at" is never a score (`NOT_SCORE_BEFORE` in triage.py, meant for a time:
"my appointment is at 9"), even when it follows the pain word and nothing else is in the
reply. So "my pain is at 8", "pain is at 9 today", "pain level at 9" and even "pain is at
9 out of 10" have no pain score at all: "not understood automatically", left for a nurse to
read when the clinic opens, nobody paged, the patient not told to call now. ("my pain is
at an 8" is still urgent: only the article saves it.) Before 1d71d10 each was urgent."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

AT_A_SCORE = [
    ("my pain is at 8", 8),
    ("my back pain is still at 8", 8),
    ("pain is at 9 today", 9),
    ("pain level at 9", 9),
    ("pain is at 9 out of 10", 9),
]


@pytest.mark.parametrize(("body", "score"), AT_A_SCORE)
def test_a_pain_score_said_at_a_number_is_urgent(
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
    assert (row.triage, row.pain_score) == ("urgent", score), (
        f"{body!r} (pain {score} of 10) filed {row.triage} ({row.triage_reason}), pain score "
        f"stored {row.pain_score}: nobody paged; the patient was answered {texts!r}"
    )
    assert any("call us now" in t for t in texts), texts
