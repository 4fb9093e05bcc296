"""Web plumbing shared by the blueprints: sign-in gate, CSRF, per-request session, errors.

Every page needs a signed-in user except the sign-in page, the health check, the static
files and Twilio's webhooks (signed by Twilio instead). A few paths are for admins only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import sqlalchemy.exc
import sqlalchemy.orm as so
from flask import (
    Flask,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
)
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter, RateLimitExceeded
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from followup.accounts.sessions import ActiveSession, resume_session
from followup.bounds import MAX_ID
from followup.care.texts import short_local
from followup.care.timing import zone
from followup.errors import NotFound
from followup.logsafe import describe_failure, log_failure
from followup.runtime import Runtime

log = logging.getLogger(__name__)

# Reachable without signing in (by endpoint, or by blueprint for Twilio's webhooks and
# /metrics, which checks its own bearer token).
PUBLIC_ENDPOINTS = frozenset({"accounts.login", "static"})
PUBLIC_BLUEPRINTS = frozenset({"health", "twilio", "ops"})
# Admins only: these paths and everything under them (the send log, audit, users).
ADMIN_PATHS = ("/log", "/log.csv", "/audit", "/users")
IMPORT_UPLOAD_ENDPOINT = "imports.upload"  # the one request allowed to be large (a file)
# A user who signed in with a one-time password may only reach these until it is changed.
PASSWORD_CHANGE_ENDPOINTS = frozenset({"accounts.password", "accounts.logout", "static"})
MUST_CHANGE_PASSWORD = "must_change_password"  # noqa: S105 - a session key
SESSION_TOKEN = "_user_id"  # noqa: S105 - where Flask-Login keeps get_id() in the cookie

_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


@dataclass(frozen=True)
class StaffUser:
    """The signed-in user as Flask-Login sees it (the model knows nothing of Flask).

    Its id, which Flask-Login keeps in the signed cookie, is the session's random token;
    the database holds only the token's hash, and refuses it once the session has ended.
    """

    id: int
    email: str
    role: str
    token: str
    session_id: int

    is_authenticated = True
    is_active = True
    is_anonymous = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def get_id(self) -> str:
        return self.token

    @classmethod
    def from_session(cls, active: ActiveSession, token: str) -> StaffUser:
        return cls(
            id=active.user_id,
            email=active.email,
            role=active.role,
            token=token,
            session_id=active.id,
        )


class BoundedIntConverter(IntegerConverter):
    """`<int:...>` in routes: at most MAX_ID, so a huge id is a 404 rather than a 500."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:  # noqa: A002
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def session_lifetime() -> timedelta:
    """How long a sign-in lasts at most, from sign-in (SESSION_HOURS)."""
    return timedelta(hours=runtime().settings.session_hours)


def session_idle_timeout() -> timedelta:
    """How long a sign-in lasts without a request (SESSION_IDLE_MINUTES)."""
    return timedelta(minutes=runtime().settings.session_idle_minutes)


def client_address() -> str:
    """The client's address (the proxy's X-Forwarded-For when TRUSTED_PROXIES is set)."""
    return request.remote_addr or "unknown"


def runtime() -> Runtime:
    """The runtime the app was built with."""
    return cast(Runtime, current_app.extensions["followup"])


def db() -> so.Session:
    """The request's database session (closed, so rolled back unless committed, at the end)."""
    if "db_session" not in g:
        g.db_session = runtime().session_factory()
    return cast(so.Session, g.db_session)


def staff() -> StaffUser:
    """The signed-in user (only called behind the sign-in gate)."""
    return cast(StaffUser, current_user._get_current_object())


def safe_next(target: str | None) -> str | None:
    """Return `target` if it is a path on this site, else None (no open redirects)."""
    if not target:
        return None
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target  # browsers read /\evil.example as //evil.example
    ):
        return None
    return target


def is_admin_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in ADMIN_PATHS)


def init_web(app: Flask) -> None:
    """Wire sign-in, CSRF, security headers and error pages into `app`."""
    settings = runtime_of(app).settings
    app.config.update(
        # The cookie outlives no sign-in; the session row decides (followup.accounts).
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the signed-in session
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=settings.is_production,
        REMEMBER_COOKIE_SAMESITE="Lax",
    )
    from followup.accounts.views import install_sign_in_throttles
    from followup.messaging.views import bp as twilio_bp

    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    # Before CSRFProtect reads any form: only a signed-in user's import upload may be large,
    # and a signed-out request is refused before its form is read (a signed-out POST over
    # the request limit got the Import page's 413, with its recent imports, from reading it).
    app.before_request(_upload_limit)
    app.before_request(_gate)
    csrf = CSRFProtect(app)
    csrf.exempt(twilio_bp)  # Twilio signs its webhooks; it cannot send our form token

    login_manager = LoginManager(app)
    # Sessions are checked against their database row on every request, which sign-out
    # and the rest revoke; binding them to the client's address as well would sign a
    # nurse out whenever the hospital's Wi-Fi moves her to another address.
    login_manager.session_protection = None
    login_manager.login_view = "accounts.login"
    login_manager.user_loader(_load_user)

    # Sign-in throttles (Flask-Limiter, moving windows). Counters live in this process by
    # default; several web processes need a shared RATELIMIT_STORAGE_URI (SECURITY.md).
    rate_limiter = Limiter(
        key_func=client_address,
        app=app,
        storage_uri=settings.ratelimit_storage_uri,
        strategy="moving-window",
        headers_enabled=False,
    )
    app.extensions["followup.limiter"] = rate_limiter
    install_sign_in_throttles(app, rate_limiter)

    app.after_request(_security_headers)
    app.teardown_appcontext(_close_session)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(RateLimitExceeded, _too_many)
    app.register_error_handler(NotFound, _not_found)
    app.register_error_handler(OverflowError, _out_of_range)
    app.register_error_handler(sqlalchemy.exc.DataError, _out_of_range)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_error)
    app.context_processor(_template_globals)
    app.add_template_filter(_clinic_time, "clinic_time")


