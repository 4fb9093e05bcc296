"""A patient who cannot receive texts is flagged once, at once: the first permanent failure
of any text raises one "cannot receive texts" item, before any later text is due."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.errors import ValidationError
from followup.inbox.queue import attention_queue
from followup.inbox.service import (
    FLAG_OPEN,
    FLAG_OPTED_OUT,
    FLAG_UNREACHABLE,
    flag_condition,
    handled_notes,
    mark_handled,
    patient_flags,
)
from followup.messaging.models import FAILED, PENDING, SENT, UNDELIVERED
from followup.messaging.outbox import record_opt_out
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.edits import change_phone
from followup.patients.pages import search_patients
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.fakes.twilio_server import FakeError, FakeTwilio
from tests.messaging.conftest import post_signed
from tests.messaging.helpers import dispatch, messages

Enroll = Callable[..., EnrollmentResult]
PHONE = "+12025550143"
SORENESS_AT = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)  # day 1, 10:00 in New York


def unreachable_items(session: so.Session, care: CareContext) -> list[tuple[str, str, str | None]]:
    session.expire_all()
    return [
        (i.key, i.reason, i.action)
        for i in attention_queue(session=session, critical_steps=care.critical_steps()).items
        if i.kind == "unreachable"
    ]


def test_a_landline_refused_at_the_first_text_is_flagged_before_the_next_is_due(
    enroll: Enroll,
    session: so.Session,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
) -> None:
    # A patient with no blood thinner: no critical text would ever flag them.
    ada = enroll()
    twilio_fake.errors[PHONE] = FakeError(21614, 400, "'To' number is not a valid mobile number")
    dispatch(session, twilio_transport, care, clock.now())
    texts = messages(session)
    assert texts["no-driving"].status == FAILED
    assert texts["soreness"].status == PENDING and texts["soreness"].due_at > clock.now()
    assert unreachable_items(session, care) == [
        (
            f"unreachable:{ada.patient.id}",
            "cannot receive texts: the number is not a mobile phone (Twilio error 21614)",
            "Call the patient; ask for a mobile number and change the phone on their page.",
        )
    ]
    # The next text fails too: still one item, which says so.
    clock.set(SORENESS_AT)
    dispatch(session, twilio_transport, care, clock.now())
    [(key, reason, _)] = unreachable_items(session, care)
    assert key == f"unreachable:{ada.patient.id}"
    assert reason.endswith("; 2 texts failed")


def test_a_landline_reported_by_the_delivery_report_is_flagged_at_once(
    enroll: Enroll,
    session: so.Session,
    client: FlaskClient,
    twilio_runtime: Runtime,
    care: CareContext,
    clock: FakeClock,
) -> None:
    ada = enroll()
    dispatch(session, twilio_runtime.transport, care, clock.now())
    text = messages(session)["no-driving"]
    assert text.status == SENT and text.provider_sid
    form = {"MessageSid": text.provider_sid, "MessageStatus": "undelivered", "ErrorCode": "30006"}
    token = twilio_runtime.settings.twilio_auth_token or ""
    assert post_signed(client, "/twilio/status", form, token=token)[0] == 200
    assert messages(session)["no-driving"].status == UNDELIVERED
    [(key, reason, _)] = unreachable_items(session, care)
    assert key == f"unreachable:{ada.patient.id}"
    assert "landline" in reason and "30006" in reason


def test_a_transient_or_content_failure_is_not_cannot_receive(
    enroll: Enroll,
    session: so.Session,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
) -> None:
    enroll()
    twilio_fake.errors[PHONE] = FakeError(30007, 400, "filtered")
    dispatch(session, twilio_transport, care, clock.now())
    assert messages(session)["no-driving"].status == FAILED
    assert unreachable_items(session, care) == []


def test_handled_once_the_item_comes_back_only_for_a_new_number(
    enroll: Enroll,
    session: so.Session,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
) -> None:
    ada = enroll()
    twilio_fake.errors[PHONE] = FakeError(21614, 400, "not a mobile")
    dispatch(session, twilio_transport, care, clock.now())
    mark_handled(
        session=session, kind="unreachable", item_id=ada.patient.id,
        note="Called: landline only; will phone her the instructions", actor="nurse@x.org",
        now=clock.now(),
    )  # fmt: skip
    session.commit()
    assert unreachable_items(session, care) == []
    with pytest.raises(ValidationError, match="already handled"):
        mark_handled(
            session=session, kind="unreachable", item_id=ada.patient.id, note="again",
            actor="a", now=clock.now(),
        )  # fmt: skip
    session.rollback()
    # The same landline fails again the next day: already known, not flagged again.
    clock.set(SORENESS_AT)
    dispatch(session, twilio_transport, care, clock.now())
    assert messages(session)["soreness"].status == FAILED
    assert unreachable_items(session, care) == []
    # The nurse corrects the number; it turns out wrong too: a new item.
    change_phone(
        session=session, patient_id=ada.patient.id, phone="(202) 555-0188", region="US",
        now=clock.now(), actor="nurse@x.org",
    )  # fmt: skip
    session.commit()
    twilio_fake.errors["+12025550188"] = FakeError(21211, 400, "invalid")
    clock.set(datetime(2026, 3, 9, 14, 0, tzinfo=UTC))  # day 3: warning signs
    dispatch(session, twilio_transport, care, clock.now())
    [(key, reason, _)] = unreachable_items(session, care)
    assert key == f"unreachable:{ada.patient.id}" and "not valid" in reason
    [note] = handled_notes(session=session, patient_id=ada.patient.id)
    assert (note.kind, note.reason) == ("unreachable", "cannot receive texts")


def test_patient_flags_and_filters(
    enroll: Enroll,
    session: so.Session,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
) -> None:
    landline = enroll(first_name="Lena", last_name="Landline")
    stopped = enroll(first_name="Otto", last_name="Optout", phone="(202) 555-0177")
    fine = enroll(first_name="Fay", last_name="Fine", phone="(202) 555-0166")
    twilio_fake.errors[PHONE] = FakeError(30006, 400, "landline")
    dispatch(session, twilio_transport, care, clock.now())
    record_opt_out(session=session, patient_id=stopped.patient.id, now=clock.now(), reason="STOP")
    session.commit()
    critical = care.critical_steps()
    ids = [landline.patient.id, stopped.patient.id, fine.patient.id]
    flags = patient_flags(session=session, patient_ids=ids, critical_steps=critical)
    assert flags[landline.patient.id].unreachable and flags[landline.patient.id].open_items == 1
    assert flags[stopped.patient.id].opted_out and not flags[stopped.patient.id].unreachable
    assert fine.patient.id not in flags

    def listed(flag: str) -> list[str]:
        page = search_patients(
            session=session, query="", page=1, only=flag_condition(flag, critical)
        )
        return [row.name for row in page.rows]

    assert listed(FLAG_UNREACHABLE) == ["Landline, Lena"]
    assert listed(FLAG_OPTED_OUT) == ["Optout, Otto"]
    assert listed(FLAG_OPEN) == ["Landline, Lena"]
    with pytest.raises(ValidationError) as excinfo:
        flag_condition("everyone", critical)
    assert excinfo.value.field == "show"
