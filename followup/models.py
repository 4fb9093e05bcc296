"""Import every domain's models so that Base.metadata knows all tables (Alembic, tests)."""

from followup.accounts.models import User
from followup.audit.models import AuditEvent
from followup.db import Base
from followup.imports.models import ImportRow, ImportRun
from followup.messaging.models import Message, MessageEvent
from followup.patients.models import Patient, Procedure
from followup.sendlog.models import AttentionResolution

__all__ = [
    "AttentionResolution",
    "AuditEvent",
    "Base",
    "ImportRow",
    "ImportRun",
    "Message",
    "MessageEvent",
    "Patient",
    "Procedure",
    "User",
]
