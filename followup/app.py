"""The Flask app factory."""

from __future__ import annotations

from flask import Flask

from followup.clock import SystemClock
from followup.imports.source import MAX_UPLOAD_BYTES
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
        # The largest request body accepted (an import file and its form), refused with 413
        # from its Content-Length before it is read.
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
    )
    app.extensions["followup"] = runtime

    from followup.health.views import bp as health_bp

    app.register_blueprint(health_bp)

    from followup.messaging.views import bp as twilio_bp

    app.register_blueprint(twilio_bp)

    from followup.accounts.views import bp as accounts_bp
    from followup.audit.views import bp as audit_bp
    from followup.imports.views import bp as imports_bp
    from followup.patients.views import bp as patients_bp
    from followup.sendlog.views import bp as sendlog_bp

    app.register_blueprint(accounts_bp)
    app.register_blueprint(sendlog_bp)  # owns "/": the admins' dashboard
    app.register_blueprint(patients_bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(imports_bp)

    # After every blueprint: sign-in gate, CSRF (Twilio's webhooks exempt), error pages.
    from followup.web import init_web

    init_web(app)
    return app


def wsgi_app() -> Flask:
    """Build the app from the environment, for a WSGI server: gunicorn 'followup.app:wsgi_app()'."""
    from followup.settings import load_settings

    return create_app(load_settings())
