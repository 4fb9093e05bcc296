"""`GET /metrics` for Prometheus: off unless METRICS_TOKEN is set, then bearer-token only.

Also counts Twilio's webhook requests by outcome, as they leave the app.
"""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Flask, Response, current_app, request

from followup.ops.metrics import exposition, token_matches
from followup.runtime import Runtime

bp = Blueprint("ops", __name__)

# Twilio's webhook endpoints, as the `endpoint` label names them.
WEBHOOK_ENDPOINTS = {"twilio.status_callback": "status", "twilio.inbound": "inbound"}
# The statuses a delivery report can carry; anything else is counted as "other".
REPORTED_STATUSES = frozenset(
    {"accepted", "scheduled", "queued", "sending", "sent", "delivered", "read"}
    | {"undelivered", "failed", "canceled"}
)


def _runtime() -> Runtime:
    return cast(Runtime, current_app.extensions["followup"])


@bp.get("/metrics")
def metrics() -> Response:
    runtime = _runtime()
    token = runtime.settings.metrics_token
    if token is None:
        return Response("metrics are off: set METRICS_TOKEN\n", 404, mimetype="text/plain")
    if not token_matches(request.headers.get("Authorization"), token):
        return Response(
            "a bearer token is required\n",
            401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    body, content_type = exposition(runtime.metrics.registry, request.headers.get("Accept"))
    return Response(body, 200, content_type=content_type)


def webhook_outcome(status_code: int) -> str:
    """Say what a webhook response status means, in one word."""
    if status_code < 400:
        return "accepted"
    if status_code == 403:
        return "refused"  # missing or wrong X-Twilio-Signature
    if status_code < 500:
        return "bad_request"
    return "error"


def _count_webhook(response: Response) -> Response:
    endpoint = WEBHOOK_ENDPOINTS.get(request.endpoint or "")
    if endpoint is None:
        return response
    metrics = _runtime().metrics
    outcome = webhook_outcome(response.status_code)
    metrics.webhook_requests.labels(endpoint, outcome).inc()
    if endpoint == "status" and outcome == "accepted":
        reported = (
            request.form.get("MessageStatus") or request.form.get("SmsStatus") or ""
        ).lower()
        metrics.delivery_reports.labels(
            reported if reported in REPORTED_STATUSES else "other"
        ).inc()
    return response


def init_ops(app: Flask) -> None:
    """Serve /metrics, count webhook requests and report the database's figures."""
    runtime = cast(Runtime, app.extensions["followup"])
    runtime.metrics.watch_database(
        session_factory=runtime.session_factory, care=runtime.care, clock=runtime.clock
    )
    app.register_blueprint(bp)
    app.after_request(_count_webhook)
