"""Since c50a440 a leading "no" before "my"/"the" answers the nurse's question and is no
denial of the sign after it ("no my chest hurts" is urgent). But then "No the swelling went
down", "No my fever broke last night" and "No the redness is going away" were paged (staff
alerted, the patient told to call now) where before they were filed needs-reading: "went
down", "broke" and "going away" were not read as the end of a sign, as "stopped", "gone"
and "went away" are. They are now, so "the swelling went down" on its own is no longer paged
either, unless it says which way the sign went: "the numbness is going down my leg"."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from followup.patients.validation import EnrollmentResult
from tests.messaging.conftest import Triaged

Triage = Callable[[str], Triaged]


@pytest.mark.parametrize(
    "body",
    [
        "No the swelling went down",
        "No my fever broke last night",
        "No the redness is going away",
        "the swelling went down",
        "the fever went down to 99",
    ],
)
def test_a_sign_that_went_down_or_broke_goes_to_a_nurse_unpaged(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "reading", (
        f"{body!r} filed {reply.row.triage} ({reply.row.triage_reason}); answered {reply.texts!r}"
    )


@pytest.mark.parametrize(
    "body",
    [
        "the numbness is going down my leg",
        "the tingling is still going down my legs",
        "tingling went down to my feet",
        "blood is going down my back",
        "the swelling hasn't gone down",
        "the redness isn't going away",
        "the fever hasn't broken",
        "the fever went down to 101",
        "No my chest hurts",
    ],
)
def test_a_sign_going_down_the_leg_or_not_going_away_is_urgent(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "urgent", (body, reply.row.triage, reply.row.triage_reason)
