"""The runtime: everything an entry point builds once and passes down."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import sqlalchemy.orm as so
from sqlalchemy.engine import Engine

from followup.care.protocol import CareContext, load_protocols
from followup.clock import Clock, SystemClock
from followup.db import make_engine, make_session_factory
from followup.messaging.transports import build_transport
from followup.messaging.transports.base import SmsTransport
from followup.ops.metrics import Metrics, instrument_transport
from followup.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    engine: Engine
    session_factory: so.sessionmaker[so.Session]
    care: CareContext
    transport: SmsTransport
    owner: str  # this process's name on the leases it takes
    # This process's Prometheus registry and instruments (/metrics, the worker's exporter).
    metrics: Metrics = field(default_factory=Metrics)
    # This host's clock, held against the database server's (`clock` may be pinned).
    host_clock: Clock = field(default_factory=SystemClock)
    # `clock` is pinned (`followup --now`): the dispatcher's leases and hand-over marks stay
    # on `host_clock`, the time every other process judges them by.
    pinned: bool = False
    # Set when the process is told to stop (`jobs.scheduler.shut_down`): the reaper and the
    # status poll end between their parts, inside the service manager's stop timeout.
    stopping: threading.Event = field(default_factory=threading.Event)


def build_care(settings: Settings) -> CareContext:
    """Load and validate the care protocols against the clinic's settings."""
    directory = Path(settings.protocol_dir) if settings.protocol_dir else None
    protocols = load_protocols(
        directory, clinic_name=settings.clinic_name, clinic_phone=settings.clinic_phone
    )
    return CareContext(
        protocols=protocols,
        clinic_name=settings.clinic_name,
        clinic_phone=settings.clinic_phone,
        quiet_hours=settings.quiet_hours,
        emergency_number=settings.emergency_number,
    )


def process_owner() -> str:
    """This process's name on the leases it takes: host, pid and a random part, so that two
    processes never share it, even where host names are cut short and every pid is 1
    (containers)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def build_runtime(
    settings: Settings, clock: Clock, *, stream: TextIO | None = None, pinned: bool = False
) -> Runtime:
    """Build the runtime; protocol or transport problems stop start-up here."""
    care = build_care(settings)
    metrics = Metrics()
    # Every provider request is timed and its errors counted, whatever the dispatcher does.
    transport = instrument_transport(build_transport(settings, stream=stream), metrics)
    engine = make_engine(settings.database_url)
    return Runtime(
        settings=settings,
        clock=clock,
        engine=engine,
        session_factory=make_session_factory(engine),
        care=care,
        transport=transport,
        owner=process_owner(),
        metrics=metrics,
        pinned=pinned,
    )
