"""Staff sessions: open one at sign-in, find it again on each request, end it (sign-out,
an admin, a password change or reset, deactivation), list the open ones."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.accounts.models import User, UserSession
from followup.audit.service import record_audit
from followup.db import locked_get
from followup.errors import NotFound

# The sign-in lines keep the logger they had when this lived in service.py.
log = logging.getLogger("followup.accounts.service")

# last_seen_at is written at most this often, not on every request.
SESSION_TOUCH_EVERY = timedelta(minutes=1)


def hash_token(token: str) -> str:
    """The stored form of a session token (SHA-256: the token itself is 256 random bits)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def start_session(
    *,
    session: so.Session,
    user: User,
    now: datetime,
    lifetime: timedelta,
    client_address: str | None,
    user_agent: str | None,
) -> str | None:
    """Open a session for a user who just signed in; return the token for the cookie, or
    None when the account changed since the password was checked (`user` as read then).

    The user's row is locked first (PostgreSQL: FOR UPDATE; SQLite: the write lock) and read
    again: a password change or an admin's reset that committed between the check and this
    insert ended every session before this one existed, and a sign-in with the old
    password stayed open for the shift. Locked, the change either comes first (refused
    here) or waits and then ends this session too."""
    checked_hash, user_id = user.password_hash, user.id
    fresh = locked_get(session, User, user_id)
    where = f"from {client_address}" if client_address else None
    refused = fresh is None or not fresh.active or fresh.password_hash != checked_hash
    record_audit(
        session=session,
        actor=user.email,
        action="user.sign_in_failed" if refused else "user.signed_in",
        now=now,
        record_type="user",
        record_id=user_id,
        detail=(
            "the account changed during the sign-in" + (f"; {where}" if where else "")
            if refused
            else where
        ),
    )
    if refused:
        log.info("sign-in of user %s refused: the account changed since its check", user_id)
        return None
    token = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            user_id=user.id,
            token_hash=hash_token(token),
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime,
            client_address=(client_address or "")[:64] or None,
            user_agent=(user_agent or "")[:200] or None,
        )
    )
    session.flush()
    return token


def sign_out(*, session: so.Session, token: str, now: datetime) -> None:
    """End the session this token opened and write the audit event of a sign-out."""
    row = session.scalar(sa.select(UserSession).where(UserSession.token_hash == hash_token(token)))
    if row is None:
        return
    if row.ended_at is None:
        row.ended_at, row.end_reason = now, "signed out"
    user = session.get(User, row.user_id)
    if user is not None:
        record_audit(
            session=session,
            actor=user.email,
            action="user.signed_out",
            now=now,
            record_type="user",
            record_id=user.id,
        )


@dataclass(frozen=True)
class ActiveSession:
    """A session found open for a request, and its user."""

    id: int
    user_id: int
    email: str
    role: str


def resume_session(
    *, session: so.Session, token: str, now: datetime, idle: timedelta
) -> ActiveSession | None:
    """Return the open session for a token, or None (ended, expired, idle, user disabled).

    A session found expired or idle is closed with its reason; an open one has its
    last_seen_at moved forward (at most once a minute). The caller commits.
    """
    if not token or len(token) > 128:
        return None
    row = session.execute(
        sa.select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    user_session, user = row
    if user_session.ended_at is not None:
        return None
    reason = None
    if now >= user_session.expires_at:
        reason = "expired"
    elif now - user_session.last_seen_at >= idle:
        reason = "idle"
    elif not user.active:
        reason = "deactivated"
    if reason is not None:
        user_session.ended_at, user_session.end_reason = now, reason
        return None
    if now - user_session.last_seen_at >= SESSION_TOUCH_EVERY:
        user_session.last_seen_at = now
    return ActiveSession(id=user_session.id, user_id=user.id, email=user.email, role=user.role)


def end_user_sessions(
    *, session: so.Session, user_id: int, now: datetime, reason: str, keep: int | None = None
) -> int:
    """End every open session of a user (but `keep`, if given); return how many."""
    query = sa.update(UserSession).where(
        UserSession.user_id == user_id, UserSession.ended_at.is_(None)
    )
    if keep is not None:
        query = query.where(UserSession.id != keep)
    result = session.execute(
        query.values(ended_at=now, end_reason=reason[:32]),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def open_sessions(
    *, session: so.Session, user_id: int, now: datetime, idle: timedelta
) -> list[UserSession]:
    """A user's sessions that would still be accepted, newest first."""
    return list(
        session.scalars(
            sa.select(UserSession)
            .where(
                UserSession.user_id == user_id,
                UserSession.ended_at.is_(None),
                UserSession.expires_at > now,
                UserSession.last_seen_at > now - idle,
            )
            .order_by(UserSession.created_at.desc(), UserSession.id.desc())
        )
    )


def open_session_counts(*, session: so.Session, now: datetime, idle: timedelta) -> dict[int, int]:
    """How many open sessions each user has (users without any are absent)."""
    rows = session.execute(
        sa.select(UserSession.user_id, sa.func.count())
        .where(
            UserSession.ended_at.is_(None),
            UserSession.expires_at > now,
            UserSession.last_seen_at > now - idle,
        )
        .group_by(UserSession.user_id)
    )
    return {int(user_id): int(count) for user_id, count in rows}


def end_session_by_admin(
    *,
    session: so.Session,
    user_id: int,
    session_id: int | None,
    actor: str,
    now: datetime,
) -> int:
    """End one session of a user (or all, when session_id is None); audit it."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    if session_id is None:
        ended = end_user_sessions(
            session=session, user_id=user_id, now=now, reason="ended by admin"
        )
    else:
        row = session.get(UserSession, session_id)
        if row is None or row.user_id != user_id:
            raise NotFound(f"no session {session_id} for user {user_id}")
        ended = 0
        if row.ended_at is None:
            row.ended_at, row.end_reason = now, "ended by admin"
            ended = 1
    record_audit(
        session=session,
        actor=actor,
        action="user.sessions_ended",
        now=now,
        record_type="user",
        record_id=user_id,
        detail=f"{ended} session(s)" + (f", session {session_id}" if session_id else ""),
    )
    return ended
