"""A patient whose pain ROSE often hedges the new score: "my pain went from 3 to about 8",
"from a 3 to like an 8", "de 3 a casi 9". Since 1d71d10 a later number counts only when the
word right in front of it (or in front of its article) ties it to the score before
(`_words_before`, `SCORE_LINKS`, `_tied`) and is what the pain went "to" only when "to" /
"a" stands right before it (`_changed_to`); a hedge ("about", "like", "almost", "casi",
"como", "unos") between them breaks both. The 8 is dropped, the 3 after "from" / "de" is
read as a past score, and, being the only one, it is stored: "pain score 3 of 10",
recorded, nobody paged, the patient whose pain just went up to 8 or 9 is thanked. Before
1d71d10 each of these was urgent with the higher score ("to", "a" within five words)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult

ROSE_TO_ABOUT = [
    ("my pain went from 3 to about 8", 8),
    ("pain went from a 3 to like an 8", 8),
    ("my back pain went from 2 to about 8 overnight", 8),
    ("my pain went from 3 to nearly 9", 9),
    ("el dolor subio de 3 a casi 9", 9),
    ("el dolor paso de 3 a como 8", 8),
    ("el dolor subio de 2 a unos 8", 8),
]


@pytest.mark.parametrize(("body", "now"), ROSE_TO_ABOUT)
def test_a_pain_score_that_rose_to_about_7_or_more_is_urgent(
    body: str,
    now: int,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    status, answer = reply(body)
    assert status == 200
    session.expire_all()
    [row] = session.scalars(sa.select(InboundMessage)).all()
    root = ET.fromstring(answer) if answer else None  # noqa: S314 - our own response
    texts = [m.text or "" for m in root.iter("Message")] if root is not None else []
    assert (row.triage, row.pain_score) == ("urgent", now), (
        f"{body!r} (the pain rose to about {now}) filed {row.triage} ({row.triage_reason}), "
        f"pain score stored {row.pain_score}: nobody paged; the patient was answered {texts!r}"
    )
    assert any("call us now" in t or "Llámenos ahora" in t for t in texts), texts
