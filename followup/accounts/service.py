"""Staff accounts: create users with hashed passwords."""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so
from werkzeug.security import generate_password_hash

from followup.accounts.models import ROLES, User
from followup.audit.service import record_audit
from followup.errors import ValidationError

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
