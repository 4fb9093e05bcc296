"""A text the reaper held (handed to Twilio, its lease run out, Twilio cannot be asked or
cannot tell whether it went out) is an `unknown` item in the needs-attention queue, and a
person settles it: it was sent, send it again (while its window is open), or do not send.
Each decision applies only while the text is still held."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.errors import NotFound, ValidationError
from followup.inbox.models import AttentionResolution
from followup.inbox.queue import UNKNOWN, attention_queue, queue_counts
from followup.inbox.service import handled_notes, mark_handled, patient_flags
from followup.messaging.claims import LEASE
from followup.messaging.events import add_events, event_row
from followup.messaging.models import Message, MessageEvent
from followup.messaging.opt_in import record_opt_in
from followup.messaging.outbox import record_opt_out
from followup.messaging.reconcile import reap_stale
from followup.messaging.retries import HANDOVER_MARGIN
from followup.patients.edits import cancel_procedure
from followup.patients.validation import EnrollmentResult
from followup.sendlog.dashboard import dashboard
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import NEW_YORK, at, dispatch, event_details, event_kinds

Enroll = Callable[..., EnrollmentResult]
NURSE = "nurse@example.org"
HANDED = at("2026-03-06T15:00")


def held_by_the_reaper(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll, **patient: str
) -> tuple[EnrollmentResult, Message]:
    """A patient whose no-driving text (its window open until 21:00) a dispatcher handed
    to the transport at 15:00 and died without an answer; the reaper, which cannot ask
    that transport, held it. The clock stands 20 s after the lease ran out."""
    clock.set(HANDED)
    result = enroll(completed_at="2026-03-06T14:30", **patient)
    crashing = ScriptedTransport(outcomes=[RuntimeError("killed")])
    assert dispatch(session, crashing, care, HANDED, owner="dead").unknown == 1
    text = _text(session, result, "no-driving")
    assert (text.status, text.lease_owner) == ("sending", "dead")  # in flight: not an item
    assert attention_queue(session=session, critical_steps=care.critical_steps()).items == []
    clock.set(HANDED + LEASE + timedelta(seconds=20))
    unaskable = ScriptedTransport(provider_has=None)
    assert reap_stale(session=session, transport=unaskable, now=clock.now()).held == 1
    return result, _text(session, result, "no-driving")


def hold(session: so.Session, message_id: int, handed: datetime) -> None:
    """Put a text in the reaper's held state directly (as `_reconcile` leaves it)."""
    session.execute(
        sa.update(Message)
        .where(Message.id == message_id)
        .values(
            status="sending", handed_at=handed, lease_owner=None, lease_expires_at=None,
            error_message="outcome unknown after lease expiry; held, not resent",
            updated_at=handed + LEASE,
        )
    )  # fmt: skip
    add_events(session, [event_row(message_id, handed + LEASE, "held", "sending", "held")])
    session.commit()


def _text(session: so.Session, result: EnrollmentResult, step: str) -> Message:
    session.expire_all()
    return session.scalars(
        sa.select(Message).where(Message.patient_id == result.patient.id, Message.step == step)
    ).one()


def settle(
    session: so.Session, text: Message, decision: str, now: datetime, note: str = "Checked"
) -> None:
    mark_handled(
        session=session, kind=UNKNOWN, item_id=text.id, note=note, actor=NURSE, now=now,
        decision=decision,
    )  # fmt: skip
    session.commit()


def audits(session: so.Session) -> list[str]:
    return [
        d or ""
        for d in session.scalars(
            sa.select(AuditEvent.detail)
            .where(AuditEvent.action == "attention.handled")
            .order_by(AuditEvent.id)
        )
    ]


def snapshot(session: so.Session, message_id: int) -> tuple[object, ...]:
    """Everything a settlement could write about a text."""
    session.expire_all()
    text = session.get_one(Message, message_id)
    return (
        text.status, text.handed_at, text.sent_at, text.not_before, text.lease_owner,
        text.lease_expires_at, text.error_message, text.updated_at,
        tuple(event_kinds(session, message_id)), tuple(audits(session)),
        session.scalar(sa.select(sa.func.count()).select_from(AttentionResolution)),
    )  # fmt: skip


# --- the queue ----------------------------------------------------------------------------


