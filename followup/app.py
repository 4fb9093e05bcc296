"""The Flask app factory."""

from __future__ import annotations

from flask import Flask

from followup.clock import SystemClock
from followup.runtime import Runtime, build_runtime
from followup.settings import Settings


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> Flask:
    """Build the web app and register one blueprint per domain.

    `runtime` lets an entry point (or a test) share its engine, clock and transport.
    """
    runtime = runtime or build_runtime(settings, SystemClock())
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=runtime.settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=runtime.settings.is_production,
    )
    app.extensions["followup"] = runtime

    from followup.health.views import bp as health_bp

    app.register_blueprint(health_bp)

    from followup.messaging.views import bp as twilio_bp

    app.register_blueprint(twilio_bp)
    return app
