import io
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.errors import ValidationError
from followup.inbox.queue import critical_text_problems
from followup.messaging.models import Message
from followup.messaging.outbox import OPTED_OUT, record_opt_out
from followup.patients.validation import EnrollmentResult
from followup.sendlog.dashboard import dashboard
from followup.sendlog.service import (
    LogFilter,
    csv_lines,
    decode_cursor,
    iter_log,
    log_page,
    message_history,
    write_csv,
)

Enroll = Callable[..., EnrollmentResult]
NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 6, 20, 0, tzinfo=UTC)


@pytest.fixture
def three_patients(session: so.Session, clock: FakeClock, enroll: Enroll) -> list[EnrollmentResult]:
    clock.set(NOW)
    return [
        enroll(
            first_name="Ada", last_name="Moreno", phone="(202) 555-0143", blood_thinner="Eliquis"
        ),
        enroll(
            first_name="Bo",
            last_name="Lindqvist",
            phone="(202) 555-0177",
            completed_at="2026-03-06T10:00",
        ),
        enroll(
            first_name="Cy",
            last_name="Okafor",
            phone="(202) 555-0199",
            completed_at="2026-03-06T11:00",
        ),
    ]


def test_pages_walk_the_whole_log_newest_first_without_gaps_or_repeats(
    session: so.Session, three_patients: list[EnrollmentResult]
) -> None:
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = log_page(session=session, log_filter=LogFilter(), tz=NY, cursor=cursor, limit=4)
        seen += [row.message.id for row in page.rows]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    total = session.scalar(sa.select(sa.func.count()).select_from(Message))
    assert len(seen) == len(set(seen)) == total == 13
    assert pages == 4
    dues = [session.get(Message, i).due_at for i in seen]  # type: ignore[union-attr]
    assert dues == sorted(dues, reverse=True)


def test_filters_by_status_step_search_and_local_dates(
    session: so.Session, three_patients: list[EnrollmentResult]
) -> None:
    def ids(**kw: object) -> set[int]:
        page = log_page(session=session, log_filter=LogFilter(**kw), tz=NY, limit=100)  # type: ignore[arg-type]
        return {row.message.patient_id for row in page.rows}

    ada, bo, cy = (r.patient.id for r in three_patients)
    assert ids(search="moreno") == {ada}
    assert ids(search="0177") == {bo}
    assert ids(search="555-0199") == {cy}
    assert ids(step="blood-thinner-restart") == {ada}
    assert ids(date_from=date(2026, 3, 13), date_to=date(2026, 3, 13)) == {
        ada,
        bo,
        cy,
    }  # pain checks
    page = log_page(
        session=session,
        log_filter=LogFilter(date_from=date(2026, 3, 7), date_to=date(2026, 3, 7)),
        tz=NY,
    )
    assert {row.message.step for row in page.rows} == {"soreness"}
    assert ids(status="failed") == set()
    with pytest.raises(ValidationError) as excinfo:
        log_page(session=session, log_filter=LogFilter(status="lost"), tz=NY)
    assert excinfo.value.field == "status"
    with pytest.raises(ValidationError, match="before the start"):
        log_page(
            session=session,
            log_filter=LogFilter(date_from=date(2026, 3, 9), date_to=date(2026, 3, 8)),
            tz=NY,
        )


def test_a_forged_cursor_is_refused() -> None:
    with pytest.raises(ValidationError) as excinfo:
        decode_cursor("not-a-cursor")
    assert excinfo.value.field == "cursor"


def test_needs_attention_shows_critical_texts_that_failed_or_an_opt_out_cancelled(
    session: so.Session, three_patients: list[EnrollmentResult], enroll: Enroll
) -> None:
    ada = three_patients[0].patient.id
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == ada, Message.step == "blood-thinner-restart")
        .values(status="failed", error_code="30005", updated_at=NOW)
    )
    session.execute(
        sa.update(Message).where(Message.step == "soreness").values(status="failed", updated_at=NOW)
    )
    # Dee opts out before her restart: cancelled, as the queue shows it. Eve's restart is
    # cancelled otherwise (her procedure was), which needs nobody.
    dee = enroll(first_name="Dee", phone="(202) 555-0188", blood_thinner="warfarin").patient.id
    eve = enroll(first_name="Eve", phone="(202) 555-0166", blood_thinner="warfarin").patient.id
    record_opt_out(session=session, patient_id=dee, now=NOW, reason=f"STOP: {OPTED_OUT}")
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == eve, Message.step == "blood-thinner-restart")
        .values(status="cancelled", updated_at=NOW)
    )
    session.commit()
    critical = frozenset({"blood-thinner-restart"})
    page = log_page(
        session=session, log_filter=LogFilter(needs_attention=True, critical_steps=critical), tz=NY
    )
    listed = sorted((r.message.patient_id, r.message.status) for r in page.rows)
    assert listed == [(ada, "failed"), (dee, "cancelled")]
    problems = critical_text_problems(session=session, critical_steps=critical)
    # The same texts as the queue's critical problems.
    assert sorted((p.patient_id, p.status, p.error_code) for p in problems) == [
        (ada, "failed", "30005"),
        (dee, "cancelled", None),
    ]


