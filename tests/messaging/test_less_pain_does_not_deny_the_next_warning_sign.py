"""1d71d10 made "less" and "menos" negation words, for "the pain is less severe" / "el
dolor es menos intenso". But a negation word negates any warning word it reaches over
NEGATION_BRIDGES ("tengo", "la", "leg", "is", "o", "more" ...), and "less"/"menos" usually
qualify the pain, not the next thing said: "me duele menos tengo fiebre" (it hurts less,
I have a fever) is read as "no fever"; "más o menos" / "more or less" (somewhat) denies
the word after it. Each reply below is now "mentions ... (says not)": left for a nurse to
read when the clinic opens, nobody paged, the patient not told to call now, though it
reports a fever, tingling, numbness or weakness. Before 1d71d10 each was urgent."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

LESS_PAIN_THEN_A_SIGN = [
    ("me duele menos tengo fiebre", "fever or chills"),
    ("me duele menos tengo hormigueo en las piernas", "new numbness or tingling"),
    ("me duele menos la pierna esta dormida", "new numbness or tingling"),
    ("back pain less leg numb", "new numbness or tingling"),
    ("my legs are more or less numb", "new numbness or tingling"),
    ("me siento mas o menos debil", "new weakness"),
]


@pytest.mark.parametrize(("body", "reason"), LESS_PAIN_THEN_A_SIGN)
def test_less_pain_then_a_warning_sign_is_urgent(
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
    assert any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