def test_a_held_text_is_an_unknown_item_until_it_is_settled(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    ada, text = held_by_the_reaper(session, care, clock, enroll, language="es")
    # Another patient's text under a live lease (a dispatcher at work) is not an item.
    clock.set(at("2026-03-06T16:00"))
    bo = enroll(first_name="Bo", phone="(202) 555-0177", completed_at="2026-03-06T15:50")
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == bo.patient.id, Message.step == "no-driving")
        .values(status="sending", lease_owner="w1", lease_expires_at=clock.now() + LEASE,
                handed_at=clock.now())
    )  # fmt: skip
    session.commit()
    critical = care.critical_steps()
    queue = attention_queue(session=session, critical_steps=critical)
    assert [(i.kind, i.item_id) for i in queue.items] == [(UNKNOWN, text.id)]
    item = queue.items[0]
    assert item.key == f"unknown:{text.id}"
    assert item.reason == (
        "no-driving: outcome unknown, the provider cannot tell whether it was sent"
    )
    assert (item.patient_id, item.patient_name, item.phone, item.language) == (
        ada.patient.id, "Ada Moreno", "+12025550143", "Spanish",
    )  # fmt: skip
    assert (item.step, item.handed_at, item.expires_at) == (
        "No driving today", HANDED, at("2026-03-06T21:00"),
    )  # fmt: skip
    assert item.at == HANDED + LEASE + timedelta(seconds=20)  # when the reaper held it
    assert item.resend_refusal(clock.now()) is None
    assert item.resend_refusal(at("2026-03-06T21:00") - HANDOVER_MARGIN) == (
        "its window has closed"
    )
    assert (queue.open_count, queue.urgent_count) == (1, 0)
    assert queue_counts(session=session, critical_steps=critical).open == 1
    flags = patient_flags(
        session=session, patient_ids=[ada.patient.id, bo.patient.id], critical_steps=critical
    )
    assert set(flags) == {ada.patient.id} and flags[ada.patient.id].open_items == 1

    settle(session, text, "sent", clock.now())
    assert attention_queue(session=session, critical_steps=critical).items == []
    assert queue_counts(session=session, critical_steps=critical).open == 0


# --- the three decisions -----------------------------------------------------------------


