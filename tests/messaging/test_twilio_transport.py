"""The real TwilioTransport and the real twilio client against the fake Twilio server."""

from __future__ import annotations

import base64
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from email.utils import format_datetime

import pytest
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.errors import ConfigurationError
from followup.messaging.errors import ERROR_POLICY
from followup.messaging.models import CANCELLED, FAILED, PENDING, SENDING, SENT
from followup.messaging.retries import HANDOVER_MARGIN
from followup.messaging.transports import build_transport
from followup.messaging.transports.base import (
    OutgoingSms,
    PermanentSendError,
    TransientSendError,
)
from followup.messaging.transports.twilio import (
    CONNECT_TIMEOUT,
    RECONCILE_SCAN,
    RoutedHttpClient,
    TwilioTransport,
    retry_after_seconds,
)
from followup.patients.models import Patient
from followup.patients.validation import EnrollmentResult
from followup.settings import Settings, settings_from_mapping
from tests.fakes.twilio_server import FakeError, FakeTwilio
from tests.messaging.conftest import FROM_NUMBER, PUBLIC_BASE_URL
from tests.messaging.helpers import dispatch, messages

PHONE = "+12025550143"
MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$")


def sms(
    clock: FakeClock, body: str = "Riverside Spine Center: hello", to: str = PHONE
) -> OutgoingSms:
    return OutgoingSms(message_id=1, step="no-driving", to=to, body=body, now=clock.now())


# --- sending ------------------------------------------------------------------------------


