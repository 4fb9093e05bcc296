"""Not feeling or moving the legs is the most urgent warning sign after a spinal procedure
(README: urgent, "call us now", staff alerted). Its terms are negations by design: "no
siento ~ pierna*", "no puedo sentir ~ pierna*", "can't ~ feel ~ leg*", "can't ~ move ~
leg*", with "~" letting words sit in between. Since 605b172 a "~" gap never skips a
negation word (so that "pain not severe" is no severe pain), and "ni", "nor" and
"neither" are negation words. But inside these terms they are no denial, they stress it:
"no siento ni las piernas" is "I can't even feel my legs". Such a reply was urgent before
605b172; it is now "not understood automatically", left for a nurse to read when the
clinic opens, with nobody paged and the patient told only that a nurse will read it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

CANNOT_FEEL_THE_LEGS = [
    "no siento ni las piernas",
    "Ya no siento ni los pies",
    "no siento ni las piernas ni los pies",
    "no puedo sentir ni las piernas",
    "I can't feel nor move my legs",
    "can't feel neither leg",
]


@pytest.mark.parametrize("body", CANNOT_FEEL_THE_LEGS)
def test_cannot_feel_even_the_legs_is_filed_urgent_and_told_to_call_now(
    body: str,
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
    assert (row.triage, row.triage_reason) == ("urgent", "cannot feel or move the legs"), (
        f"{body!r} filed {row.triage} ({row.triage_reason}): no staff alert; the patient "
        f"was answered {texts!r}"
    )
    assert any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
