"""README: a negation reaches its warning word only over the words that carry it, so "No I
can't feel my legs" is urgent: a leading "No" followed by what is wrong is no denial.
1d71d10 made "is" (with "es", "tan", "as", "so") a NEGATION_BRIDGE for every negation, to
reach "no es tan severo"; "my", "the" and "leg" were bridges already, so "No my leg is
numb" (the comma an older patient leaves out) is now read as "no numbness": "mentions new
numbness or tingling (says not)", left for a nurse to read when the clinic opens, nobody
paged, the patient not told to call now. New numbness or weakness in a leg after a spinal
procedure is the warning sign the service exists for. Before 1d71d10 each was urgent."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

NO_THEN_A_SIGN = [
    ("No my leg is numb", "new numbness or tingling"),
    ("Nope my leg is numb", "new numbness or tingling"),
    ("No the leg is numb", "new numbness or tingling"),
    ("no my leg is weak", "new weakness"),
]


@pytest.mark.parametrize(("body", "reason"), NO_THEN_A_SIGN)
def test_no_then_a_leg_that_is_numb_or_weak_is_urgent(
    body: str,
    reason: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    status, answer = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    root = ET.fromstring(answer) if answer else None  # noqa: S314 - our own response
    texts = [m.text or "" for m in root.iter("Message")] if root is not None else []
    assert (row.triage, row.triage_reason) == ("urgent", reason), (
        f"{body!r} filed {row.triage} ({row.triage_reason}): nobody paged; the patient "
        f"was answered {texts!r}"
    )
    assert any("call us now" in t for t in texts), texts
