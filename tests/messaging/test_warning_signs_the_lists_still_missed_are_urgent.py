"""Clear warning signs that the lists, even after c50a440..71d956c, did not understand: each
was filed needs-reading (at night, read when the clinic opens) with no one paged and the
patient not told to call. "I can no longer feel my legs", "my legs aren't working", "he
cannot get up off the floor", "I can hardly breathe", "tightness in my chest", "101 temp",
"green stuff coming out of the incision", "the wound smells"; and a patient who does not
wake up ("he is unresponsive", "she won't wake up"). Said not to be, they stay
needs-reading; "I can't get up early for the appointment" is no weakness."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from followup.patients.validation import EnrollmentResult
from tests.messaging.conftest import Triaged

Triage = Callable[[str], Triaged]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("I can no longer feel my legs", "cannot feel or move the legs"),
        ("she can no longer walk", "new weakness"),
        ("i dont have any feeling in my legs", "cannot feel or move the legs"),
        ("her legs aren't working right", "cannot feel or move the legs"),
        ("he cannot get up off the floor", "new weakness"),
        ("she's wetting the bed", "cannot control the bladder or bowels"),
        ("tightness in my chest", "chest pain"),
        ("pressure in my chest", "chest pain"),
        ("I can hardly breathe", "trouble breathing"),
        ("i can barely breathe", "trouble breathing"),
        ("101 temp", "fever or chills"),
        ("there is green stuff coming out of the incision", "pus or drainage at the needle site"),
        ("the wound smells", "pus or drainage at the needle site"),
        ("he is unresponsive", "fainting or passing out"),
        ("she won't wake up", "fainting or passing out"),
        ("i cant wake her up", "fainting or passing out"),
    ],
)
def test_a_clear_warning_sign_is_urgent(
    body: str, reason: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "urgent", (
        f"{body!r} filed {reply.row.triage} ({reply.row.triage_reason}): nobody paged, the "
        f"patient answered {reply.texts!r}"
    )
    assert reason in (reply.row.triage_reason or ""), reply.row.triage_reason
    assert any("call us now" in t for t in reply.texts), reply.texts


@pytest.mark.parametrize(
    "body",
    [
        "I don't have any weird feeling in my legs",
        "no tightness in my chest",
        "the wound doesn't smell",
        "98 temp",
        "I can no longer feel the numbness",
        "I can't get up early for the appointment",
        "she is not unresponsive, just sleepy",
    ],
)
def test_said_not_to_be_they_go_to_a_nurse_unpaged(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "reading", (body, reply.row.triage, reply.row.triage_reason)
