"""1d71d10 made "less" / "menos" negation words so that "the pain is less severe" is not
severe pain, and f68a346 kept them for the word right after (`_negated_before`,
`LESSENING`). But "less" only lowers a DEGREE: "less severe" is not severe, while "less
bleeding", "menos fiebre", "less tingling" say the sign is THERE, only smaller than before.
Each reply below is now "mentions ... (says not)": left for a nurse to read when the clinic
opens, nobody paged, the patient not told to call now, though the needle site is still
bleeding, the fever is still there, the legs still tingle or are weak. Before 1d71d10 each
was urgent."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

LESS_BUT_THERE = [
    ("theres less bleeding today", "bleeding"),
    ("less blood on the bandage today", "bleeding"),
    ("hay menos sangre en la gasa hoy", "bleeding"),
    ("I have less fever today", "fever or chills"),
    ("tengo menos fiebre que ayer", "fever or chills"),
    ("my feet have less tingling now", "new numbness or tingling"),
    ("tengo menos hormigueo en las piernas", "new numbness or tingling"),
    ("menos debilidad en las piernas", "new weakness"),
]


@pytest.mark.parametrize(("body", "reason"), LESS_BUT_THERE)
def test_less_of_a_warning_sign_is_urgent(
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