def runtime_of(app: Flask) -> Runtime:
    return cast(Runtime, app.extensions["followup"])


def _load_user(token: str) -> StaffUser | None:
    """The signed-in user for the cookie's session token, if that session is still open."""
    rt = runtime()
    # Its own short transaction: the request's session may later be rolled back.
    with rt.session_factory() as checking:
        active = resume_session(
            session=checking, token=token, now=rt.clock.now(), idle=session_idle_timeout()
        )
        checking.commit()
    return StaffUser.from_session(active, token) if active is not None else None


def _gate() -> ResponseReturnValue | None:
    """Send anonymous users to the sign-in page; refuse nurses the admin pages."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.blueprint in PUBLIC_BLUEPRINTS:
        return None
    if not current_user.is_authenticated:
        if session.get(SESSION_TOKEN):
            # A session that ended (signed out, expired, idle, ended by an admin).
            session.clear()
            flash("Your session has ended. Please sign in again.")
        if request.method == "GET":
            target = request.full_path if request.query_string else request.path
            return redirect(f"/login?next={target}" if target != "/" else "/login")
        return _error_page(401, "Please sign in first.")
    if session.get(MUST_CHANGE_PASSWORD) and request.endpoint not in PASSWORD_CHANGE_ENDPOINTS:
        return redirect("/account/password")
    if is_admin_path(request.path) and not staff().is_admin:
        log.info("user %s refused admin path %s", staff().id, request.path)
        return _error_page(403, "This page is for admins only.")
    return None


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "static":
        # Pages carry patient details: no browser or proxy may keep a copy.
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _close_session(_exc: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()


def _rollback() -> None:
    db_session = g.get("db_session")
    if db_session is not None:
        db_session.rollback()


def _error_page(status: int, message: str) -> tuple[str, int]:
    titles = {
        400: "Bad request",
        401: "Sign in first",
        403: "Not allowed",
        404: "Not found",
        405: "Not allowed",
        413: "Too large",
        422: "Not accepted",
        429: "Too many requests",
        500: "Something went wrong",
    }
    title = titles.get(status, "Error")
    return render_template("error.html", status=status, title=title, message=message), status


def _upload_limit() -> None:
    """Let a signed-in user's import upload exceed the app's small request limit."""
    if request.endpoint == IMPORT_UPLOAD_ENDPOINT and current_user.is_authenticated:
        from followup.imports.source import MAX_UPLOAD_BYTES

        request.max_content_length = MAX_UPLOAD_BYTES


def _csrf_error(exc: CSRFError) -> ResponseReturnValue:
    _rollback()
    log.info("form refused: %s", exc.description)
    return _error_page(
        400,
        "This form had expired or did not come from this site. Go back, reload the "
        "page and try again.",
    )


def _too_many(exc: RateLimitExceeded) -> ResponseReturnValue:
    _rollback()
    if request.endpoint == "accounts.login":
        from followup.accounts.views import throttled_sign_in

        return throttled_sign_in()
    if request.endpoint == "accounts.password":
        from followup.accounts.views import wrong_current_passwords_today

        log.warning("password change throttled for user %s", getattr(current_user, "id", None))
        limiter = current_app.extensions["followup.limiter"]
        wait = (
            "Try again tomorrow"
            if wrong_current_passwords_today(limiter, exc.limit)
            else "Wait 15 minutes and try again"
        )
        return _error_page(
            429,
            f"Too many wrong current passwords. {wait}, or ask an admin to reset your password.",
        )
    log.info("rate limit reached on %s", request.path)
    return _error_page(429, "Too many requests from here. Wait a few minutes and try again.")


def _out_of_range(exc: Exception) -> ResponseReturnValue:
    """A number or date beyond what Python or the database holds: bad input, not a crash.

    Inputs are bounded where they are read (followup.bounds); this is the net under them.
    """
    _rollback()
    log.warning(
        "out-of-range input on %s %s (%s)", request.method, request.path, describe_failure(exc)
    )
    return _error_page(400, "A number or date in this request is out of range.")


def _not_found(_exc: NotFound) -> ResponseReturnValue:
    _rollback()
    return _error_page(404, "There is no such record.")


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    _rollback()
    if exc.code is None or exc.code < 400 or request.blueprint in PUBLIC_BLUEPRINTS:
        return exc
    if exc.code >= 500:
        log.error("HTTP %s on %s %s", exc.code, request.method, request.path)
    return _error_page(exc.code, exc.description or exc.name)


def _server_error(exc: Exception) -> ResponseReturnValue:
    _rollback()
    log_failure(log, "unhandled error on %s %s", request.method, request.path, exc=exc)
    if current_app.testing and current_app.config.get("PROPAGATE_EXCEPTIONS"):
        raise exc
    return _error_page(
        500, "The change was not saved. Try again; if it keeps happening, tell your admin."
    )


def _clinic_time(instant: datetime | None) -> str:
    """An instant in the clinic's zone (DEFAULT_TIMEZONE), for staff-facing records."""
    if instant is None:
        return "-"
    return short_local(instant, zone(runtime().settings.default_timezone))


def _template_globals() -> dict[str, Any]:
    settings = runtime().settings
    user = current_user if current_user.is_authenticated else None
    return {"clinic_name": settings.clinic_name, "staff_user": user}
