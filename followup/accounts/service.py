"""Staff accounts: create users, sign in with lockout, change passwords."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from werkzeug.security import check_password_hash, generate_password_hash

from followup.accounts.models import ROLES, User
from followup.audit.service import record_audit
from followup.errors import NotFound, ValidationError

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def create_user(
    *, session: so.Session, email: str, role: str, password: str, now: datetime, actor: str
) -> User:
    """Create a nurse or admin; raise ValidationError naming the bad field."""
    email = (email or "").strip().lower()
    if not _EMAIL_RE.match(email):
        raise ValidationError("email", "is not an email address")
    if role not in ROLES:
        raise ValidationError("role", f"must be one of: {', '.join(ROLES)}")
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise ValidationError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise ValidationError("email", "is already in use")
    user = User(
        email=email,
        role=role,
        password_hash=generate_password_hash(password, method="scrypt"),
        active=True,
        failed_logins=0,
        created_at=now,
    )
    session.add(user)
    session.flush()
    record_audit(
        session=session,
        actor=actor,
        action="user.created",
        now=now,
        record_type="user",
        record_id=user.id,
        detail=f"role {role}",
    )
    return user


# --- signing in ---------------------------------------------------------------------------

MAX_FAILED_LOGINS = 5  # consecutive wrong passwords before the account is locked
LOCKOUT = timedelta(minutes=15)
# A password serve generates on first start starts with this; signing in with one forces
# a new password. Nobody can choose such a password, so the prefix alone marks it.
ONE_TIME_PREFIX = "once-"
FIRST_ADMIN_EMAIL = "admin@followup.local"
WRONG_CREDENTIALS = "Email or password is wrong."
LOCKED_OUT = (
    f"Too many failed sign-ins: this account is locked for {LOCKOUT.seconds // 60} minutes."
    " Try again later."
)
# Checked when the email is unknown, so both answers take the same time.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


@dataclass(frozen=True)
class SignInResult:
    """What a sign-in attempt came to; the caller commits either way (the counter)."""

    user: User | None
    error: str | None = None
    must_change_password: bool = False


def sign_in(*, session: so.Session, email: str, password: str, now: datetime) -> SignInResult:
    """Check an email and password, counting failures and locking after too many."""
    email = (email or "").strip().lower()
    user = session.scalar(sa.select(User).where(User.email == email)) if email else None
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        log.info("sign-in refused: unknown email")
        # The audit trail (admins only) keeps what was typed: someone may be guessing.
        record_audit(
            session=session,
            actor=email[:254] or "(blank)",
            action="user.sign_in_failed",
            now=now,
            detail="no such account",
        )
        return SignInResult(user=None, error=WRONG_CREDENTIALS)
    if user.locked_until is not None and user.locked_until > now:
        log.info("sign-in refused: user %s is locked", user.id)
        return SignInResult(
            user=None,
            error=LOCKED_OUT,
        )
    if not check_password_hash(user.password_hash, password or ""):
        user.failed_logins = (user.failed_logins or 0) + 1
        action = "user.sign_in_failed"
        error = WRONG_CREDENTIALS
        if user.failed_logins >= MAX_FAILED_LOGINS:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
            action = "user.locked"
            error = LOCKED_OUT
        record_audit(
            session=session,
            actor=user.email,
            action=action,
            now=now,
            record_type="user",
            record_id=user.id,
        )
        log.info("sign-in refused: wrong password for user %s", user.id)
        return SignInResult(user=None, error=error)
    if not user.active:
        log.info("sign-in refused: user %s is inactive", user.id)
        record_audit(
            session=session,
            actor=user.email,
            action="user.sign_in_failed",
            now=now,
            record_type="user",
            record_id=user.id,
            detail="account deactivated",
        )
        return SignInResult(user=None, error="This account is disabled; ask an admin.")
    user.failed_logins = 0
    user.locked_until = None
    record_audit(
        session=session,
        actor=user.email,
        action="user.signed_in",
        now=now,
        record_type="user",
        record_id=user.id,
    )
    return SignInResult(user=user, must_change_password=password.startswith(ONE_TIME_PREFIX))


def get_active_user(*, session: so.Session, user_id: int) -> User | None:
    """Return the user for a signed-in session, or None if gone or disabled."""
    user = session.get(User, user_id)
    return user if user is not None and user.active else None


def change_password(
    *,
    session: so.Session,
    user_id: int,
    current_password: str,
    new_password: str,
    confirm_password: str,
    now: datetime,
) -> User:
    """Replace a user's password after checking the current one; raise ValidationError."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    if not check_password_hash(user.password_hash, current_password or ""):
        raise ValidationError("current_password", "is not your current password")
    new_password = new_password or ""
    if len(new_password) < MIN_PASSWORD_LENGTH:
        raise ValidationError("new_password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if new_password.startswith(ONE_TIME_PREFIX):
        raise ValidationError("new_password", f"must not start with {ONE_TIME_PREFIX!r}")
    if new_password == current_password:
        raise ValidationError("new_password", "must differ from the current password")
    if new_password != confirm_password:
        raise ValidationError("confirm_password", "does not match the new password")
    user.password_hash = generate_password_hash(new_password, method="scrypt")
    record_audit(
        session=session,
        actor=user.email,
        action="user.password_changed",
        now=now,
        record_type="user",
        record_id=user.id,
    )
    return user


def record_sign_out(*, session: so.Session, user_id: int, now: datetime) -> None:
    """Write the audit event of a sign-out."""
    user = session.get(User, user_id)
    if user is not None:
        record_audit(
            session=session,
            actor=user.email,
            action="user.signed_out",
            now=now,
            record_type="user",
            record_id=user.id,
        )


def ensure_first_admin(*, session: so.Session, now: datetime) -> tuple[User, str] | None:
    """With no users at all, create an admin with a one-time password and return both."""
    if session.scalar(sa.select(User.id).limit(1)) is not None:
        return None
    password = ONE_TIME_PREFIX + secrets.token_urlsafe(15)
    user = create_user(
        session=session,
        email=FIRST_ADMIN_EMAIL,
        role="admin",
        password=password,
        now=now,
        actor="serve (first start)",
    )
    return user, password


def set_user_active(
    *, session: so.Session, user_id: int, active: bool, actor: str, now: datetime
) -> User:
    """Deactivate or reactivate an account; the last active admin cannot be deactivated.

    A deactivated user cannot sign in, and their open sessions end at their next request.
    """
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    if user.active == active:
        return user
    if not active and user.role == "admin":
        admins = session.scalar(
            sa.select(sa.func.count())
            .select_from(User)
            .where(User.role == "admin", User.active.is_(True), User.id != user.id)
        )
        if not admins:
            raise ValidationError("user", "is the last active admin; make another admin first")
    user.active = active
    if active:
        user.failed_logins, user.locked_until = 0, None
    record_audit(
        session=session,
        actor=actor,
        action="user.reactivated" if active else "user.deactivated",
        now=now,
        record_type="user",
        record_id=user.id,
    )
    return user


def reset_password(*, session: so.Session, user_id: int, actor: str, now: datetime) -> str:
    """Give an account a one-time password (shown once to the admin) and lift any lockout.

    Signing in with it forces a new password; the old password and sessions stop working.
    """
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    password = ONE_TIME_PREFIX + secrets.token_urlsafe(15)
    user.password_hash = generate_password_hash(password, method="scrypt")
    user.failed_logins, user.locked_until = 0, None
    record_audit(
        session=session,
        actor=actor,
        action="user.password_reset",
        now=now,
        record_type="user",
        record_id=user.id,
    )
    return password


def list_users(*, session: so.Session) -> list[User]:
    """Return every staff account, by email."""
    return list(session.scalars(sa.select(User).order_by(User.email)))
