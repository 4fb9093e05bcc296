"""Sign-in, sign-out, password change, and the admins' list of staff accounts."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from flask import Blueprint, Flask, abort, flash, g, redirect, render_template, request, session
from flask.typing import ResponseReturnValue
from flask.wrappers import Response
from flask_limiter import Limiter
from flask_login import login_user, logout_user
from limits import parse_many

from followup.accounts.forms import LoginForm, NewUserForm, PasswordForm
from followup.accounts.models import User
from followup.accounts.service import (
    SIGN_IN_FAILED,
    SignInResult,
    change_password,
    create_user,
    list_users,
    password_generation,
    record_throttled_sign_in,
    reset_password,
    set_user_active,
    sign_in,
    typed_fingerprint,
)
from followup.accounts.sessions import (
    ActiveSession,
    end_session_by_admin,
    open_session_counts,
    open_sessions,
    sign_out,
    start_session,
)
from followup.errors import NotFound, ValidationError
from followup.web import (
    MUST_CHANGE_PASSWORD,
    SESSION_TOKEN,
    StaffUser,
    client_address,
    db,
    runtime,
    safe_next,
    session_idle_timeout,
    session_lifetime,
    staff,
)

log = logging.getLogger(__name__)

bp = Blueprint("accounts", __name__)

# Failed sign-ins (answered 401) allowed in any moving window; past them, POST /login is
# answered like any failure without the password being checked. Per client address, so
# one machine cannot spray many accounts, and per account and address, so one machine
# cannot guess one account's password for long, while the same nurse at another machine
# can still sign in: nobody can lock her out from elsewhere.
FAILURES_PER_ADDRESS = "10 per minute; 30 per 15 minutes; 200 per day"
FAILURES_PER_ACCOUNT_AND_ADDRESS = "5 per 15 minutes; 10 per hour; 20 per day"


# Wrong current passwords typed on the change-password page, per signed-in account: a
# session left open on a ward computer is no way to guess the owner's password.
WRONG_CURRENT_PASSWORDS = "5 per 15 minutes; 20 per day"
WRONG_CURRENT_PASSWORD = "followup.wrong_current_password"  # noqa: S105 - a g key


def wrong_current_passwords_today(limiter: Limiter, limit: Any) -> bool:
    """Whether the throttle that refused this POST /account/password holds for the day (20
    wrong in a day), not the 15 minutes: it is checked after the 15 minutes' and is not
    reported when both are exhausted."""
    args = [limit.key_func(), limit.scope_for(limiter.identify_request(), request.method)]
    day = max(parse_many(WRONG_CURRENT_PASSWORDS), key=lambda item: item.get_expiry())
    try:
        return bool(limiter.limiter.get_window_stats(day, *args).remaining <= 0)
    except Exception:  # noqa: BLE001 - the counters' store went away: say the short wait
        log.warning("wrong-current-password throttle: its counters could not be read")
        return False


def install_sign_in_throttles(app: Flask, limiter: Limiter) -> None:
    """Put the sign-in throttles on POST /login, and the wrong-current-password throttle on
    POST /account/password (Flask-Limiter; counted on failure only)."""
    change: Any = app.view_functions["accounts.password"]
    app.view_functions["accounts.password"] = limiter.limit(
        WRONG_CURRENT_PASSWORDS,
        key_func=_account_and_password,
        methods=["POST"],
        deduct_when=lambda _response: bool(g.get(WRONG_CURRENT_PASSWORD)),
        scope="password-change:account",
    )(change)
    view: Any = app.view_functions["accounts.login"]
    view = limiter.limit(
        FAILURES_PER_ACCOUNT_AND_ADDRESS,
        key_func=_account_and_address,
        methods=["POST"],
        deduct_when=_failed,
        scope="sign-in:account+address",
    )(view)
    view = limiter.limit(
        FAILURES_PER_ADDRESS,
        key_func=client_address,
        methods=["POST"],
        deduct_when=_failed,
        scope="sign-in:address",
    )(view)
    app.view_functions["accounts.login"] = view


def _failed(response: Response) -> bool:
    return response.status_code == 401


def _account_and_address() -> str:
    """The throttle's key: the address, the typed email's keyed fingerprint and, for an
    account, its password's: an admin's reset (or a change) starts a new count, so the
    one-time password works at the computer where the forgotten one failed.

    Any email, known or not, is counted alike (one look-up each). The fingerprints are
    keyed because the limiter may log its keys, and the email box sometimes holds a
    password.
    """
    email = (request.form.get("email") or "").strip().lower()[:512]
    key = _fingerprint_key()
    generation = password_generation(session=db(), email=email, key=key)
    return f"{client_address()}/{typed_fingerprint(email, key=key)}/{generation}"


def _account_and_password() -> str:
    """The wrong-current-password throttle's key: the signed-in account and its password's
    keyed fingerprint, so an admin's reset starts a new count (the one-time password's
    forced change is not refused for the rest of the old window)."""
    user = staff()
    generation = password_generation(session=db(), email=user.email, key=_fingerprint_key())
    return f"user:{user.id}/{generation}"


def _fingerprint_key() -> bytes:
    """The key of the audit's fingerprints, derived from SECRET_KEY."""
    secret = runtime().settings.secret_key.encode("utf-8", "replace")
    return hashlib.sha256(b"followup audit fingerprint\0" + secret).digest()


