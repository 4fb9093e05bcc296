"""A patient whose pain ROSE often says each score with its own pain word: "ayer dolor 3,
hoy dolor 8", "yesterday it hurt 3 today it hurts 8". Since 1d71d10 a second number counts
only when the word right in front of it ties it to the score before ("to", "is", "now",
"hoy", "es" ... `SCORE_LINKS`, `_tied`); a pain word ("pain 8", "dolor 8", "it hurts 8") or
the Spanish "de" ("hoy de 8") in front of it is no tie, so the later, higher score is
dropped and the reply is filed by the first one: "pain score 3 of 10", recorded, not queued,
nobody paged, and the patient, whose pain just went up to 8 or 9, is thanked. The very same
number would have been the score had it been the only one ("dolor 8" is urgent alone).
Before 1d71d10 each of these was urgent with the higher score."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

ROSE_TO = [
    ("ayer dolor 3, hoy dolor 8", 8),
    ("Ayer dolor 3. Hoy dolor 8", 8),
    ("ayer tenia dolor de 3, hoy de 8", 8),
    ("ayer el dolor era de 3 y hoy es de 8", 8),
    ("this morning pain 3, now pain 9", 9),
    ("pain was 3 yesterday, today pain 8", 8),
    ("yesterday it hurt 3 today it hurts 8", 8),
]


@pytest.mark.parametrize(("body", "now"), ROSE_TO)
def test_a_higher_pain_score_said_with_its_own_pain_word_is_urgent(
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
    assert (row.triage, row.pain_score) == ("urgent", now), (
        f"{body!r} (the pain rose to {now}) filed {row.triage} ({row.triage_reason}), pain "
        f"score stored {row.pain_score}: nobody paged; the patient was answered {texts!r}"
    )
    assert any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
