"""Retention: "Replies from numbers that matched no patient are emptied the same way once
they are older than RETENTION_DAYS" (retention/service.py), their staff notes included:
the purge sets the reply's `handled_note` to "(removed)". But handling the reply through
the queue copied the note into the audit trail too (`attention.handled`: "reply 7 handled:
<note>"), and `_scrub_handled_notes` runs only for purged *patients*: the nurse's words
about the stranger (who they turned out to be, their number, their pain) stay on **Audit**
for ever, while the reply they were written about is emptied.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.clock import FakeClock
from followup.inbox.service import mark_handled
from followup.messaging.models import InboundMessage
from followup.retention.service import REMOVED, purge_expired
from tests.conftest import START

DAYS = 400
NURSE = "nurse@example.org"
NOTE = "Called 202-555-0177 back: Ada Moreno's son, texting for her; told him to call 911"


def test_purge_removes_the_audit_copy_of_a_note_on_an_unknown_sender_s_reply(
    session: so.Session, clock: FakeClock
) -> None:
    stranger = InboundMessage(
        patient_id=None,
        from_phone="+12025550177",
        body="my mother has a fever after her back procedure",
        provider_sid="SM" + "7" * 32,
        received_at=START,
        kind="other",
        needs_attention=True,
    )
    session.add(stranger)
    session.commit()
    mark_handled(
        session=session,
        kind="reply",
        item_id=stranger.id,
        note=NOTE,
        actor=NURSE,
        now=START + timedelta(hours=1),
    )
    session.commit()

    later = START + timedelta(days=DAYS + 8)
    clock.set(later)
    report = purge_expired(session=session, now=later, retention_days=DAYS, actor="scheduler")
    assert report.unknown_replies == 1
    session.expire_all()

    # The reply itself is emptied, its note included, as the purge promises...
    emptied = session.get(InboundMessage, stranger.id)
    assert emptied is not None
    assert (emptied.body, emptied.from_phone, emptied.handled_note) == (REMOVED, "", REMOVED)
    # ...and so must be the copy of that note in the audit trail.
    kept = [
        (event.action, event.detail)
        for event in session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id))
        if event.detail and ("Moreno" in event.detail or "555-0177" in event.detail)
    ]
    assert kept == [], f"an emptied reply's staff note is still in the audit trail: {kept}"
