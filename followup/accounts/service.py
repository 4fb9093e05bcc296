"""Staff accounts: create users, sign in with lockout, change passwords."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so
from werkzeug.security import check_password_hash, generate_password_hash
from zxcvbn import zxcvbn

from followup.accounts.models import ROLES, User
from followup.accounts.sessions import end_user_sessions
from followup.audit.service import record_audit
from followup.errors import NotFound, ValidationError

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128
# zxcvbn's score, 0 to 4: 3 is "safely unguessable" (about 10^8 guesses or more).
MIN_PASSWORD_SCORE = 3
_ZXCVBN_MAX_LENGTH = 72  # zxcvbn refuses longer input; the rest only adds strength
EMAIL_MAX_LENGTH = 254
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def create_user(
    *, session: so.Session, email: str, role: str, password: str, now: datetime, actor: str
) -> User:
    """Create a nurse or admin; raise ValidationError naming the bad field."""
    email = (email or "").strip().lower()
    if role not in ROLES:
        raise ValidationError("role", f"must be one of: {', '.join(ROLES)}")
    if len(email) > EMAIL_MAX_LENGTH or not _EMAIL_RE.match(email):
        raise ValidationError("email", "is not an email address")
    check_password_strength(password or "", field="password", user_inputs=[email])
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


def check_password_strength(password: str, *, field: str, user_inputs: list[str]) -> None:
    """Refuse a short, long, common or guessable password, with zxcvbn's advice."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(field, f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError(field, f"must be at most {MAX_PASSWORD_LENGTH} characters")
    words = [w for text in user_inputs for w in re.split(r"[@.\s_+-]+", text.lower()) if w]
    result = zxcvbn(
        password[:_ZXCVBN_MAX_LENGTH],
        user_inputs=[*user_inputs, *words, "followup", "nurse", "admin", "clinic", "spine"],
    )
    if result["score"] >= MIN_PASSWORD_SCORE:
        return
    feedback = result["feedback"]
    advice = " ".join(
        part.rstrip(".") + "."
        for part in [feedback.get("warning") or "", *feedback.get("suggestions", [])]
        if part
    )
    raise ValidationError(
        field,
        "is too easy to guess"
        + (f": {advice}" if advice else ".")
        + " A few unrelated words together make a strong password.",
    )


# --- signing in ---------------------------------------------------------------------------

# A password serve generates on first start starts with this; signing in with one forces
# a new password. Nobody can choose such a password, so the prefix alone marks it.
ONE_TIME_PREFIX = "once-"
FIRST_ADMIN_EMAIL = "admin@followup.local"
# Every failed sign-in gets this answer, whatever the reason (unknown email, wrong
# password, too many failures, deactivated account): the page never tells anyone which
# accounts exist or which are throttled. The throttles are in followup.accounts.views.
SIGN_IN_FAILED = (
    "Sign-in failed: the email or password is wrong, or there were too many failed "
    "sign-ins from here (then wait 15 minutes). If it keeps failing, ask an admin."
)
# Checked when the email is unknown, so both answers take the same time.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


@dataclass(frozen=True)
class SignInResult:
    """What a sign-in attempt came to; the caller commits either way (the audit row)."""

    user: User | None
    error: str | None = None
    must_change_password: bool = False


def typed_fingerprint(text: str, *, key: bytes) -> str:
    """A keyed, non-reversible fingerprint of what someone typed (HMAC-SHA-256, 12 hex).

    The same text gives the same fingerprint, so an admin sees repeated guesses at one
    name; without the key nobody can test candidate texts against it.
    """
    return hmac.new(key, b"sign-in:" + text.encode("utf-8", "replace"), "sha256").hexdigest()[:12]


