"""Set-based planning's writes: each text once, its event with it, every instant exact.

The texts and their events travel to the database as one parameter each (arrays on
PostgreSQL, JSON on SQLite) with the instants as text; these tests check that nothing is
lost or shifted on the way, on both databases, and that planning twice writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.planner import EXPIRED, PENDING, choose_intro, plan_procedure
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.db import analyze_if_never_analyzed, analyze_if_without_statistics, is_postgresql
from followup.messaging.events import add_events, event_row, insert_planned, settle_leased
from followup.messaging.models import Message, MessageEvent
from followup.messaging.outbox import plan_procedures
from followup.patients.models import Patient, Procedure
from followup.patients.validation import EnrollmentResult

# Friday 2026-03-06, 13:00:00.123456 in New York; the clocks go forward on Sunday, so the
# day-3 texts fall after the change. The microseconds must survive the trip.
NOW = datetime(2026, 3, 6, 18, 0, 0, 123456, tzinfo=UTC)
DONE = "2026-03-06T12:30"  # local: half an hour ago


def history(session: so.Session) -> dict[int, list[tuple[str, str | None, datetime]]]:
    rows = session.execute(
        sa.select(
            MessageEvent.message_id, MessageEvent.kind, MessageEvent.status, MessageEvent.at
        ).order_by(MessageEvent.id)
    ).all()
    out: dict[int, list[tuple[str, str | None, datetime]]] = {}
    for message_id, kind, status, at in rows:
        out.setdefault(message_id, []).append((kind, status, at))
    return out


def test_planned_texts_keep_their_exact_instants_and_one_event_each(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Callable[..., EnrollmentResult],
) -> None:
    clock.set(NOW)
    # Completed 26 hours ago: the no-driving text's window has passed (planned expired),
    # the rest are still to come.
    result = enroll(completed_at="2026-03-05T11:00:00", blood_thinner="Eliquis")
    procedure = session.get(Procedure, result.procedure.id)
    assert procedure is not None and procedure.completed_at is not None
    expected = {
        p.step: p
        for p in plan_procedure(
            protocol=care.protocol(procedure.kind),
            completed_at=procedure.completed_at,
            tz=ZoneInfo("America/New_York"),
            has_blood_thinner=True,
            quiet_hours=care.quiet_hours,
            now=NOW,
        )
    }
    texts = {m.step: m for m in session.scalars(sa.select(Message))}
    assert set(expected) <= set(texts)
    for step, planned in expected.items():
        text = texts[step]
        assert (text.due_at, text.expires_at, text.status) == (
            planned.due_at,
            planned.expires_at,
            planned.status,
        ), step
        assert text.created_at == NOW and text.updated_at == NOW and text.attempts == 0
    assert {t.status for t in texts.values()} == {PENDING, EXPIRED}
    events = history(session)
    assert set(events) == {t.id for t in texts.values()}
    for text in texts.values():
        kind = "expired" if text.status == EXPIRED else "planned"
        assert events[text.id] == [(kind, text.status, NOW)]


def test_planning_again_writes_no_text_and_no_event(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Callable[..., EnrollmentResult],
) -> None:
    clock.set(NOW)
    result = enroll(completed_at=DONE)
    before = (
        session.scalar(sa.select(sa.func.count()).select_from(Message)),
        session.scalar(sa.select(sa.func.count()).select_from(MessageEvent)),
    )
    session.execute(
        sa.update(Procedure).where(Procedure.id == result.procedure.id).values(planned_at=None)
    )
    report = plan_procedures(session=session, care=care, now=NOW + timedelta(minutes=1))
    session.commit()
    assert (report.procedures, report.planned, report.expired) == (1, 0, 0)
    after = (
        session.scalar(sa.select(sa.func.count()).select_from(Message)),
        session.scalar(sa.select(sa.func.count()).select_from(MessageEvent)),
    )
    assert after == before


def test_only_the_texts_not_yet_planned_go_in_and_get_an_event(
    session: so.Session, clock: FakeClock, enroll: Callable[..., EnrollmentResult]
) -> None:
    clock.set(NOW)
    result = enroll(completed_at=DONE)
    patient_id, procedure_id = result.patient.id, result.procedure.id
    existing = session.scalar(sa.select(Message).where(Message.step == "soreness"))
    assert existing is not None
    later = NOW + timedelta(hours=1)
    due = datetime(2026, 3, 9, 14, 0, 0, 999999, tzinfo=ZoneInfo("America/New_York"))
    planned, expired = insert_planned(
        session,
        [
            (procedure_id, patient_id, "soreness", later, later, PENDING),  # already there
            (procedure_id, patient_id, "extra-a", due, due + timedelta(days=1), PENDING),
            (procedure_id, patient_id, "extra-b", due, due, EXPIRED),
        ],
        later,
    )
    session.commit()
    assert (planned, expired) == (1, 1)
    session.expire_all()
    assert existing.due_at != later and existing.created_at == NOW  # left alone
    extra = {
        m.step: m for m in session.scalars(sa.select(Message).where(Message.step.like("extra-%")))
    }
    assert extra["extra-a"].due_at == due.astimezone(UTC)
    assert extra["extra-a"].expires_at == (due + timedelta(days=1)).astimezone(UTC)
    assert extra["extra-b"].status == EXPIRED
    events = history(session)
    assert events[extra["extra-a"].id] == [("planned", PENDING, later)]
    assert events[extra["extra-b"].id] == [("expired", EXPIRED, later)]
    assert len(events[existing.id]) == 1  # its own "planned", nothing added


def test_a_naive_instant_is_refused_and_nothing_is_written(
    session: so.Session, clock: FakeClock, enroll: Callable[..., EnrollmentResult]
) -> None:
    clock.set(NOW)
    result = enroll(completed_at=DONE)
    count = session.scalar(sa.select(sa.func.count()).select_from(Message))
    naive = datetime(2026, 3, 9, 14, 0)
    with pytest.raises(ValueError, match="naive"):
        insert_planned(
            session,
            [(result.procedure.id, result.patient.id, "extra", naive, NOW, PENDING)],
            NOW,
        )
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == count
    message_id = session.scalars(sa.select(Message.id)).first()
    with pytest.raises((ValueError, sa.exc.StatementError), match="naive"):
        add_events(session, [event_row(message_id, naive, "note", None)])  # type: ignore[arg-type]
    session.rollback()


def test_events_written_in_bulk_keep_the_exact_instant_from_any_zone(
    session: so.Session, clock: FakeClock, enroll: Callable[..., EnrollmentResult]
) -> None:
    clock.set(NOW)
    result = enroll(completed_at=DONE)
    ids = [
        m.id
        for m in session.scalars(sa.select(Message).where(Message.patient_id == result.patient.id))
    ]
    tokyo = datetime(2026, 3, 7, 3, 4, 5, 678901, tzinfo=ZoneInfo("Asia/Tokyo"))
    add_events(
        session,
        [event_row(i, tokyo + timedelta(microseconds=n), "note", None) for n, i in enumerate(ids)],
    )
    session.commit()
    written = session.execute(
        sa.select(MessageEvent.message_id, MessageEvent.at).where(MessageEvent.kind == "note")
    ).all()
    assert sorted(written) == [
        (i, (tokyo + timedelta(microseconds=n)).astimezone(UTC)) for n, i in enumerate(ids)
    ]


def test_tables_postgresql_never_analyzed_are_analyzed_once(session: so.Session) -> None:
    if not is_postgresql(session):
        assert analyze_if_never_analyzed(session, ("patients", "procedures")) == []
        return
    session.execute(sa.text("CREATE TABLE fresh_bulk_load (id integer PRIMARY KEY)"))
    session.execute(sa.text("INSERT INTO fresh_bulk_load SELECT generate_series(1, 500)"))
    try:
        analyzed = analyze_if_never_analyzed(session, ("fresh_bulk_load", Patient.__tablename__))
        # The test database's own tables may be new too (TRUNCATE keeps them unanalyzed).
        assert set(analyzed) in ({"fresh_bulk_load"}, {"fresh_bulk_load", "patients"})
        tuples = session.scalar(
            sa.text("SELECT reltuples FROM pg_class WHERE relname = 'fresh_bulk_load'")
        )
        assert tuples == 500
        assert analyze_if_never_analyzed(session, ("fresh_bulk_load", "patients")) == []
    finally:
        session.rollback()


def test_a_table_filled_by_a_transaction_rolled_back_is_analyzed_again_by_the_next(
    session: so.Session,
) -> None:
    # Planning ANALYZEs `messages` inside its transaction. If that transaction rolls back
    # (an import that failed), PostgreSQL keeps the table's row count but drops the
    # statistics: the next planning must analyze it again, not take it as done.
    if not is_postgresql(session):
        assert analyze_if_without_statistics(session, ("messages",)) == []
        return
    session.execute(sa.text("DROP TABLE IF EXISTS bulk_twice"))
    session.execute(sa.text("CREATE TABLE bulk_twice (id integer PRIMARY KEY)"))
    session.commit()
    try:
        session.execute(sa.text("INSERT INTO bulk_twice SELECT generate_series(1, 300)"))
        assert analyze_if_without_statistics(session, ("bulk_twice",)) == ["bulk_twice"]
        assert analyze_if_without_statistics(session, ("bulk_twice",)) == []
        session.rollback()
        session.execute(sa.text("INSERT INTO bulk_twice SELECT generate_series(1, 300)"))
        assert analyze_if_without_statistics(session, ("bulk_twice",)) == ["bulk_twice"]
        session.commit()
        assert analyze_if_without_statistics(session, ("bulk_twice",)) == []
    finally:
        session.rollback()
        session.execute(sa.text("DROP TABLE bulk_twice"))
        session.commit()


def test_one_batch_sets_each_procedures_own_intro_step(
    session: so.Session, care: CareContext
) -> None:
    # Procedures done half an hour, a day and a half and five days ago, planned in one call:
    # their first pending texts differ, so do the steps that introduce the program.
    ages = [timedelta(minutes=30), timedelta(hours=36), timedelta(days=5)] * 3
    ids = []
    for n, age in enumerate(ages):
        patient = Patient(
            first_name="Test", last_name=f"Batch{n}", phone=f"+1202555{n:04d}",
            timezone="America/New_York", language="en", sms_consent_at=NOW, created_at=NOW,
        )  # fmt: skip
        session.add(patient)
        session.flush()
        procedure = Procedure(
            patient_id=patient.id, kind="kyphoplasty", status="completed",
            completed_at=NOW - age, created_at=NOW,
        )  # fmt: skip
        session.add(procedure)
        session.flush()
        ids.append(procedure.id)
    session.commit()
    protocol = care.protocol("kyphoplasty")
    expected = {}
    for procedure_id, age in zip(ids, ages, strict=True):
        planned = plan_procedure(
            protocol=protocol, completed_at=NOW - age, tz=ZoneInfo("America/New_York"),
            has_blood_thinner=False, quiet_hours=care.quiet_hours, now=NOW,
        )  # fmt: skip
        expected[procedure_id] = choose_intro(
            protocol=protocol, planned=planned, tz=ZoneInfo("America/New_York"),
            quiet_hours=care.quiet_hours, now=NOW,
        )[0]  # fmt: skip
    assert len(set(expected.values()) - {None}) >= 2, expected  # the batch really is mixed

    report = plan_procedures(session=session, care=care, now=NOW)
    session.commit()

    assert report.procedures == len(ids)
    rows = session.execute(
        sa.select(Procedure.id, Procedure.intro_step, Procedure.planned_at).where(
            Procedure.id.in_(ids)
        )
    ).all()
    assert {i: step for i, step, _ in rows} == expected
    assert {at for _, _, at in rows} == {NOW}


def test_an_outcome_writes_each_texts_own_values_exactly_and_only_to_texts_still_ours(
    session: so.Session, clock: FakeClock, enroll: Callable[..., EnrollmentResult]
) -> None:
    clock.set(NOW)
    result = enroll(completed_at=DONE, blood_thinner="Eliquis")
    texts = list(
        session.scalars(
            sa.select(Message)
            .where(Message.patient_id == result.patient.id, Message.status == PENDING)
            .order_by(Message.id)
        )
    )
    assert len(texts) >= 3
    lease = NOW + timedelta(minutes=1)
    mine, theirs = texts[:-1], texts[-1]
    for text, owner in [(t, "me") for t in mine] + [(theirs, "someone else")]:
        text.status, text.lease_owner, text.lease_expires_at = "sending", owner, lease
    session.commit()
    tokyo = datetime(2026, 3, 9, 9, 30, 15, 654321, tzinfo=ZoneInfo("Asia/Tokyo"))
    rows = [
        {
            "id": t.id,
            "not_before": None if n == 0 else tokyo + timedelta(microseconds=n),
            "error_code": f"3000{n}" if n else None,
            "segments": n + 1,
            "error_message": f"busy «{n}» 'quoted'",
        }
        for n, t in enumerate(texts)
    ]

    written = settle_leased(
        session,
        owner="me",
        values={"status": PENDING, "lease_owner": None, "updated_at": NOW},
        rows=rows,
        lease_unexpired_at=NOW,
    )
    session.commit()
    session.expire_all()

    assert written == {t.id for t in mine}
    for n, text in enumerate(mine):
        stored = session.get(Message, text.id)
        assert stored is not None
        assert (stored.status, stored.lease_owner, stored.updated_at) == (PENDING, None, NOW)
        assert stored.not_before == (None if n == 0 else tokyo + timedelta(microseconds=n))
        assert (stored.error_code, stored.segments) == (f"3000{n}" if n else None, n + 1)
        assert stored.error_message == f"busy «{n}» 'quoted'"
    other = session.get(Message, theirs.id)
    assert other is not None
    assert (other.status, other.lease_owner, other.not_before, other.error_message) == (
        "sending",
        "someone else",
        None,
        None,
    )
