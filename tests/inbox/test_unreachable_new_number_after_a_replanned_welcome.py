"""A handled "cannot receive texts" item comes back when a different number fails too
(README, Needs attention). The handled item covers failures "up to" the newest failed text's
id, but ids are not the order texts go out: a welcome the planner adds for a lost
introduction is planned after every other text of the procedure, and goes before them."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.inbox.queue import attention_queue
from followup.inbox.service import mark_handled
from followup.messaging.models import FAILED
from followup.messaging.tick import run_tick
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.edits import change_phone
from followup.patients.validation import EnrollmentResult
from tests.fakes.twilio_server import FakeError, FakeTwilio
from tests.messaging.helpers import at, messages

PHONE = "+12025550143"
NEW_PHONE = "+12025550188"


def unreachable_items(session: so.Session, care: CareContext) -> list[str]:
    session.expire_all()
    queue = attention_queue(session=session, critical_steps=care.critical_steps())
    return [i.key for i in queue.items if i.kind == "unreachable"]


def test_a_new_number_failing_after_a_handled_item_is_raised_whatever_the_texts_ids(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
) -> None:
    def tick(local: str) -> None:
        clock.set(at(local))
        run_tick(session=session, transport=twilio_transport, care=care, clock=clock, owner="t")
        session.commit()

    # Enrolled a second before quiet hours: no-driving (the intro) expires unsent, and the
    # planner gives the introduction to a welcome, planned now (after every other text of
    # the procedure), sent at 08:00.
    clock.set(at("2026-03-12T20:59:59"))
    ada = enroll(completed_at="2026-03-12T20:30")
    tick("2026-03-12T20:59:59")
    tick("2026-03-12T21:01")
    texts = messages(session, ada.patient.id)
    assert texts["no-driving"].status == "expired"
    assert texts["welcome"].id > texts["soreness"].id  # planned last, due first

    # 08:00: the number is a landline. One item; a nurse calls, writes a note, and enters
    # the mobile number the patient gives her.
    twilio_fake.errors[PHONE] = FakeError(21614, 400, "'To' number is not a valid mobile number")
    tick("2026-03-13T08:00")
    assert messages(session, ada.patient.id)["welcome"].status == FAILED
    assert unreachable_items(session, care) == [f"unreachable:{ada.patient.id}"]
    mark_handled(
        session=session, kind="unreachable", item_id=ada.patient.id,
        note="Called: landline; she gave her mobile number", actor="nurse@x.org", now=clock.now(),
    )  # fmt: skip
    change_phone(
        session=session, patient_id=ada.patient.id, phone=NEW_PHONE, region="US",
        now=clock.now(), actor="nurse@x.org",
    )  # fmt: skip
    session.commit()
    assert unreachable_items(session, care) == []

    # 10:00: soreness goes to the new number, which cannot receive texts either (misheard):
    # a different number failing, so the nurses must be told again, before warning signs
    # and the pain check are lost on it too.
    twilio_fake.errors[NEW_PHONE] = FakeError(21211, 400, "invalid 'To' phone number")
    tick("2026-03-13T10:00")
    soreness = messages(session, ada.patient.id)["soreness"]
    assert (soreness.status, soreness.to_phone, soreness.error_code) == (
        FAILED,
        NEW_PHONE,
        "21211",
    )
    assert unreachable_items(session, care) == [f"unreachable:{ada.patient.id}"], (
        "the new number's failure is hidden by the item handled for the old one: it covered "
        f"every text with an id up to the welcome's ({texts['welcome'].id}), and soreness "
        f"({soreness.id}) was planned before it"
    )