def test_it_was_sent_records_the_text_sent_at_its_hand_over(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    ada, text = held_by_the_reaper(session, care, clock, enroll)
    settled_at = clock.now() + timedelta(hours=2)
    assert dashboard(session=session, now=settled_at, tz=NEW_YORK).stuck == 1
    settle(session, text, "sent", settled_at, note="Twilio's console shows it delivered")
    # No report will ever come for it (no SID): not "sent with no delivery report".
    assert dashboard(session=session, now=settled_at, tz=NEW_YORK).stuck == 0
    text = _text(session, ada, "no-driving")
    assert (text.status, text.sent_at, text.handed_at) == ("sent", HANDED, HANDED)
    assert (text.lease_owner, text.lease_expires_at, text.error_message) == (None, None, None)
    assert event_kinds(session, text.id)[-2:] == ["held", "settled"]
    assert event_details(session, text.id, "settled") == [
        f"settled by staff ({NURSE}): it was sent"
    ]
    assert audits(session) == [
        f"unknown {text.id} settled (it was sent): Twilio's console shows it delivered"
    ]
    notes = handled_notes(session=session, patient_id=ada.patient.id)
    assert [(n.reason, n.handled_by, n.note, n.at) for n in notes] == [
        ("no-driving sent", NURSE, "Twilio's console shows it delivered", settled_at)
    ]
    transport = ScriptedTransport()
    dispatch(session, transport, care, settled_at)
    assert transport.sent == []  # never sent a second time


def test_send_it_again_goes_back_to_the_dispatcher_which_sends_it_once(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    ada, text = held_by_the_reaper(session, care, clock, enroll)
    settled_at = clock.now() + timedelta(minutes=5)
    settle(session, text, "resend", settled_at, note="Called: she never got it")
    text = _text(session, ada, "no-driving")
    assert (text.status, text.handed_at, text.not_before, text.sent_at) == (
        "pending", None, None, None,
    )  # fmt: skip
    assert (text.lease_owner, text.lease_expires_at) == (None, None)
    assert event_kinds(session, text.id)[-2:] == ["held", "requeued"]
    assert event_details(session, text.id, "requeued") == [
        f"settled by staff ({NURSE}): send it again"
    ]
    assert audits(session) == [
        f"unknown {text.id} settled (send it again): Called: she never got it"
    ]
    assert session.scalars(sa.select(AttentionResolution)).all() == []
    assert attention_queue(session=session, critical_steps=care.critical_steps()).items == []

    transport = ScriptedTransport()
    dispatch(session, transport, care, settled_at)
    dispatch(session, transport, care, settled_at + timedelta(minutes=1))
    assert transport.steps_sent() == ["no-driving"]
    assert _text(session, ada, "no-driving").status == "sent"


@pytest.mark.parametrize(
    ("before_close", "allowed"),
    [(HANDOVER_MARGIN + timedelta(seconds=1), True), (HANDOVER_MARGIN, False),
     (timedelta(0), False), (-timedelta(hours=1), False)],
)  # fmt: skip
def test_send_it_again_is_refused_once_the_window_is_closed_writing_nothing(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    before_close: timedelta,
    allowed: bool,
) -> None:
    ada, text = held_by_the_reaper(session, care, clock, enroll)
    now = at("2026-03-06T21:00") - before_close
    before = snapshot(session, text.id)
    if allowed:
        settle(session, text, "resend", now)
        assert _text(session, ada, "no-driving").status == "pending"
        return
    with pytest.raises(ValidationError) as refused:
        settle(session, text, "resend", now)
    session.rollback()
    assert refused.value.field == "decision"
    assert 'cannot be "send it again": its window clos' in refused.value.message
    assert "Fri 2026-03-06 21:00 EST" in refused.value.message
    assert snapshot(session, text.id) == before
    # The other decisions still settle it.
    settle(session, text, "cancel", now)
    assert _text(session, ada, "no-driving").status == "cancelled"


@pytest.mark.parametrize("cause", ["opted out", "procedure cancelled"])
def test_send_it_again_is_refused_for_an_opted_out_patient_or_a_cancelled_procedure(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll, cause: str
) -> None:
    ada, text = held_by_the_reaper(session, care, clock, enroll)
    if cause == "opted out":
        record_opt_out(session=session, patient_id=ada.patient.id, now=clock.now(), reason="STOP")
    else:
        cancel_procedure(session=session, procedure_id=ada.procedure.id, now=clock.now(), actor="t")
    session.commit()
    assert _text(session, ada, "no-driving").status == "sending"  # still held
    queue = attention_queue(session=session, critical_steps=care.critical_steps())
    item = next(i for i in queue.items if i.kind == UNKNOWN)
    words = "the patient opted out" if cause == "opted out" else "the procedure was cancelled"
    assert item.resend_refusal(clock.now()) == words
    before = snapshot(session, text.id)
    with pytest.raises(ValidationError, match=words) as refused:
        settle(session, text, "resend", clock.now())
    session.rollback()
    assert refused.value.field == "decision"
    assert snapshot(session, text.id) == before


def test_do_not_send_cancels_it_for_good_even_across_stop_and_start(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    ada, text = held_by_the_reaper(session, care, clock, enroll)
    now = clock.now()
    settle(session, text, "cancel", now, note="Her daughter drove; no need")
    text = _text(session, ada, "no-driving")
    assert (text.status, text.lease_owner, text.sent_at) == ("cancelled", None, None)
    assert event_details(session, text.id, "cancelled") == [
        f"settled by staff ({NURSE}): do not send"
    ]
    assert audits(session) == [
        f"unknown {text.id} settled (do not send): Her daughter drove; no need"
    ]
    # START brings back what an opt-out cancelled, never what a person did.
    record_opt_out(session=session, patient_id=ada.patient.id, now=now, reason="STOP")
    record_opt_in(session=session, patient_id=ada.patient.id, care=care, now=now)
    session.commit()
    transport = ScriptedTransport()
    dispatch(session, transport, care, now + timedelta(minutes=1))
    assert "no-driving" not in transport.steps_sent()
    assert _text(session, ada, "no-driving").status == "cancelled"


def test_a_held_blood_thinner_restart_settled_as_do_not_send_is_not_raised_again(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # The restart held, then the patient opts out. "Do not send" (after the call the item
    # asks for) is the follow-up: the `text` kind ("not sent: patient opted out before
    # it") does not raise the same text a second time.
    clock.set(HANDED)
    ada = enroll(completed_at="2026-03-06T14:30", blood_thinner="Eliquis")
    restart = _text(session, ada, "blood-thinner-restart")
    handed = restart.due_at
    hold(session, restart.id, handed)
    critical = care.critical_steps()
    queue = attention_queue(session=session, critical_steps=critical)
    assert [(i.kind, i.item_id) for i in queue.items] == [(UNKNOWN, restart.id)]
    assert "restart their medicine" in (queue.items[0].action or "")
    record_opt_out(session=session, patient_id=ada.patient.id, now=handed, reason="STOP")
    session.commit()
    settle(session, restart, "cancel", handed + timedelta(hours=1), note="Called: restart told")
    assert attention_queue(session=session, critical_steps=critical).items == []
    assert queue_counts(session=session, critical_steps=critical).open == 0


def test_a_resent_critical_text_that_then_expires_is_raised_as_a_text_item(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(HANDED)
    ada = enroll(completed_at="2026-03-06T14:30", blood_thinner="Eliquis")
    restart = _text(session, ada, "blood-thinner-restart")
    hold(session, restart.id, restart.due_at)
    settle(session, restart, "resend", restart.due_at + timedelta(minutes=5))
    # No worker ran before its window closed: it expires, and a nurse must call.
    dispatch(session, ScriptedTransport(outcomes=[]), care, restart.expires_at)
    assert _text(session, ada, "blood-thinner-restart").status == "expired"
    queue = attention_queue(session=session, critical_steps=care.critical_steps())
    assert [(i.kind, i.item_id) for i in queue.items] == [("text", restart.id)]


# --- the race: settled by something else meanwhile -----------------------------------------


@pytest.mark.parametrize("decision", ["sent", "resend", "cancel"])
def test_a_text_settled_meanwhile_is_left_as_it_is(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll, decision: str
) -> None:
    ada, text = held_by_the_reaper(session, care, clock, enroll)
    # The nurse loaded the page; then the dispatcher's late answer recorded it sent and
    # Twilio reported it delivered.
    page = attention_queue(session=session, critical_steps=care.critical_steps())
    assert [i.item_id for i in page.items] == [text.id]
    session.execute(
        sa.update(Message)
        .where(Message.id == text.id)
        .values(status="delivered", provider_sid="SMlate", sent_at=HANDED,
                delivered_at=clock.now())
    )  # fmt: skip
    session.commit()
    before = snapshot(session, text.id)
    with pytest.raises(ValidationError) as refused:
        settle(session, text, decision, clock.now())
    session.rollback()
    assert refused.value.field == "item"
    assert refused.value.message == "was already settled: the text is delivered now"
    assert snapshot(session, text.id) == before
    assert _text(session, ada, "no-driving").status == "delivered"  # never moved backwards


def test_two_people_settling_the_same_text_the_second_changes_nothing(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    ada, text = held_by_the_reaper(session, care, clock, enroll)
    settle(session, text, "cancel", clock.now())
    before = snapshot(session, text.id)
    with pytest.raises(ValidationError, match="already settled: the text is cancelled"):
        settle(session, text, "resend", clock.now())
    session.rollback()
    assert snapshot(session, text.id) == before


def test_only_a_held_text_is_settled_not_one_in_flight(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(HANDED)
    ada = enroll(completed_at="2026-03-06T14:30")
    crashing = ScriptedTransport(outcomes=[RuntimeError("killed")])
    dispatch(session, crashing, care, HANDED, owner="dead")
    text = _text(session, ada, "no-driving")  # sending, under the dead worker's lease still
    before = snapshot(session, text.id)
    for decision in ("sent", "resend", "cancel"):
        with pytest.raises(ValidationError, match="already settled: the text is sending"):
            settle(session, text, decision, HANDED + timedelta(seconds=5))
        session.rollback()
    assert snapshot(session, text.id) == before


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "decision", "note", "field"),
    [
        ("unknown", None, "done", "decision"),
        ("unknown", "", "done", "decision"),
        ("unknown", "maybe", "done", "decision"),
        ("unknown", "sent", "  ", "note"),
        ("unknown", "sent", "x" * 501, "note"),
        ("text", "sent", "done", "decision"),
        ("held", "sent", "done", "kind"),
    ],
)
def test_bad_input_is_refused_naming_the_field_writing_nothing(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    kind: str,
    decision: str | None,
    note: str,
    field: str,
) -> None:
    _, text = held_by_the_reaper(session, care, clock, enroll)
    before = snapshot(session, text.id)
    with pytest.raises(ValidationError) as refused:
        mark_handled(
            session=session, kind=kind, item_id=text.id, note=note, actor=NURSE,
            now=clock.now(), decision=decision,
        )  # fmt: skip
    session.rollback()
    assert refused.value.field == field
    assert snapshot(session, text.id) == before


def test_an_unknown_text_is_not_found(session: so.Session) -> None:
    with pytest.raises(NotFound):
        mark_handled(
            session=session, kind=UNKNOWN, item_id=999, note="done", actor=NURSE,
            now=HANDED, decision="sent",
        )  # fmt: skip
    assert session.scalars(sa.select(MessageEvent)).all() == []


def test_the_cli_lists_a_held_text_and_settles_it_with_a_decision(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from followup.cli import main

    ada, text = held_by_the_reaper(session, care, clock, enroll)
    monkeypatch.setenv("DATABASE_URL", database_url)
    now = clock.now().isoformat()
    main(["--now", now, "attention"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 open, 0 urgent"
    assert out[1].startswith(f"unknown:{text.id}        no-driving: outcome unknown")
    assert out[3] == (
        "    text: No driving today | handed to Twilio Fri 2026-03-06 15:00 EST"
        " | window open until Fri 2026-03-06 21:00 EST"
    )
    with pytest.raises(SystemExit):
        main(["--now", now, "attention", "--handle", f"unknown:{text.id}", "--note", "n"])
    assert capsys.readouterr().err.startswith("error: --decision: is required")
    main(["--now", now, "attention", "--handle", f"unknown:{text.id}", "--note", "Called",
          "--decision", "cancel"])  # fmt: skip
    assert capsys.readouterr().out.strip() == f"unknown {text.id} handled"
    assert _text(session, ada, "no-driving").status == "cancelled"
