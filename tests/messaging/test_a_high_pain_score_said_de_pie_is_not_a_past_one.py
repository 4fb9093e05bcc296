""" "dolor 3 sentado y 8 de pie" (3 sitting, 8 standing) was recorded as a pain of 3: the
patient thanked, nobody reading it. The "de" after the 8 (of "de pie", standing) was read as
the "de" of "de 8 a 3" (from 8 to 3), which makes a score a past one, so the 8 was passed
over as the pain of before. "de", "del", "desde" and "from" say a score is past only before
it; the 8 is no longer filed away."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from followup.patients.validation import EnrollmentResult
from tests.messaging.conftest import Triaged

Triage = Callable[[str], Triaged]


@pytest.mark.parametrize("body", ["dolor 3 sentado y 8 de pie", "dolor 2 acostada, 9 de pie"])
def test_a_high_score_said_de_pie_is_not_filed_away(
    body: str, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage in ("urgent", "reading"), (
        f"{body!r} filed {reply.row.triage} ({reply.row.triage_reason}), score "
        f"{reply.row.pain_score}: answered {reply.texts!r}"
    )
    assert not any("anotamos su dolor" in t for t in reply.texts), reply.texts


@pytest.mark.parametrize(
    ("body", "score"),
    [("dolor de 8 a 3", 3), ("el dolor bajó de 9 a 2", 2), ("my pain went from 8 to 3", 3)],
)
def test_a_score_the_pain_fell_from_is_still_past(
    body: str, score: int, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert (reply.row.triage, reply.row.pain_score) == ("recorded", score), reply.row.triage_reason