def test_history_lists_every_event_oldest_first(
    session: so.Session, three_patients: list[EnrollmentResult]
) -> None:
    message_id = three_patients[0].messages[0].id
    message, patient, events = message_history(session=session, message_id=message_id)
    assert patient.id == three_patients[0].patient.id
    assert [e.kind for e in events] == ["planned"]


def test_csv_streams_in_due_order_with_a_header_and_no_phone_or_body(
    session: so.Session, three_patients: list[EnrollmentResult]
) -> None:
    lines = list(csv_lines(iter_log(session=session, log_filter=LogFilter(), batch=3)))
    assert lines[0].startswith("message_id,patient_id,procedure_id,step,status")
    assert len(lines) == 14
    text = "".join(lines)
    assert "555" not in text and "Moreno" not in text
    stream = io.StringIO()
    assert (
        write_csv(iter_log(session=session, log_filter=LogFilter(status="pending")), stream) == 13
    )


def test_dashboard_counts_local_days_and_groups_failures(
    session: so.Session, three_patients: list[EnrollmentResult]
) -> None:
    ada, bo, _ = (r.patient.id for r in three_patients)
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == ada, Message.step == "no-driving")
        .values(status="delivered", sent_at=NOW, delivered_at=NOW + timedelta(seconds=5))
    )
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == bo, Message.step == "no-driving")
        .values(status="failed", error_code="30006", updated_at=NOW)
    )
    session.commit()
    figures = dashboard(session=session, now=NOW, tz=NY)
    assert (figures.today.sent, figures.today.delivered, figures.today.failed) == (1, 1, 1)
    assert figures.today.delivery_rate == 1.0
    assert figures.failures_by_code == [("30006", 1)]
    assert len(figures.days) == 30
    assert figures.days[-1] == (date(2026, 3, 6), 1, 1, 1)
    assert figures.stuck == 0


def test_dashboard_cache_keeps_closed_days_and_counts_the_live_two_every_time(
    session: so.Session, three_patients: list[EnrollmentResult]
) -> None:
    from followup.sendlog.dashboard import CLOSED_DAY_TTL, DailyCache

    cache = DailyCache()
    ada = three_patients[0].patient.id

    def deliver(step: str, at: datetime) -> None:
        session.execute(
            sa.update(Message)
            .where(Message.patient_id == ada, Message.step == step)
            .values(status="delivered", sent_at=at, delivered_at=at)
        )
        session.commit()

    now = datetime(2026, 3, 13, 20, 0, tzinfo=UTC)  # Friday a week later, 15:00 in New York
    assert dashboard(session=session, now=now, tz=NY, cache=cache).days[-1][1] == 0
    deliver("pain-check", now - timedelta(hours=1))  # today: live
    deliver("warning-signs", datetime(2026, 3, 12, 15, 0, tzinfo=UTC))  # yesterday: live
    deliver("soreness", datetime(2026, 3, 7, 15, 0, tzinfo=UTC))  # a closed day: cached
    days = {
        d: (sent, delivered)
        for d, sent, delivered, _ in dashboard(session=session, now=now, tz=NY, cache=cache).days
    }
    assert days[date(2026, 3, 13)] == (1, 1)
    assert days[date(2026, 3, 12)] == (1, 1)
    assert days[date(2026, 3, 7)] == (0, 0)  # still the cached count...
    later = now + CLOSED_DAY_TTL
    days = {
        d: (sent, delivered)
        for d, sent, delivered, _ in dashboard(session=session, now=later, tz=NY, cache=cache).days
    }
    assert days[date(2026, 3, 7)] == (1, 1)  # ...until it expires
    uncached = dashboard(session=session, now=later, tz=NY).days
    assert dashboard(session=session, now=later, tz=NY, cache=cache).days == uncached
