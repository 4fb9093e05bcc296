"""Since 54ff17f "went down", "broke" and "going away" end a warning sign as "stopped"
does, unless the words after say which way it went ("the numbness went down my leg"). But
only legs, feet, hips, arms and the back said so: "the numbness went down my right side",
"...into my groin" and "...to my private area" (numbness spreading, in the groin: the worst
of the warning signs) and "the swelling is going down to my ankles" were filed
needs-reading, nobody paged, where before 54ff17f they were urgent; and "fever broke out
last night" (a fever that began) was read as a fever that ended. A sign that ended still
goes to a nurse unpaged."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from followup.patients.validation import EnrollmentResult
from tests.messaging.conftest import Triaged

Triage = Callable[[str], Triaged]


@pytest.mark.parametrize(
    "body",
    [
        "the numbness went down my right side",
        "the numbness went down into my groin",
        "numbness went down to my private area",
        "tingling going down my calf",
        "the swelling is going down to my ankles",
        "fever broke out last night",
        "her fever broke out again",
        "the numbness went down my whole body",
        "the numbness went down to my waist",
        "tingling went down my bum",
        "fever broke through the tylenol",
    ],
)
def test_a_sign_that_spread_or_broke_out_is_urgent(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "urgent", (body, reply.row.triage, reply.row.triage_reason)


@pytest.mark.parametrize(
    "body",
    [
        "my fever broke last night",
        "the fever broke, we are out of the woods",
        "the numbness went down",
        "the swelling went down a lot",
    ],
)
def test_a_sign_that_ended_goes_to_a_nurse_unpaged(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "reading", (body, reply.row.triage, reply.row.triage_reason)
