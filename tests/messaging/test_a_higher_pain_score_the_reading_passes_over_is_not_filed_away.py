"""A reply whose pain rose, said without a word tying the new score to the old one ("pain
was 4 yesterday, it's 8", "was 4 yesterday but 8 this morning"), was recorded as the OLD
score: the patient thanked for "your pain score of 4", nobody alerted, the reply kept off
the nurses' queue. The new score is urgent. And whenever the reading settles on a score
below 7 while the reply names a higher number it could not place ("pain was 4 yesterday.
8 when I get up"), the reply is not filed away as the low score: a nurse reads it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

ROSE = [
    ("pain was 4 yesterday, it's 8", 8),
    ("my pain was 3 yesterday, it is 9", 9),
    ("pain was 4 yesterday but 8 this morning", 8),
    ("dolor 4 ayer pero 8 esta mañana", 8),
]

PASSED_OVER = [
    "pain was 4 yesterday. 8 when I get up",
    "pain 4 but when i stand up it goes 9",
    "pain is a 3 sitting. standing 8",
]


def _answer(answer: str) -> list[str]:
    root = ET.fromstring(answer) if answer else None  # noqa: S314 - our own response
    return [m.text or "" for m in root.iter("Message")] if root is not None else []


@pytest.mark.parametrize(("body", "score"), ROSE)
def test_a_pain_score_that_rose_without_a_tie_word_is_urgent(
    body: str,
    score: int,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    status, answer = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    texts = _answer(answer)
    assert row.triage == "urgent", (
        f"{body!r} filed {row.triage} ({row.triage_reason}), score {row.pain_score}: "
        f"the patient was answered {texts!r}"
    )
    assert row.pain_score == score
    assert row.needs_attention
    assert any("call us now" in t or "Llámenos ahora" in t for t in texts), texts


@pytest.mark.parametrize("body", PASSED_OVER)
def test_a_low_score_beside_a_higher_number_goes_to_a_nurse(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    status, answer = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    texts = _answer(answer)
    assert row.triage in ("urgent", "reading"), (
        f"{body!r} filed {row.triage} ({row.triage_reason}) with score {row.pain_score}: "
        f"kept off the queue; the patient was answered {texts!r}"
    )
    assert row.needs_attention
    assert not any("we recorded your pain score" in t for t in texts), texts


@pytest.mark.parametrize(
    "body",
    ["my pain is 3 now, it was 9 yesterday", "pain 2, appointment 9/10", "pain 5 at 9 am"],
)
def test_a_low_score_beside_a_past_score_a_date_or_a_time_is_still_recorded(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    status, _ = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    assert row.triage == "recorded", (body, row.triage, row.triage_reason)


@pytest.mark.parametrize("body", ["an 8 today for the pain", "9 with pain meds", "9. pain is bad"])
def test_a_reply_of_pain_with_a_high_number_the_reading_cannot_place_is_urgent(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    """Read as no score at all, these waited in the reading queue, at night until the
    clinic opened, for a pain of 8 or 9."""
    status, answer = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    texts = _answer(answer)
    assert row.triage == "urgent", (body, row.triage, row.triage_reason)
    assert any("call us now" in t for t in texts), texts


@pytest.mark.parametrize(
    "body", ["pain meds at 9 pm?", "can i drive after 7? no pain", "i have 9 grandkids and no pain"]
)
def test_a_time_or_a_count_beside_pain_words_is_not_urgent(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    status, _ = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    assert row.triage == "reading", (body, row.triage, row.triage_reason)