def throttled_sign_in() -> ResponseReturnValue:
    """A POST /login past a throttle: the same answer as any failure, nothing checked."""
    log.warning("sign-in throttled for a client")
    form = LoginForm()
    record_throttled_sign_in(
        session=db(),
        email=form.email.data or "",
        now=runtime().clock.now(),
        fingerprint_key=_fingerprint_key(),
        client_address=client_address(),
    )
    db().commit()
    return render_template("accounts/login.html", form=form, error=SIGN_IN_FAILED), 401


def _begin(user: User, *, must_change_password: bool = False) -> bool:
    """Open a new server-side session for `user` and put its token in a fresh cookie;
    False when the account changed since its password was checked (nothing opened)."""
    token = start_session(
        session=db(),
        user=user,
        now=runtime().clock.now(),
        lifetime=session_lifetime(),
        client_address=client_address(),
        user_agent=request.user_agent.string,
    )
    db().commit()
    if token is None:
        return False
    session.clear()  # a fresh session: nothing from before signing in survives
    active = ActiveSession(id=0, user_id=user.id, email=user.email, role=user.role)
    login_user(StaffUser.from_session(active, token))
    session.permanent = True
    if must_change_password:
        session[MUST_CHANGE_PASSWORD] = True
    return True


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    form = LoginForm()
    error = None
    if request.method == "POST":
        result = sign_in(
            session=db(),
            email=form.email.data or "",
            password=form.password.data or "",
            now=runtime().clock.now(),
            fingerprint_key=_fingerprint_key(),
            client_address=client_address(),
        )
        db().commit()  # the audit row is kept either way
        if result.user is not None and not _begin(
            result.user, must_change_password=result.must_change_password
        ):
            result = SignInResult(user=None, error=SIGN_IN_FAILED)
        if result.user is not None:
            if result.must_change_password:
                flash("You signed in with a one-time password: choose your own now.")
                return redirect("/account/password")
            return redirect(safe_next(request.args.get("next")) or "/patients")
        error = result.error
    return render_template("accounts/login.html", form=form, error=error), (401 if error else 200)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    sign_out(session=db(), token=session.get(SESSION_TOKEN) or "", now=runtime().clock.now())
    db().commit()
    logout_user()
    session.clear()
    flash("You are signed out.")
    return redirect("/login")


