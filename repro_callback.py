"""PostgreSQL: a 'delivered' callback arriving while the dispatcher commits the text's SID
is dropped ('kept sent'): its UPDATE sees the old row (no SID yet), its fallback SELECT the
new one, so it is neither applied nor held."""

import tempfile, threading
from datetime import UTC, datetime, timedelta
import sqlalchemy as sa
from alembic import command
from followup.migrate import alembic_config
from followup.clock import FakeClock
from followup.db import make_engine, make_session_factory, commit_with_retry
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import Message, MessageEvent
from followup.messaging.status import record_status_callback, hold_status_report
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.service import enroll_patient
from followup.patients.validation import EnrollmentForm
from followup.runtime import build_care
from followup.settings import Settings
from tests.fakes.twilio_server import FakeTwilio

url = "postgresql+psycopg://postgres@127.0.0.1:5432/soak"
e = make_engine(url)
with e.begin() as c:
    c.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
    c.execute(sa.text("CREATE SCHEMA public"))
e.dispose()
command.upgrade(alembic_config(url), "head")
clock = FakeClock(datetime(2026, 3, 6, 20, 0, tzinfo=UTC))
fake = FakeTwilio(now=clock.now).start()
settings = Settings(
    database_url=url,
    sms_transport="twilio",
    twilio_account_sid=fake.account_sid,
    twilio_auth_token=fake.auth_token,
    twilio_from_number="+12025550199",
    twilio_api_base_url=fake.base_url,
    twilio_timeout_seconds=2,
    clinic_name="Riverside Spine Center",
    clinic_phone="(202) 555-0100",
)
care = build_care(settings)
transport = TwilioTransport.from_settings(settings)
d_engine, c_engine = make_engine(url), make_engine(url)
with make_session_factory(d_engine)() as s:
    enroll_patient(
        session=s,
        form=EnrollmentForm(
            first_name="Ada",
            last_name="Moreno",
            phone="(202) 555-0143",
            procedure="kyphoplasty",
            timezone="America/New_York",
            completed_at="2026-03-06T14:00",
            takes_blood_thinner=False,
            consent=True,
        ),
        care=care,
        region="US",
        now=clock.now(),
        actor="nurse",
    )
    s.commit()

c_updated, d_committed = threading.Event(), threading.Event()
result = {}


def callback(sid):  # what POST /twilio/status does
    with make_session_factory(c_engine)() as s:

        def work():
            r = record_status_callback(
                session=s, provider_sid=sid, status="delivered", error_code=None, now=clock.now()
            )
            result["changed"] = r
            if r is None:
                hold_status_report(
                    session=s,
                    provider_sid=sid,
                    status="delivered",
                    error_code=None,
                    now=clock.now(),
                )

        commit_with_retry(s, work)


@sa.event.listens_for(c_engine, "after_cursor_execute")
def after_c(conn, cursor, statement, *a):
    if statement.lstrip().upper().startswith("UPDATE MESSAGES"):
        c_updated.set()  # the callback's guarded UPDATE has run (and matched nothing)
        d_committed.wait(10)  # the dispatcher commits before the callback's fallback SELECT


armed = {"on": True}


@sa.event.listens_for(d_engine, "after_cursor_execute")
def after_d(conn, cursor, statement, params, *a):
    if (
        armed["on"]
        and statement.lstrip().upper().startswith("UPDATE MESSAGES")
        and "provider_sid" in statement.split("WHERE")[0]
    ):
        armed["on"] = False  # record_sent's UPDATE: Twilio's callback arrives now
        sid = next(iter(fake.messages))
        threading.Thread(target=callback, args=(sid,)).start()
        c_updated.wait(10)


@sa.event.listens_for(d_engine, "commit")
def on_commit(conn):
    if not armed["on"]:
        d_committed.set()


with (
    make_session_factory(d_engine)() as s,
    Dispatcher(transport=transport, care=care, clock=clock, owner="w", concurrency=1) as d,
):
    print("dispatch:", d.dispatch(s))
import time

time.sleep(1)
with make_session_factory(d_engine)() as s:
    m = s.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    print(
        "callback returned:",
        result,
        "| final:",
        m.status,
        m.provider_sid,
        "| Twilio says delivered",
    )
    for ev in s.scalars(
        sa.select(MessageEvent).where(MessageEvent.message_id == m.id).order_by(MessageEvent.id)
    ):
        print("   ", ev.kind, ev.status, ev.detail)
    print("held reports:", s.scalar(sa.text("select count(*) from held_status_reports")))
transport.close()
fake.stop()
