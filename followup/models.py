"""Import every domain's models so that Base.metadata knows all tables (Alembic, tests)."""

from followup.accounts.models import User, UserSession
from followup.audit.models import AuditEvent
from followup.db import Base
from followup.messaging.models import Message, MessageEvent
from followup.patients.models import Patient, Procedure
from followup.retention.models import PurgedPatient
from followup.sendlog.models import AttentionResolution

__all__ = [
    "AttentionResolution",
    "AuditEvent",
    "Base",
    "Message",
    "MessageEvent",
    "Patient",
    "Procedure",
    "PurgedPatient",
    "User",
    "UserSession",
]
