"""Health check for load balancers and `make run`."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from followup.runtime import Runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    runtime: Runtime = current_app.extensions["followup"]
    try:
        with runtime.session_factory() as session:
            session.execute(sa.text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means unhealthy
        return jsonify(status="error", database="unreachable"), 503
    return jsonify(status="ok", database="ok", transport=runtime.transport.name)