def test_transport_send_creates_one_valid_message(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    result = twilio_transport.send(sms(clock))

    [request] = twilio_fake.requests
    assert request.method == "POST"
    assert MESSAGES_PATH.match(request.path)
    assert request.form == {
        "To": PHONE,
        "From": FROM_NUMBER,
        "Body": "Riverside Spine Center: hello",
        "StatusCallback": PUBLIC_BASE_URL + "/twilio/status",
    }
    credentials = f"{twilio_fake.account_sid}:{twilio_fake.auth_token}".encode()
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(credentials).decode()
    [stored] = twilio_fake.messages.values()
    assert result.provider_sid == stored["sid"]
    assert result.provider_status == "queued"
    assert result.segments == 1


def test_transport_send_counts_segments_of_a_long_text(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    result = twilio_transport.send(sms(clock, body="x" * 200))
    assert result.segments == 2


def test_transport_sends_through_a_messaging_service(
    twilio_fake: FakeTwilio, twilio_settings: Settings, clock: FakeClock
) -> None:
    settings = replace(
        twilio_settings, twilio_from_number=None, twilio_messaging_service_sid="MG" + "a" * 32
    )
    transport = TwilioTransport.from_settings(settings)
    try:
        transport.send(sms(clock))
    finally:
        transport.close()
    [form] = twilio_fake.creates()
    assert form["MessagingServiceSid"] == "MG" + "a" * 32
    assert "From" not in form


def test_transport_without_public_base_url_sets_no_status_callback(
    twilio_fake: FakeTwilio, twilio_settings: Settings, clock: FakeClock
) -> None:
    transport = TwilioTransport.from_settings(replace(twilio_settings, public_base_url=None))
    try:
        transport.send(sms(clock))
    finally:
        transport.close()
    [form] = twilio_fake.creates()
    assert "StatusCallback" not in form


def test_transport_passes_a_timeout_to_every_request(
    twilio_fake: FakeTwilio, twilio_settings: Settings, clock: FakeClock
) -> None:
    transport = TwilioTransport.from_settings(replace(twilio_settings, twilio_timeout_seconds=0.3))
    twilio_fake.latency_after_accept = 1.0
    started = time.monotonic()
    try:
        with pytest.raises(TransientSendError) as caught:
            transport.send(sms(clock))
    finally:
        transport.close()
    assert time.monotonic() - started < 0.9
    assert caught.value.code == "timeout"
    assert caught.value.maybe_sent is True  # the create had left: reconcile before resending
    assert len(twilio_fake.messages) == 1


def test_transport_connection_refused_is_transient_and_not_sent(
    twilio_settings: Settings, clock: FakeClock
) -> None:
    with FakeTwilio() as closed:  # a port that was free a moment ago and is closed now
        url = closed.base_url
    transport = TwilioTransport.from_settings(replace(twilio_settings, twilio_api_base_url=url))
    try:
        with pytest.raises(TransientSendError) as caught:
            transport.send(sms(clock))
    finally:
        transport.close()
    assert caught.value.code == "network"
    assert caught.value.maybe_sent is False


def test_routed_http_client_rewrites_scheme_and_host_only() -> None:
    client = RoutedHttpClient(timeout=1, base_url="http://127.0.0.1:8080/mock/")
    try:
        routed = client.route("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?To=x")
    finally:
        client.close()
    assert routed == "http://127.0.0.1:8080/mock/2010-04-01/Accounts/AC1/Messages.json?To=x"


def test_routed_http_client_without_base_url_leaves_twilio_alone() -> None:
    client = RoutedHttpClient(timeout=1)
    try:
        url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
        assert client.route(url) == url
    finally:
        client.close()


def test_build_transport_builds_twilio_from_the_environment(twilio_fake: FakeTwilio) -> None:
    settings = settings_from_mapping(
        {
            "TWILIO_ACCOUNT_SID": twilio_fake.account_sid,
            "TWILIO_AUTH_TOKEN": twilio_fake.auth_token,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_API_BASE_URL": twilio_fake.base_url,
            "TWILIO_TIMEOUT_SECONDS": "3.5",
        }
    )
    transport = build_transport(settings)
    assert isinstance(transport, TwilioTransport)
    assert transport.http.timeout == (1.5, 3.5)  # (connect, read)
    transport.close()


def test_a_create_that_cannot_connect_is_given_up_within_the_hand_over_margin(
    clock: FakeClock,
) -> None:
    # A server whose accept queue is full: the connection attempt hangs (Linux drops the
    # SYN). The request must fail unsent within the connect timeout, which is under the
    # 2 s margin the dispatcher keeps before an expiry or quiet hours: a create never
    # reaches Twilio late because it took long to connect. Not by the 20 s read timeout.
    assert CONNECT_TIMEOUT < HANDOVER_MARGIN.total_seconds()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # fill the accept queue; further attempts hang
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        transport = TwilioTransport(
            account_sid="AC" + "0" * 32,
            auth_token="token",
            from_number=FROM_NUMBER,
            api_base_url=f"http://127.0.0.1:{port}",
            timeout=20.0,
        )
        started = time.monotonic()
        with pytest.raises(TransientSendError) as caught:
            transport.send(sms(clock, body="never connected"))
        elapsed = time.monotonic() - started
        transport.close()
    finally:
        for filler in fillers:
            filler.close()
        server.close()
    assert not caught.value.maybe_sent  # it never left: retried, not reconciled
    assert elapsed < 10  # the connect timeout (1.5 s), far from the read timeout (20 s)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TWILIO_TIMEOUT_SECONDS", "0"),
        ("TWILIO_TIMEOUT_SECONDS", "soon"),
        ("TWILIO_TIMEOUT_SECONDS", "30"),  # a lease that long breaks the 2-minute promise
        ("STATUS_POLL_AFTER_MINUTES", "0"),
        ("TWILIO_API_BASE_URL", "127.0.0.1:8080"),
    ],
)
def test_settings_refuse_bad_twilio_values(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        settings_from_mapping({name: value})


def test_twilio_transport_needs_credentials() -> None:
    with pytest.raises(ConfigurationError, match="TWILIO_ACCOUNT_SID"):
        settings_from_mapping({"SMS_TRANSPORT": "twilio", "TWILIO_FROM_NUMBER": FROM_NUMBER})
    with pytest.raises(ConfigurationError, match="TWILIO_AUTH_TOKEN"):
        TwilioTransport.from_settings(Settings(twilio_account_sid="AC1"))


def test_transport_logs_no_phone_number_or_body(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    body = "Riverside Spine Center: secret words"
    twilio_transport.send(sms(clock, body=body))
    twilio_transport.find_sent(to=PHONE, body=body, since=clock.now())
    twilio_fake.errors[PHONE] = FakeError(21211, 400, f"The 'To' number {PHONE} is not valid.")
    with pytest.raises(PermanentSendError) as caught:
        twilio_transport.send(sms(clock, body=body))
    logged = caplog.text
    assert "twilio request POST" in logged  # the client's own logging goes through ours
    for secret in (PHONE, PHONE[1:], "5550143", "secret words"):
        assert secret not in logged
        assert secret not in caught.value.message  # error text reaches the send log


# --- reconciliation and status lookups ----------------------------------------------------


def test_find_sent_matches_body_recipient_and_creation_time(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    since = clock.now()
    twilio_fake.add_message(to=PHONE, body="wanted", created=since - timedelta(minutes=10))
    twilio_fake.add_message(to=PHONE, body="other", created=since + timedelta(seconds=5))
    twilio_fake.add_message(to="+12025550144", body="wanted", created=since)
    twilio_fake.add_message(to=PHONE, body="wanted", created=since, direction="inbound")
    assert twilio_transport.find_sent(to=PHONE, body="wanted", since=since) is None

    clock.advance(timedelta(seconds=30))
    queued = twilio_fake.add_message(to=PHONE, body="wanted", status="queued")  # no date_sent
    found = twilio_transport.find_sent(to=PHONE, body="wanted", since=since)
    assert found is not None
    assert found.provider_sid == queued["sid"]
    assert found.provider_status == "queued"
    lists = [r for r in twilio_fake.requests if r.method == "GET"]
    assert all(r.query["To"] == PHONE for r in lists)


def test_find_sent_follows_pages(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    since = clock.now()
    first = twilio_fake.add_message(to=PHONE, body="the one")
    for i in range(60):
        clock.advance(timedelta(seconds=1))
        twilio_fake.add_message(to=PHONE, body=f"newer {i}")
    found = twilio_transport.find_sent(to=PHONE, body="the one", since=since)
    assert found is not None and found.provider_sid == first["sid"]
    assert len([r for r in twilio_fake.requests if r.method == "GET"]) == 2


def test_find_sent_cut_short_before_the_hand_over_is_not_taken_for_absence(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    # A number many texts go to (a care home's desk, which several patients share): after
    # ours, Twilio created RECONCILE_SCAN more to it. The scan stops at its cap before it
    # reaches ours, or anything older than the hand-over: that is not Twilio saying it has
    # no such text, and the text must not go again on it.
    since = clock.now()
    ours = twilio_fake.add_message(to=PHONE, body="the one", status="queued")
    for i in range(RECONCILE_SCAN):
        clock.advance(timedelta(seconds=1))
        twilio_fake.add_message(to=PHONE, body=f"newer {i}")
    with pytest.raises(LookupError):
        twilio_transport.find_sent(to=PHONE, body="the one", since=since)
    # Nor is a scan cut short past texts older than the hand-over: how Twilio orders its
    # list, and where texts it has not sent yet go, is not documented.
    del twilio_fake.messages[ours["sid"]]
    with pytest.raises(LookupError):
        twilio_transport.find_sent(to=PHONE, body="the one", since=clock.now())
    # Under the cap, the whole list was read: absent.
    for sid in list(twilio_fake.messages)[:2]:
        del twilio_fake.messages[sid]
    assert twilio_transport.find_sent(to=PHONE, body="the one", since=since) is None


def test_find_sent_cut_short_is_not_taken_for_absence_when_twilio_lists_by_date_sent(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    # Should Twilio's "newest first" mean by DateSent: a text created an hour before our
    # hand-over but queued at Twilio until after it is listed ahead of ours. Were it the
    # last the capped scan saw, its creation date alone would say "past the hand-over,
    # nothing more to see", and ours, listed after it, would be found missing and sent
    # again.
    twilio_fake.list_order = "sent"
    since = clock.now()
    twilio_fake.add_message(to=PHONE, body="the one")  # ours, sent at once
    clock.advance(timedelta(seconds=1))
    late = twilio_fake.add_message(to=PHONE, body="old", created=since - timedelta(hours=1),
                                   status="queued")  # fmt: skip
    clock.advance(timedelta(seconds=1))
    twilio_fake.set_status(late["sid"], "delivered")
    for i in range(RECONCILE_SCAN - 1):
        clock.advance(timedelta(seconds=1))
        twilio_fake.add_message(to=PHONE, body=f"newer {i}")
    with pytest.raises(LookupError):
        twilio_transport.find_sent(to=PHONE, body="the one", since=since)


@pytest.mark.parametrize("order", ["created", "sent", "sent-unsent-last"])
def test_find_sent_cut_short_never_says_absent_of_a_queued_text_in_any_order(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock, order: str
) -> None:
    # Ours is still queued at Twilio (no DateSent yet), RECONCILE_SCAN - 1 newer texts to
    # the number went out after it, and a few older ones before the hand-over. Listed by
    # DateSent with unsent texts after the sent ones (DESC puts NULLs last in MySQL; Twilio
    # documents neither the order nor where unsent texts go), the capped scan ends at an
    # old text both created and sent before `since`: taken for "not at Twilio", the text
    # would be sent a second time. It must find ours, or raise CannotTell: never None.
    twilio_fake.list_order = order
    since = clock.now()
    for i in range(3):
        twilio_fake.add_message(to=PHONE, body=f"older {i}", created=since - timedelta(hours=i + 1))
    ours = twilio_fake.add_message(to=PHONE, body="the one", status="queued")
    for i in range(RECONCILE_SCAN - 1):
        clock.advance(timedelta(seconds=1))
        twilio_fake.add_message(to=PHONE, body=f"newer {i}")
    try:
        found = twilio_transport.find_sent(to=PHONE, body="the one", since=since)
    except LookupError:
        return  # CannotTell: held for a person, not sent again
    assert found is not None, "a queued text at Twilio taken for absent: it would go twice"
    assert found.provider_sid == ours["sid"]


def test_find_sent_429_is_raised_as_throttled(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    # The reaper stops its pass on a TransientSendError marked `throttled`. The official
    # client raises a 429 list page as a bare TwilioException("Unable to fetch page",
    # response), with no status or code of its own: read from the response, not taken for
    # an ordinary error.
    twilio_fake.list_faults[PHONE] = {0: FakeError(20429, 429, "Too Many Requests", "45")}
    with pytest.raises(TransientSendError) as raised:
        twilio_transport.find_sent(to=PHONE, body="the one", since=clock.now())
    assert raised.value.throttled
    assert raised.value.retry_after == 45


def test_find_sent_retry_after_date_is_counted_from_now_not_from_since(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    # A Retry-After given as an HTTP date 45 s ahead, about a text handed over an hour
    # ago: 45 s from the answer (its Date), not 3,645 s from the hand-over.
    until = format_datetime(clock.now() + timedelta(seconds=45), usegmt=True)
    twilio_fake.list_faults[PHONE] = {0: FakeError(20429, 429, "Too Many Requests", until)}
    with pytest.raises(TransientSendError) as raised:
        twilio_transport.find_sent(to=PHONE, body="the one", since=clock.now() - timedelta(hours=1))
    assert raised.value.retry_after is not None and 44 <= raised.value.retry_after <= 46


def test_find_sent_error_is_raised_not_taken_for_absence(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    twilio_fake.fail_next = 1
    with pytest.raises(TransientSendError):
        twilio_transport.find_sent(to=PHONE, body="x", since=clock.now())


def test_fetch_status_reads_status_and_error_code(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    sid = twilio_transport.send(sms(clock)).provider_sid
    twilio_fake.set_status(sid, "undelivered", error_code=30005)
    status = twilio_transport.fetch_status(sid)
    assert (status.status, status.error_code) == ("undelivered", 30005)


def test_retry_after_reads_seconds_and_http_dates(clock: FakeClock) -> None:
    assert retry_after_seconds({"Retry-After": "120"}, now=clock.now()) == 120
    later = "Fri, 06 Mar 2026 20:05:00 GMT"  # clock.now() is 20:00 UTC
    assert retry_after_seconds({"Retry-After": later}, now=clock.now()) == 300
    # A date is counted from the answer's own Date (Twilio's clock), when it has one.
    sent = "Fri, 06 Mar 2026 20:04:00 GMT"
    assert retry_after_seconds({"Retry-After": later, "Date": sent}, now=clock.now()) == 60
    assert retry_after_seconds({"Retry-After": later, "Date": sent}, now=None) == 60
    assert retry_after_seconds({"Retry-After": later}, now=None) is None
    assert retry_after_seconds({"Retry-After": "whenever"}, now=clock.now()) is None
    assert retry_after_seconds({}, now=clock.now()) is None


# --- the error policy, one test per row, through the dispatcher ---------------------------

PERMANENT = [21211, 21614, 21408, 30005, 30006]
TRANSIENT = [(20429, 429), (21611, 400), (30001, 400)]


def test_error_policy_table_is_covered_by_these_tests() -> None:
    tested = set(PERMANENT) | {code for code, _ in TRANSIENT} | {21610}
    assert tested == set(ERROR_POLICY)


@pytest.fixture
def enrolled(enroll: Callable[..., EnrollmentResult]) -> EnrollmentResult:
    # A blood thinner, so the patient has several texts pending after the first is sent.
    return enroll(blood_thinner="warfarin")


@pytest.mark.parametrize("code", PERMANENT)
def test_error_policy_permanent_code_fails_the_text(
    code: int,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    twilio_fake.errors[PHONE] = FakeError(code, 400, "no")
    report = dispatch(session, twilio_transport, care, clock.now())
    texts = messages(session)
    assert report.failed == 1
    assert texts["no-driving"].status == FAILED
    assert texts["no-driving"].error_code == str(code)
    assert texts["no-driving"].attempts == 1
    assert texts["soreness"].status == PENDING  # the patient is not opted out
    assert session.get(Patient, enrolled.patient.id).opted_out_at is None  # type: ignore[union-attr]


def test_error_policy_21610_opts_the_patient_out_and_cancels_pending_texts(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    twilio_fake.errors[PHONE] = FakeError(21610, 400, "Attempt to send to unsubscribed recipient")
    dispatch(session, twilio_transport, care, clock.now())
    texts = messages(session)
    assert texts["no-driving"].status == FAILED
    assert texts["no-driving"].error_code == "21610"
    assert {texts[s].status for s in texts if s != "no-driving"} == {CANCELLED}
    patient = session.get(Patient, enrolled.patient.id)
    assert patient is not None and patient.opted_out_at == clock.now()
    # Nothing more goes to this number, however long we wait.
    clock.advance(timedelta(days=8))
    dispatch(session, twilio_transport, care, clock.now())
    assert len(twilio_fake.creates()) == 1


@pytest.mark.parametrize(("code", "status"), TRANSIENT)
def test_error_policy_transient_code_retries_later(
    code: int,
    status: int,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    twilio_fake.errors[PHONE] = FakeError(code, status, "busy")
    report = dispatch(session, twilio_transport, care, clock.now())
    text = messages(session)["no-driving"]
    if status == 429:  # too many requests: the dispatcher slows down, the text keeps its tries
        assert (report.throttled, report.retried, text.attempts) == (1, 0, 0)
        assert twilio_transport.pacer.throttles == 1
    else:
        assert (report.retried, text.attempts) == (1, 1)
    assert text.status == PENDING
    assert text.error_code == str(code)
    assert text.not_before is not None and text.not_before > clock.now()
    # It goes out once the provider takes it again, after the backoff.
    del twilio_fake.errors[PHONE]
    assert dispatch(session, twilio_transport, care, clock.now()).claimed == 0
    clock.set(text.not_before)
    dispatch(session, twilio_transport, care, clock.now())
    text = messages(session)["no-driving"]
    assert text.status == SENT
    assert text.provider_sid in twilio_fake.messages


def test_error_policy_honours_retry_after(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    twilio_fake.errors[PHONE] = FakeError(20429, 429, "Too Many Requests", retry_after="900")
    dispatch(session, twilio_transport, care, clock.now())
    text = messages(session)["no-driving"]
    assert text.status == PENDING
    assert text.not_before is not None
    assert text.not_before >= clock.now() + timedelta(seconds=900)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (FakeError(None, 429, "Too Many Requests"), PENDING),  # HTTP 429 without a code
        (FakeError(20003, 401, "Authenticate"), PENDING),  # our credentials, not the text
        (FakeError(21612, 400, "cannot route"), FAILED),  # any other 4xx: permanent
        (FakeError(20500, 500, "Internal Server Error"), SENDING),  # may exist: reconcile
        (FakeError(None, 503, "Service Unavailable"), SENDING),
    ],
)
def test_error_policy_http_statuses(
    error: FakeError,
    expected: str,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    twilio_fake.errors[PHONE] = error
    dispatch(session, twilio_transport, care, clock.now())
    text = messages(session)["no-driving"]
    assert text.status == expected
    if expected == SENDING:
        assert text.lease_expires_at is not None and text.lease_expires_at > clock.now()
