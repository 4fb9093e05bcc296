"""What the property tests (hypothesis) share: typed input as forms and argv carry it, the
settings their shared fixtures need, and the row counts that show nothing was half-written."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
import sqlalchemy.orm as so
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from followup.audit.models import AuditEvent
from followup.patients.models import Patient, Procedure

# The fixtures (a database, a signed-in client) are shared by a test's examples on
# purpose: each example checks counts before and after itself.
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Real input: forms and argv carry no NUL and no lone surrogates.
typed = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=80,
)
long_typed = st.one_of(
    typed, st.builds(lambda c, n: c * n, st.sampled_from("a9/+- "), st.integers(100, 70_000))
)
extreme_dates = st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)).map(str)
datetimes_text = st.one_of(
    st.datetimes(min_value=dt.datetime(1, 1, 2)).map(lambda d: d.isoformat(timespec="minutes")),
    st.sampled_from(
        ["9999-12-31T23:59", "0001-01-01T00:00", "2026-03-06T13:30", "2026-03-06T13:30-05:00"]
    ),
    typed,
)
zones = st.one_of(
    st.sampled_from(
        ["America/New_York", "America/Los_Angeles", "Pacific/Kiritimati", "Etc/GMT+12", "UTC"]
    ),
    long_typed,
)
big_ints = st.one_of(st.integers(-(10**30), 10**30), st.integers(0, 10)).map(str)


def counts(session: so.Session) -> tuple[int, int, int]:
    session.expire_all()
    return (
        session.scalar(sa.select(sa.func.count()).select_from(Patient)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(Procedure)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) or 0,
    )
