"""Asked for a pain score, a spine patient often gives two, at rest and when moving:
"pain 2 at rest, 8 out of 10 when I stand up", "dolor 2 de 10 acostada y 9 de 10 al
caminar". Both are the pain now (present tense, no past word); a high score when standing
or walking after a kyphoplasty is what the pain check is for (a new fracture, cement out of
place). Since 1d71d10 a later number counts only when the word in front of it ties it to
the first score ("to", "now", "is", "or" ...: `_tied`), is followed by a "now" word
(`_time_after`) or has a pain / "now" word just before it (`_restated`): a score written as
a score ("8 out of 10", "9/10", "9 de 10", `_stated_as_score`) gets no credit for that, and
the "N/10" read of the whole reply runs only when no score was found. So the high score is
dropped and the reply is filed by the resting one: "pain score 2 of 10", recorded, nobody
paged, the patient thanked. Before 1d71d10 each was urgent: a number stated "out of 10" /
"de 10" always counted, and every "N/10" in the reply did."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

AT_REST_AND_MOVING = [
    ("Pain 2 at rest, 8 out of 10 when I stand up", 8),
    ("Pain 3 out of 10 sitting and 8 out of 10 when I get up", 8),
    ("pain is 3 sitting but 9/10 when I walk", 9),
    ("pain 2/10 resting, 9/10 walking", 9),
    ("dolor 2 de 10 acostada y 9 de 10 al caminar", 9),
    ("dolor 3 sentada, 8 de 10 al caminar", 8),
]


@pytest.mark.parametrize(("body", "high"), AT_REST_AND_MOVING)
def test_a_high_pain_score_when_moving_after_a_low_one_at_rest_is_urgent(
    body: str,
    high: int,
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
        f"{body!r} (pain {high} of 10 when moving) filed {row.triage} ({row.triage_reason}), "
        f"pain score stored {row.pain_score}: nobody paged; the patient was answered {texts!r}"
    )
    assert f"pain score {high} of 10" in (row.triage_reason or ""), row.triage_reason
    assert any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