@bp.route("/account/password", methods=["GET", "POST"])
def password() -> ResponseReturnValue:
    form = PasswordForm()
    forced = bool(session.get(MUST_CHANGE_PASSWORD))
    if request.method == "POST":
        try:
            user = change_password(
                session=db(),
                user_id=staff().id,
                current_password=form.current_password.data or "",
                new_password=form.new_password.data or "",
                confirm_password=form.confirm_password.data or "",
                now=runtime().clock.now(),
            )
        except ValidationError as exc:
            db().rollback()
            g.setdefault(WRONG_CURRENT_PASSWORD, exc.field == "current_password")
            form[exc.field].errors = [exc.message]
            return render_template("accounts/password.html", form=form, forced=forced), 422
        db().commit()  # every session of this user has ended, this one included
        _begin(user)  # ... and this browser goes on in a new one
        flash("Your password is changed. Your other sessions are signed out.")
        return redirect("/patients")
    return render_template("accounts/password.html", form=form, forced=forced)


@bp.route("/users", methods=["GET", "POST"])
def users() -> ResponseReturnValue:
    """Admins only (see followup.web.ADMIN_PATHS): list and create staff accounts."""
    form = NewUserForm()
    status = 200
    if request.method == "POST":
        try:
            user = create_user(
                session=db(),
                email=form.email.data or "",
                role=form.role.data or "",
                password=form.password.data or "",
                now=runtime().clock.now(),
                actor=staff().email,
            )
        except ValidationError as exc:
            db().rollback()
            form[exc.field].errors = [exc.message]
            status = 422
        else:
            db().commit()
            flash(f"Account {user.email} created ({user.role}). Give them the password in person.")
            return redirect("/users")
    return _users_page(form), status


def _users_page(form: NewUserForm, **extra: object) -> str:
    counts = open_session_counts(
        session=db(), now=runtime().clock.now(), idle=session_idle_timeout()
    )
    return render_template(
        "accounts/users.html",
        form=form,
        users=list_users(session=db()),
        session_counts=counts,
        **extra,
    )


@bp.get("/users/<int:user_id>/sessions")
def user_sessions(user_id: int) -> ResponseReturnValue:
    """Admins only: a user's open sessions, each of which can be ended."""
    user = db().get(User, user_id)
    if user is None:
        abort(404)
    rows = open_sessions(
        session=db(), user_id=user_id, now=runtime().clock.now(), idle=session_idle_timeout()
    )
    return render_template(
        "accounts/sessions.html",
        user=user,
        rows=rows,
        current=staff().session_id,
        lifetime_hours=f"{runtime().settings.session_hours:g}",
        idle_minutes=runtime().settings.session_idle_minutes,
    )


@bp.post("/users/<int:user_id>/sessions/end")
@bp.post("/users/<int:user_id>/sessions/<int:session_id>/end")
def end_sessions(user_id: int, session_id: int | None = None) -> ResponseReturnValue:
    """Admins only: end one of a user's sessions, or all of them."""
    try:
        ended = end_session_by_admin(
            session=db(),
            user_id=user_id,
            session_id=session_id,
            actor=staff().email,
            now=runtime().clock.now(),
        )
    except NotFound:
        abort(404)
    db().commit()
    flash(f"{ended} session{'' if ended == 1 else 's'} ended.")
    return redirect(f"/users/{user_id}/sessions")


@bp.post("/users/<int:user_id>/active")
def user_active(user_id: int) -> ResponseReturnValue:
    """Admins only: deactivate or reactivate an account."""
    active = request.form.get("active") == "1"
    try:
        user = set_user_active(
            session=db(),
            user_id=user_id,
            active=active,
            actor=staff().email,
            now=runtime().clock.now(),
        )
    except NotFound:
        abort(404)
    except ValidationError as exc:
        db().rollback()
        flash(f"Not changed: the account {exc.message}.")
        return redirect("/users")
    db().commit()
    flash(f"Account {user.email} {'reactivated' if active else 'deactivated'}.")
    return redirect("/users")


@bp.post("/users/<int:user_id>/password")
def user_password_reset(user_id: int) -> ResponseReturnValue:
    """Admins only: a one-time password, shown on this page once, never stored in a cookie."""
    try:
        password = reset_password(
            session=db(), user_id=user_id, actor=staff().email, now=runtime().clock.now()
        )
    except NotFound:
        abort(404)
    db().commit()
    user = next(u for u in list_users(session=db()) if u.id == user_id)
    return _users_page(NewUserForm(formdata=None), one_time=(user.email, password))
