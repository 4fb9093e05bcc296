"""Property tests (hypothesis): arbitrary input to the enrollment form, the send log's and
the audit trail's filters never give a 500, a traceback or a partial write; bad input is
a 4xx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy.orm as so
from hypothesis import example, given
from hypothesis import strategies as st

from tests.properties import (
    PROPERTY,
    big_ints,
    counts,
    datetimes_text,
    extreme_dates,
    long_typed,
    typed,
    zones,
)
from tests.web.conftest import ADMIN, NURSE, Browser, csrf_from


def no_crash(response: Any) -> str:
    body = response.get_data(as_text=True)
    assert response.status_code < 500, body[:2000]
    assert "Traceback" not in body
    return body


# --- the enrollment form ------------------------------------------------------------------


@pytest.fixture
def nurse(signed_in: Callable[[str], Browser]) -> Browser:
    return signed_in(NURSE)


@PROPERTY
@given(
    first_name=st.one_of(st.just("Ada"), long_typed),
    last_name=st.one_of(st.just("Moreno"), typed),
    phone=st.one_of(st.just("(202) 555-0143"), typed, big_ints),
    language=st.one_of(st.sampled_from(["en", "es"]), typed),
    procedure=st.one_of(st.sampled_from(["kyphoplasty", "vertebroplasty"]), typed),
    completed_at=datetimes_text,
    timezone=zones,
    blood_thinner=st.one_of(st.just(""), typed),
    consent=st.sampled_from(["y", ""]),
    action=st.sampled_from(["preview", "enroll", "edit", "other"]),
)
@example(  # the review's cases: a completion at the calendar's end in a western zone...
    first_name="Ada", last_name="Moreno", phone="(202) 555-0143", language="en",
    procedure="kyphoplasty", completed_at="9999-12-31T23:59", timezone="America/Los_Angeles",
    blood_thinner="", consent="y", action="preview",
)  # fmt: skip
@example(  # ... and a 60,000-character time zone
    first_name="Ada", last_name="Moreno", phone="(202) 555-0143", language="en",
    procedure="kyphoplasty", completed_at="2026-03-06T13:30", timezone="x" * 60_000,
    blood_thinner="", consent="y", action="enroll",
)  # fmt: skip
def test_the_enrollment_form_never_fails_with_a_500_or_half_writes(
    nurse: Browser, session: so.Session, **fields: str
) -> None:
    before = counts(session)
    token = csrf_from(nurse.get("/patients/new"))
    response = nurse.client.post("/patients/new", data={"csrf_token": token, **fields})
    no_crash(response)
    patients, procedures, _ = counts(session)
    if response.status_code == 302:  # enrolled: one patient and one procedure, whole
        assert fields["action"] == "enroll"
        assert (patients, procedures) == (before[0] + 1, before[1] + 1)
    else:
        assert response.status_code in (200, 400, 409, 422)
        assert (patients, procedures) == before[:2]


# --- the send log's and the audit trail's filters ----------------------------------------

filters = st.fixed_dictionaries(
    {},
    optional={
        "status": st.one_of(st.sampled_from(["sent", "failed", ""]), typed),
        "step": st.one_of(st.sampled_from(["soreness", ""]), long_typed),
        "date_from": st.one_of(extreme_dates, typed),
        "date_to": st.one_of(extreme_dates, typed),
        "q": long_typed,
        "attention": st.sampled_from(["y", "", "0"]),
        "cursor": st.one_of(
            typed, st.just("OTk5OS0xMi0zMVQwMDowMDowMCswMDowMHw5OTk5OTk5OTk5OTk5OTk5OQ")
        ),
        "actor": long_typed,
        "action": typed,
        "page": big_ints,
    },
)


@pytest.fixture
def admin(signed_in: Callable[[str], Browser]) -> Browser:
    return signed_in(ADMIN)


@PROPERTY
@given(query=filters, path=st.sampled_from(["/log", "/audit", "/patients"]))
@example(query={"date_to": "9999-12-31"}, path="/log")
@example(query={"date_to": "9999-12-31"}, path="/audit")
@example(query={"page": "9" * 30}, path="/audit")
@example(query={"page": "9" * 30}, path="/patients")
def test_the_log_and_audit_filters_never_fail_with_a_500(
    admin: Browser, query: dict[str, str], path: str
) -> None:
    response = admin.get(path, query_string=query)
    no_crash(response)
    assert response.status_code in (200, 400, 404, 422)


@PROPERTY
@given(query=filters)
@example(query={"date_to": "9999-12-31"})
def test_the_csv_export_checks_its_filters_before_it_writes_its_audit_row(
    admin: Browser, session: so.Session, query: dict[str, str]
) -> None:
    before = counts(session)[2]
    response = admin.get("/log.csv", query_string=query)
    body = no_crash(response)  # reads the whole stream: a failure mid-way raises here
    after = counts(session)[2]
    if response.status_code == 200:
        assert body.startswith("message_id,")
        assert after == before + 1
    else:
        assert response.status_code == 400
        assert after == before  # refused: no audit row for an export that did not happen
