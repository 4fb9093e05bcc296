"""A reply whose pain rose, said without a word tying the new score to the old one ("pain
was 4 yesterday, it's 8", "was 4 yesterday but 8 this morning"), was recorded as the OLD
score: the patient thanked for "your pain score of 4", nobody alerted, the reply kept off
the nurses' queue. The new score is urgent. And whenever the reading settles on a score
below 7 while the reply names a higher number it could not place ("pain was 4 yesterday.
8 when I get up"), the reply is not filed away as the low score: a nurse reads it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from followup.patients.validation import EnrollmentResult
from tests.messaging.conftest import Triaged

Triage = Callable[[str], Triaged]

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


def _calls_now(texts: list[str]) -> bool:
    return any("call us now" in t or "Llámenos ahora" in t for t in texts)


@pytest.mark.parametrize(("body", "score"), ROSE)
def test_a_pain_score_that_rose_without_a_tie_word_is_urgent(
    body: str, score: int, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "urgent", (
        f"{body!r} filed {reply.row.triage} ({reply.row.triage_reason}), score "
        f"{reply.row.pain_score}: the patient was answered {reply.texts!r}"
    )
    assert reply.row.pain_score == score
    assert reply.row.needs_attention
    assert _calls_now(reply.texts), reply.texts


@pytest.mark.parametrize("body", PASSED_OVER)
def test_a_low_score_beside_a_higher_number_goes_to_a_nurse(
    body: str, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage in ("urgent", "reading"), (
        f"{body!r} filed {reply.row.triage} ({reply.row.triage_reason}) with score "
        f"{reply.row.pain_score}: kept off the queue; the patient was answered {reply.texts!r}"
    )
    assert reply.row.needs_attention
    assert not any("we recorded your pain score" in t for t in reply.texts), reply.texts


@pytest.mark.parametrize(
    "body",
    ["my pain is 3 now, it was 9 yesterday", "pain 2, appointment 9/10", "pain 5 at 9 am"],
)
def test_a_low_score_beside_a_past_score_a_date_or_a_time_is_still_recorded(
    body: str, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "recorded", (body, reply.row.triage, reply.row.triage_reason)


@pytest.mark.parametrize("body", ["an 8 today for the pain", "9 with pain meds", "9. pain is bad"])
def test_a_reply_of_pain_with_a_high_number_the_reading_cannot_place_is_urgent(
    body: str, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    """Read as no score at all, these waited in the reading queue, at night until the
    clinic opened, for a pain of 8 or 9."""
    reply = triaged(body)
    assert reply.row.triage == "urgent", (body, reply.row.triage, reply.row.triage_reason)
    assert _calls_now(reply.texts), reply.texts


@pytest.mark.parametrize(
    "body",
    [
        "pain meds at 9 pm?",
        "can i drive after 7? no pain",
        "i have 9 grandkids and no pain",
        "pain since 8 this morning",  # since 8 o'clock, no score: a nurse reads it
    ],
)
def test_a_time_or_a_count_beside_pain_words_is_not_urgent(
    body: str, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "reading", (body, reply.row.triage, reply.row.triage_reason)


@pytest.mark.parametrize(
    "body",
    [
        "pain 4 at rest 8 walking",
        "pain is a 3 sitting. standing 8",
        "pain 3, 8 when i walk",
        "dolor 3 y 8 al caminar",
        "le duele 3 acostada pero 8 parada",
        "dolor 2 sentado y 9 de pie",
    ],
)
def test_a_high_pain_when_moving_beside_a_low_one_at_rest_is_urgent(
    body: str, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    """Pain that reaches 8 when the patient walks, a day after cement went into a vertebra,
    may be a new fracture: it waited in the reading queue (overnight too) as "also names 8"."""
    reply = triaged(body)
    assert reply.row.triage == "urgent", (body, reply.row.triage, reply.row.triage_reason)
    assert _calls_now(reply.texts), reply.texts


@pytest.mark.parametrize(
    "body", ["pain 2 now, was 8 walking yesterday", "pain 3 now, walking 8 blocks"]
)
def test_a_past_pain_or_a_count_while_doing_something_is_not_urgent(
    body: str, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "recorded", (body, reply.row.triage, reply.row.triage_reason)
