"""The Flask app factory."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from followup.clock import SystemClock
from followup.runtime import Runtime, build_runtime
from followup.settings import Settings

MAX_REQUEST_BYTES = 1024 * 1024


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
        # No form is anywhere near this (the import upload has its own limit: web.py); a
        # larger body is refused (413) unread.
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
    )
    app.extensions["followup"] = runtime
    if runtime.settings.trusted_proxies:
        # The client's address (sign-in throttles, audit) from X-Forwarded-For, as set
        # by this many proxies in front; without them, the proxy's own address.
        hops = runtime.settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    from followup.web import BoundedIntConverter

    app.url_map.converters["int"] = BoundedIntConverter  # before any route is added

    from followup.health.views import bp as health_bp

    app.register_blueprint(health_bp)

    from followup.messaging.views import bp as twilio_bp

    app.register_blueprint(twilio_bp)

    from followup.accounts.views import bp as accounts_bp
    from followup.audit.views import bp as audit_bp
    from followup.imports.views import bp as imports_bp
    from followup.inbox.views import bp as inbox_bp
    from followup.patients.views import bp as patients_bp
    from followup.sendlog.views import bp as sendlog_bp

    app.register_blueprint(accounts_bp)
    app.register_blueprint(sendlog_bp)  # owns "/": the admins' dashboard
    app.register_blueprint(patients_bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(inbox_bp)  # /attention, and the header's counts on every page
    app.register_blueprint(imports_bp)  # /import

    from followup.ops.views import init_ops

    init_ops(app)  # /metrics, webhook counts

    # After every blueprint: sign-in gate, CSRF (Twilio's webhooks exempt), error pages.
    from followup.web import init_web

    init_web(app)
    return app


def wsgi_app() -> Flask:
    """Build the app from the environment, for a WSGI server: gunicorn 'followup.app:wsgi_app()'."""
    from followup.ops.logs import configure_logging
    from followup.settings import load_settings

    settings = load_settings()
    configure_logging(log_format=settings.log_format)
    return create_app(settings)
