"""Retention: past RETENTION_DAYS a patient loses name, phone and text bodies; the figures,
statuses and times stay; the audit trail says so."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask

from followup.audit.models import AuditEvent
from followup.clock import FakeClock
from followup.inbox.models import AttentionResolution, UnreachableResolution
from followup.messaging.models import InboundMessage, Message
from followup.patients.models import Patient, Procedure
from followup.patients.validation import EnrollmentResult
from followup.retention.models import PurgedPatient
from followup.retention.service import REMOVED, PurgeReport, preview_purge, purge_expired
from followup.runtime import Runtime
from followup.sendlog.dashboard import dashboard
from followup.sendlog.service import csv_row
from jobs.scheduler import build_scheduler
from tests.conftest import START
from tests.test_cli import Cli

NY = ZoneInfo("America/New_York")
DAYS = 400
LATER = START + timedelta(days=DAYS + 8)  # past her last reply (day 7) too


def deliver_everything(session: so.Session, patient_id: int, phone: str) -> None:
    """As if every text of the patient went out and was delivered on its day."""
    for message in session.scalars(sa.select(Message).where(Message.patient_id == patient_id)):
        message.status = "delivered"
        message.body = f"Riverside Spine Center: text {message.step} for you"
        message.to_phone = phone
        message.sent_at = message.due_at
        message.delivered_at = message.due_at + timedelta(seconds=5)
        message.provider_sid = f"SM{message.id:032d}"
        message.updated_at = message.delivered_at
    session.commit()


def reply(
    session: so.Session,
    patient_id: int | None,
    at: datetime,
    body: str,
    sender: str = "+12025550143",
    **values: Any,
) -> InboundMessage:
    message = InboundMessage(
        patient_id=patient_id,
        from_phone=sender,
        body=body,
        provider_sid=f"SM{at.timestamp():.0f}{len(body)}".ljust(34, "0")[:34],
        received_at=at,
        kind="pain" if body.isdigit() else "other",
        pain_score=int(body) if body.isdigit() else None,
        needs_attention=True,
        **values,
    )
    session.add(message)
    session.commit()
    return message


@pytest.fixture
def history(
    session: so.Session, enroll: Callable[..., EnrollmentResult], clock: FakeClock
) -> dict[str, Any]:
    """Ada, treated more than 400 days ago, with a full history; Luis, treated recently."""
    ada = enroll(blood_thinner="Eliquis")
    session.execute(
        sa.update(Patient).where(Patient.id == ada.patient.id).values(external_id="MRN-1")
    )
    session.execute(
        sa.update(Procedure).where(Procedure.id == ada.procedure.id).values(external_id="PROC-1")
    )
    deliver_everything(session, ada.patient.id, "+12025550143")
    restart = session.scalars(
        sa.select(Message).where(
            Message.patient_id == ada.patient.id, Message.step == "blood-thinner-restart"
        )
    ).one()
    restart.status = "undelivered"
    session.add(
        AttentionResolution(
            message_id=restart.id,
            problem_at=START + timedelta(days=3),
            handled_at=START + timedelta(days=3),
            handled_by="nurse@example.org",
            note="called Ada Moreno at home",
        )
    )
    session.add(
        UnreachableResolution(
            patient_id=ada.patient.id,
            message_id=restart.id,
            handled_at=START + timedelta(days=3),
            handled_by="nurse@example.org",
            note="Ada Moreno gave a new mobile number",
        )
    )
    session.commit()
    reply(
        session,
        ada.patient.id,
        START + timedelta(days=7),
        "8",
        handled_at=START + timedelta(days=7, hours=1),
        handled_by="nurse@example.org",
        handled_note="Ada says the pain is easing",
    )
    reply(session, ada.patient.id, START + timedelta(days=2), "bleeding at the needle site")
    stranger_old = reply(session, None, START, "who is this", sender="+12025550999")

    clock.set(LATER - timedelta(days=10))
    luis = enroll(
        first_name="Luis",
        last_name="Ortega",
        phone="(202) 555-0144",
        completed_at=(LATER - timedelta(days=10, hours=1))
        .astimezone(NY)
        .strftime("%Y-%m-%dT%H:%M"),
    )
    stranger_new = reply(session, None, LATER - timedelta(days=1), "hello?", sender="+12025550998")
    clock.set(LATER)
    return {
        "ada": ada.patient.id,
        "luis": luis.patient.id,
        "stranger_old": stranger_old.id,
        "stranger_new": stranger_new.id,
    }


def snapshot(session: so.Session) -> dict[str, list[tuple[Any, ...]]]:
    session.expire_all()
    return {
        table.__tablename__: [
            tuple(row)
            for row in session.execute(sa.select(table).order_by(*table.__table__.primary_key))
        ]
        for table in (Patient, Procedure, Message, InboundMessage, AttentionResolution, AuditEvent)
    }


def test_purge_removes_what_identifies_old_patients_and_keeps_the_figures(
    session: so.Session, history: dict[str, Any]
) -> None:
    ada, luis = history["ada"], history["luis"]
    week = dashboard(session=session, now=START + timedelta(days=6), tz=NY)
    log_before = [csv_row(m) for m in session.scalars(sa.select(Message).order_by(Message.id))]

    report = purge_expired(session=session, now=LATER, retention_days=DAYS, actor="cli")

    assert report == PurgeReport(patients=1, texts=5, replies=2, unknown_replies=1)
    session.expire_all()
    patient = session.get(Patient, ada)
    assert patient is not None
    assert (patient.first_name, patient.last_name, patient.phone, patient.external_id) == (
        REMOVED,
        "",
        "",
        None,
    )
    assert patient.timezone == "America/New_York" and patient.sms_consent_at is not None
    procedure = session.scalars(sa.select(Procedure).where(Procedure.patient_id == ada)).one()
    assert procedure.external_id is None
    assert procedure.completed_at is not None and procedure.kind == "kyphoplasty"
    texts = session.scalars(sa.select(Message).where(Message.patient_id == ada)).all()
    assert {(m.body, m.to_phone) for m in texts} == {(None, None)}
    replies = session.scalars(
        sa.select(InboundMessage)
        .where(InboundMessage.patient_id == ada)
        .order_by(InboundMessage.id)
    ).all()
    assert [(r.body, r.from_phone, r.kind, r.pain_score) for r in replies] == [
        (REMOVED, "", "pain", 8),
        (REMOVED, "", "other", None),
    ]
    assert [r.handled_note for r in replies] == [REMOVED, None]
    assert session.scalars(sa.select(AttentionResolution.note)).all() == [REMOVED]
    assert session.scalars(sa.select(UnreachableResolution.note)).all() == [REMOVED]
    assert session.get(InboundMessage, history["stranger_old"]).body == REMOVED  # type: ignore[union-attr]
    # Luis and the recent unknown sender are untouched.
    kept = session.get(Patient, luis)
    assert kept is not None and (kept.first_name, kept.phone) == ("Luis", "+12025550144")
    assert session.get(InboundMessage, history["stranger_new"]).body == "hello?"  # type: ignore[union-attr]

    # The dashboard's figures and the send log's statuses and times are what they were.
    assert dashboard(session=session, now=START + timedelta(days=6), tz=NY) == week
    log_after = [csv_row(m) for m in session.scalars(sa.select(Message).order_by(Message.id))]
    assert log_after == log_before  # the CSV never had bodies or numbers

    # The audit trail names the patient purged, and the run.
    events = session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action.in_(["patient.purged", "retention.purged"]))
    ).all()
    assert [(e.action, e.record_id, e.actor) for e in events] == [
        ("patient.purged", ada, "cli"),
        ("retention.purged", None, "cli"),
    ]
    assert events[1].detail is not None
    assert "1 patients, 5 texts, 2 replies, 1 replies from unknown numbers" in events[1].detail
    for event in events:
        assert "Ada" not in (event.detail or "") and "555" not in (event.detail or "")
    purged = session.scalars(sa.select(PurgedPatient)).one()
    assert (purged.patient_id, purged.purged_at, purged.retention_days) == (ada, LATER, DAYS)

    # A second run finds nothing more, and says nothing more.
    assert purge_expired(session=session, now=LATER, retention_days=DAYS, actor="cli") == (
        PurgeReport()
    )
    assert session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
        AuditEvent.action.in_(["patient.purged", "retention.purged"])
    )) == 2  # fmt: skip


def test_dry_run_counts_the_same_and_changes_nothing(
    session: so.Session, history: dict[str, Any]
) -> None:
    before = snapshot(session)
    preview = preview_purge(session=session, now=LATER, retention_days=DAYS)
    assert snapshot(session) == before
    assert preview == purge_expired(session=session, now=LATER, retention_days=DAYS, actor="t")


def test_a_patient_is_kept_until_their_last_reply_is_past_retention(
    session: so.Session, history: dict[str, Any]
) -> None:
    last_reply = START + timedelta(days=7)  # her pain score; the procedure was on day 0
    on_the_day = last_reply + timedelta(days=DAYS)
    report = purge_expired(session=session, now=on_the_day, retention_days=DAYS, actor="t")
    assert report.patients == 0
    after = on_the_day + timedelta(seconds=1)
    assert purge_expired(session=session, now=after, retention_days=DAYS, actor="t").patients == 1


@pytest.mark.parametrize("open_item", ["recent reply", "scheduled procedure", "open text"])
def test_a_patient_with_something_open_is_kept(
    session: so.Session, history: dict[str, Any], open_item: str
) -> None:
    ada = history["ada"]
    if open_item == "recent reply":
        reply(session, ada, LATER - timedelta(days=3), "still sore")
    elif open_item == "scheduled procedure":
        session.add(
            Procedure(
                patient_id=ada,
                kind="vertebroplasty",
                status="scheduled",
                scheduled_at=LATER + timedelta(days=3),
                created_at=START,
            )
        )
    else:
        session.execute(
            sa.update(Message)
            .where(Message.patient_id == ada, Message.step == "pain-check")
            .values(status="pending", expires_at=LATER + timedelta(hours=1))
        )
    session.commit()
    report = purge_expired(session=session, now=LATER, retention_days=DAYS, actor="t")
    assert report.patients == 0
    patient = session.get(Patient, ada)
    assert patient is not None and patient.first_name == "Ada"


def test_purge_skips_a_patient_another_process_holds(
    session: so.Session, history: dict[str, Any], engine: sa.Engine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks with SKIP LOCKED are PostgreSQL's")
    with engine.connect() as other:
        other.execute(
            sa.text("SELECT id FROM patients WHERE id = :id FOR UPDATE"), {"id": history["ada"]}
        )
        held = purge_expired(session=session, now=LATER, retention_days=DAYS, actor="t")
        assert held.patients == 0  # skipped, not waited for
        other.rollback()
    assert purge_expired(session=session, now=LATER, retention_days=DAYS, actor="t").patients == 1


def test_a_purged_patient_s_page_still_opens(
    app: Flask, signed_in: Callable[[str], Any], session: so.Session, history: dict[str, Any]
) -> None:
    from tests.web.conftest import ADMIN

    purge_expired(session=session, now=LATER, retention_days=DAYS, actor="t")
    admin = signed_in(ADMIN)
    for url in (f"/patients/{history['ada']}", "/patients", "/log", "/attention", "/audit"):
        page = admin.get(url)
        assert page.status_code == 200, url
        text = page.get_data(as_text=True)
        assert "Moreno" not in text and "0143" not in text, url
    assert REMOVED in admin.get(f"/patients/{history['ada']}").get_data(as_text=True)
    assert "patient.purged" in admin.get("/audit").get_data(as_text=True)


def test_the_scheduler_purges_daily_and_soon_after_start(runtime: Runtime) -> None:
    scheduler = build_scheduler(runtime, blocking=False)
    job = scheduler.get_job("purge")
    assert job.trigger.interval == timedelta(days=1)
    assert job.next_run_time - datetime.now(UTC) < timedelta(minutes=11)


@pytest.mark.slow
def test_purge_from_the_command_line(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "clinic"
    folder.mkdir()
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{folder / 'followup.db'}"
    cli = Cli(folder, database_url)
    cli.run("db", "upgrade")
    enrolled = "2026-03-06T20:00:00+00:00"
    cli.run(
        "--now", enrolled,
        "enroll", "--first-name", "Ada", "--last-name", "Moreno", "--phone", "202-555-0143",
        "--procedure", "kyphoplasty", "--completed-at", "2026-03-06T14:30",
        "--timezone", "America/New_York", "--no-blood-thinner", "--consent",
    )  # fmt: skip
    cli.run("--now", enrolled, "tick")
    later = "2027-04-11T20:00:00+00:00"  # 401 days on

    dry = cli.run("--now", later, "purge", "--dry-run").stdout.splitlines()
    assert dry == [
        "retention 400 days: patients whose last procedure ended before 2026-03-07 20:00 UTC",
        "would remove: 1 patients, 1 texts, 0 replies, 0 replies from unknown numbers",
        "dry run: nothing was changed",
    ]
    done = cli.run("--now", later, "purge").stdout.splitlines()
    assert done[1] == "removed: 1 patients, 1 texts, 0 replies, 0 replies from unknown numbers"
    again = cli.run("--now", later, "purge").stdout.splitlines()
    assert again[1] == "removed: 0 patients, 0 texts, 0 replies, 0 replies from unknown numbers"
    rows = list(csv.DictReader(io.StringIO(cli.run("log", "--csv").stdout)))
    statuses = {row["step"]: row["status"] for row in rows}
    assert statuses["no-driving"] == "sent"
    assert next(r for r in rows if r["step"] == "no-driving")["sent_at"] == enrolled
    assert "receiving texts" in cli.run("schedule", "1").stdout


def test_the_daily_purge_deletes_import_reports_after_30_days(session: so.Session) -> None:
    from followup.imports.models import ImportRow, ImportRun

    for days_ago in (31, 29):
        run = ImportRun(
            created_at=START - timedelta(days=days_ago),
            created_by="nurse@example.org",
            filename="patients.csv",
            status="done",
        )
        session.add(run)
        session.flush()
        session.add(
            ImportRow(
                run_id=run.id,
                seq=1,
                ref="line 2",
                patient="Ada Moreno, +1******0143",
                outcome="planned",
                detail="6 texts",
            )
        )
    session.commit()

    report = purge_expired(session=session, now=START, retention_days=DAYS, actor="scheduler")

    assert report.import_reports == 1
    session.expire_all()
    assert [r.created_at for r in session.scalars(sa.select(ImportRun))] == [
        START - timedelta(days=29)
    ]
    assert session.scalar(sa.select(sa.func.count()).select_from(ImportRow)) == 1
