"""Two texts with the same words to one phone (two patients share it), both left with
their outcome unknown and asked about in one batch, side by side (`first_looks`): the
first look of each names the same Twilio message, and only one of them may take it."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import LEASE
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import CANCELLED, PENDING, SENDING, SENT, Message, MessageEvent
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.base import OutgoingSms, SendResult
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at

SHARED = "(202) 555-0143"


class OnlyFirstArrives(ScriptedTransport):
    """Both requests leave; the first reaches Twilio, the second is lost on the way, and
    the dispatcher dies before either answer is recorded."""

    def send(self, sms: OutgoingSms) -> SendResult:
        if self.provider_has is not None and not self.provider_has:
            super().send(sms)
        raise RuntimeError("killed")


def two_on_one_phone(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> tuple[datetime, ScriptedTransport, list[Message]]:
    clock.set(at("2026-03-06T15:00"))
    enroll(first_name="Ada", completed_at="2026-03-06T14:30", phone=SHARED)
    enroll(first_name="Ben", completed_at="2026-03-06T14:29", phone=SHARED)
    transport = OnlyFirstArrives(provider_has=[])
    report = dispatch_due(
        session=session, transport=transport, care=care, clock=FakeClock(clock.now()), owner="dead"
    )
    assert report.unknown == 2
    assert len(transport.provider_has or []) == 1
    texts = list(
        session.scalars(sa.select(Message).where(Message.step == "no-driving").order_by(Message.id))
    )
    assert len({(m.to_phone, m.body) for m in texts}) == 1  # the same words to one phone
    return clock.now(), transport, texts


def _reload(session: so.Session, texts: list[Message]) -> list[Message]:
    session.expire_all()
    return [session.get_one(Message, m.id) for m in texts]


def test_two_same_words_texts_to_a_shared_phone_one_at_twilio_take_one_sid_and_one_is_resent(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    now, transport, texts = two_on_one_phone(session, care, clock, enroll)
    # Asked side by side: both first looks name the one message Twilio has.
    report = reap_stale(session=session, transport=transport, now=now + LEASE)
    assert (report.reconciled, report.requeued, report.errors) == (1, 1, 0)
    texts = _reload(session, texts)
    assert sorted(m.status for m in texts) == [PENDING, SENT]
    sids = [m.provider_sid for m in texts if m.provider_sid]
    assert sids == [transport.provider_has[0][2]]  # type: ignore[index]
    # The other is sent once more, so each patient's text reaches the phone once.
    resend = ScriptedTransport(provider_has=transport.provider_has)
    next(resend._ids)  # Twilio's next SID, not the first one again
    dispatch_due(
        session=session, transport=resend, care=care, clock=FakeClock(now + LEASE), owner="w2"
    )
    texts = _reload(session, texts)
    assert [m.status for m in texts] == [SENT, SENT]
    assert len({m.provider_sid for m in texts}) == 2
    assert len(transport.provider_has or []) == 2


@pytest.mark.parametrize("closed", [(0, 1), (1,)], ids=["both-closed", "one-closed"])
def test_closed_copies_on_a_shared_phone_one_at_twilio_never_share_its_sid(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    closed: tuple[int, ...],
) -> None:
    # Cancelled while their requests may be at Twilio (both, or one of the two while the
    # other is left sending): one Twilio message, so exactly one is recorded with it and
    # the other is not taken for sent.
    now, transport, texts = two_on_one_phone(session, care, clock, enroll)
    for i in closed:
        session.execute(
            sa.update(Message)
            .where(Message.id == texts[i].id)
            .values(status=CANCELLED, lease_owner="dead", lease_expires_at=now + LEASE)
        )
    session.commit()
    report = reap_stale(session=session, transport=transport, now=now + LEASE)
    assert (report.reconciled, report.errors) == (1, 0)
    texts = _reload(session, texts)
    sid = transport.provider_has[0][2]  # type: ignore[index]
    assert [m.provider_sid for m in texts].count(sid) == 1
    assert [m.status for m in texts].count(SENT) == 1
    unrecorded = next(m for m in texts if m.provider_sid is None)
    assert unrecorded.status in (CANCELLED, PENDING) and unrecorded.status != SENDING
    details = session.scalars(
        sa.select(MessageEvent.detail).where(MessageEvent.message_id == unrecorded.id)
    ).all()
    assert any("not at provider" in (d or "") for d in details)