def sign_in(
    *,
    session: so.Session,
    email: str,
    password: str,
    now: datetime,
    fingerprint_key: bytes,
    client_address: str | None = None,
) -> SignInResult:
    """Check an email and password; audit every failure, never what was typed."""
    email = (email or "").strip().lower()
    password = password or ""
    where = f"from {client_address}" if client_address else None
    user = (
        session.scalar(sa.select(User).where(User.email == email))
        if email and len(email) <= EMAIL_MAX_LENGTH
        else None
    )
    if user is None:
        check_password_hash(_DUMMY_HASH, password[:MAX_PASSWORD_LENGTH])
        log.info("sign-in refused: unknown email")
        # What was typed may be a password typed into the wrong box: keep a fingerprint.
        record_audit(
            session=session,
            actor=f"unknown account {typed_fingerprint(email, key=fingerprint_key)}",
            action="user.sign_in_failed",
            now=now,
            detail=_join("no such account", where),
        )
        return SignInResult(user=None, error=SIGN_IN_FAILED)
    if not check_password_hash(user.password_hash, password[:MAX_PASSWORD_LENGTH]):
        record_audit(
            session=session,
            actor=user.email,
            action="user.sign_in_failed",
            now=now,
            record_type="user",
            record_id=user.id,
            detail=_join("wrong password", where),
        )
        log.info("sign-in refused: wrong password for user %s", user.id)
        return SignInResult(user=None, error=SIGN_IN_FAILED)
    if not user.active:
        log.info("sign-in refused: user %s is inactive", user.id)
        record_audit(
            session=session,
            actor=user.email,
            action="user.sign_in_failed",
            now=now,
            record_type="user",
            record_id=user.id,
            detail=_join("account deactivated", where),
        )
        return SignInResult(user=None, error=SIGN_IN_FAILED)
    # "user.signed_in" is written with the session it opens (sessions.start_session), which may
    # still refuse it: an account changed since this check.
    return SignInResult(user=user, must_change_password=password.startswith(ONE_TIME_PREFIX))


def password_generation(*, session: so.Session, email: str, key: bytes) -> str:
    """A keyed fingerprint of the account's current password ("-" for no such account):
    it changes with every change or reset (the sign-in throttle's key carries it)."""
    email = (email or "").strip().lower()
    current = (
        session.scalar(sa.select(User.password_hash).where(User.email == email))
        if email and len(email) <= EMAIL_MAX_LENGTH
        else None
    )
    return typed_fingerprint(current, key=key) if current else "-"


def record_throttled_sign_in(
    *, session: so.Session, email: str, now: datetime, fingerprint_key: bytes, client_address: str
) -> None:
    """Audit a sign-in refused by a throttle, unchecked (by fingerprint: it may not exist)."""
    email = (email or "").strip().lower()
    record_audit(
        session=session,
        actor=f"throttled {typed_fingerprint(email, key=fingerprint_key)}",
        action="user.sign_in_throttled",
        now=now,
        detail=f"from {client_address}",
    )


def _join(*parts: str | None) -> str:
    return "; ".join(p for p in parts if p)


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
    check_password_strength(new_password, field="new_password", user_inputs=[user.email])
    if new_password.startswith(ONE_TIME_PREFIX):
        raise ValidationError("new_password", f"must not start with {ONE_TIME_PREFIX!r}")
    if new_password == current_password:
        raise ValidationError("new_password", "must differ from the current password")
    if new_password != confirm_password:
        raise ValidationError("confirm_password", "does not match the new password")
    user.password_hash = generate_password_hash(new_password, method="scrypt")
    end_user_sessions(session=session, user_id=user.id, now=now, reason="password changed")
    record_audit(
        session=session,
        actor=user.email,
        action="user.password_changed",
        now=now,
        record_type="user",
        record_id=user.id,
    )
    return user


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

    A deactivated user cannot sign in, and their open sessions end now.
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
    else:
        end_user_sessions(session=session, user_id=user.id, now=now, reason="deactivated")
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
    end_user_sessions(session=session, user_id=user.id, now=now, reason="password reset")
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
