"""Import every domain's models so that Base.metadata knows all tables (Alembic, tests)."""

import followup.sendlog.models  # noqa: F401 - the send log's indexes
from followup.accounts.models import User, UserSession
from followup.audit.models import AuditEvent
from followup.db import Base
from followup.imports.models import ImportRow, ImportRun
from followup.inbox.models import AttentionResolution, StaffAlert, UnreachableResolution
from followup.messaging.models import InboundMessage, Message, MessageEvent
from followup.patients.models import Patient, Procedure
from followup.retention.models import PurgedPatient

__all__ = [
    "AttentionResolution",
    "AuditEvent",
    "Base",
    "ImportRow",
    "ImportRun",
    "InboundMessage",
    "Message",
    "MessageEvent",
    "Patient",
    "Procedure",
    "PurgedPatient",
    "StaffAlert",
    "UnreachableResolution",
    "User",
    "UserSession",
]
