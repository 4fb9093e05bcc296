"""Twilio's webhooks: delivery status callbacks and replies, both signed by Twilio.

The signature is checked against PUBLIC_BASE_URL + the path, the URL Twilio was given,
not the URL this process sees: behind a TLS-terminating proxy those differ.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

import sqlalchemy.orm as so
from flask import Blueprint, Response, abort, current_app, request
from flask.typing import ResponseReturnValue
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.twiml.messaging_response import MessagingResponse  # type: ignore[import-untyped]

from followup.db import commit_with_retry
from followup.inbox.alerts import record_alert_status
from followup.messaging.replies import record_inbound
from followup.messaging.status import hold_status_report, record_status_callback
from followup.runtime import Runtime

log = logging.getLogger(__name__)

bp = Blueprint("twilio", __name__, url_prefix="/twilio")

SIGNATURE_HEADER = "X-Twilio-Signature"
# Twilio's webhook bodies are a few kilobytes (a reply is at most 1,600 characters); a
# larger request is refused (413) before it is read, signature checked or stored.
MAX_WEBHOOK_BYTES = 64 * 1024
# Field lengths checked before anything is stored: the columns' sizes, and Twilio's own
# bounds (a SID is 34 characters, a reply at most 1,600).
MAX_LENGTHS = {
    "MessageSid": 64,
    "SmsSid": 64,
    "MessageStatus": 16,
    "SmsStatus": 16,
    "ErrorCode": 8,
    "From": 32,
    "Body": 1600,
    "OptOutType": 16,
}
F = TypeVar("F", bound=Callable[[], ResponseReturnValue])


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["followup"]
    return runtime


def signed_by_twilio(view: F) -> F:
    """Refuse (403) a request without a valid X-Twilio-Signature; nothing else runs."""

    @wraps(view)
    def wrapper() -> ResponseReturnValue:
        settings = _runtime().settings
        request.max_content_length = MAX_WEBHOOK_BYTES  # also bounds a chunked body
        if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
            log.warning("Twilio webhook %s refused: %s bytes", request.path, request.content_length)
            abort(413)
        if not settings.public_base_url or not settings.twilio_auth_token:
            log.error("Twilio webhook refused: PUBLIC_BASE_URL and TWILIO_AUTH_TOKEN must be set")
            abort(403)
        signature = request.headers.get(SIGNATURE_HEADER, "")
        url = settings.public_base_url.rstrip("/") + request.path
        if request.query_string:
            url += "?" + request.query_string.decode("utf-8", "replace")
        validator = RequestValidator(settings.twilio_auth_token)
        if not signature or not validator.validate(url, request.form, signature):
            log.warning("Twilio webhook %s refused: missing or wrong signature", request.path)
            abort(403)
        for name, limit in MAX_LENGTHS.items():
            if len(request.form.get(name, "")) > limit:
                # Only the field's name and length: the value may be a patient's text.
                log.warning(
                    "Twilio webhook %s refused: %s longer than %s characters",
                    request.path,
                    name,
                    limit,
                )
                abort(400)
        return view()

    return wrapper  # type: ignore[return-value]


def _count(raw: str | None) -> int:
    text = (raw or "").strip()
    return int(text) if text.isdigit() else 0


def _error_code(raw: str | None) -> int | None:
    text = (raw or "").strip()
    return int(text) if text.isdigit() else None


@bp.post("/status")
@signed_by_twilio
def status_callback() -> ResponseReturnValue:
    """Record a delivery status report for a text we sent."""
    sid = request.form.get("MessageSid") or request.form.get("SmsSid")
    status = request.form.get("MessageStatus") or request.form.get("SmsStatus")
    if not sid or not status:
        abort(400)
    runtime = _runtime()
    reported = status.strip().lower()
    error_code = _error_code(request.form.get("ErrorCode"))

    def record(session: so.Session) -> None:
        now = runtime.clock.now()
        message = record_status_callback(
            session=session, provider_sid=sid, status=reported, error_code=error_code, now=now,
            care=runtime.care,
        )  # fmt: skip
        # Not a patient's text: perhaps a staff alert's SMS, or a text whose SID the
        # dispatcher has not committed yet (Twilio can call back first): kept until it has.
        if message is None and not record_alert_status(
            session=session, provider_sid=sid, status=reported, now=now
        ):
            hold_status_report(
                session=session, provider_sid=sid, status=reported, error_code=error_code, now=now
            )

    with runtime.session_factory() as session:
        commit_with_retry(session, lambda: record(session))
    return "", 200


@bp.post("/inbound")
@signed_by_twilio
def inbound() -> ResponseReturnValue:
    """Store a patient's reply, triage it, act on keywords, and answer in TwiML."""
    sid = request.form.get("MessageSid") or request.form.get("SmsSid")
    sender = request.form.get("From")
    if not sid or not sender:
        abort(400)
    runtime = _runtime()
    # When the reply came, once: a run again after a deadlock keeps it, so a STOP or START
    # received before one of the other kind recorded meanwhile stays the earlier reply.
    received_at = runtime.clock.now()
    with runtime.session_factory() as session:
        # A STOP cancels the patient's pending texts, which a dispatcher may hold: run
        # again rather than lose the reply if PostgreSQL picks it as a deadlock's victim.
        result = commit_with_retry(
            session,
            lambda: record_inbound(
                session=session,
                provider_sid=sid,
                from_phone=sender.strip(),
                body=request.form.get("Body", ""),
                opt_out_type=request.form.get("OptOutType"),
                care=runtime.care,
                clinic_hours=runtime.settings.clinic_hours,
                clinic_zone=runtime.settings.default_timezone,
                now=received_at,
                media_count=_count(request.form.get("NumMedia")),
            ),
        )
    twiml = MessagingResponse()
    if result.reply:
        twiml.message(result.reply)
    return Response(str(twiml), mimetype="application/xml")
