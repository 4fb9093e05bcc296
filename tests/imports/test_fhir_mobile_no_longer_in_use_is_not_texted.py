"""A FHIR Patient keeps the history of their numbers: ContactPoint.period says when each
was in use. The import takes the first mobile by rank and looks at no period, so a
patient whose EHR record lists the old mobile (in use until January 2025) before the
new one is enrolled on the old number: every aftercare text, with the clinic's name,
goes to a number the patient gave up, perhaps someone else's now.

Expected: a mobile whose period has ended is not used; the one in use now is.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.patients.models import Patient
from tests.imports.conftest import Importer
from tests.imports.helpers import bundle, consent, patient, procedure


def test_a_mobile_whose_period_has_ended_is_not_the_one_texted(
    run_import: Importer, session: so.Session
) -> None:
    record = patient(
        "p1",
        telecom=[
            {
                "system": "phone",
                "use": "mobile",
                "value": "(202) 555-0143",
                "period": {"start": "2019-05-01", "end": "2025-01-31"},
            },
            {
                "system": "phone",
                "use": "mobile",
                "value": "(202) 555-0188",
                "period": {"start": "2025-02-01"},
            },
        ],
    )

    result = run_import(
        {"b.json": bundle(record, procedure("x1", "Patient/p1"), consent("c1", "Patient/p1"))}
    )

    assert result.rows[0].outcome == "planned"
    session.expire_all()
    phones = list(session.scalars(sa.select(Patient.phone)))
    assert phones == ["+12025550188"], (
        f"the patient was enrolled on {phones}, the mobile the record says was in use until "
        "2025-01-31, not the one in use since 2025-02-01: every text goes to the old number"
    )


def test_a_patient_whose_mobiles_are_all_out_of_their_period_is_refused_naming_it(
    run_import: Importer, session: so.Session
) -> None:
    record = patient(
        "p1",
        telecom=[
            {
                "system": "phone",
                "use": "mobile",
                "value": "(202) 555-0143",
                "period": {"end": "2025-01"},
            },
            {
                "system": "phone",
                "use": "mobile",
                "value": "(202) 555-0188",
                "rank": 1,
                "period": {"start": "2026-04-01"},  # the clock is in March 2026
            },
        ],
    )

    result = run_import(
        {"b.json": bundle(record, procedure("x1", "Patient/p1"), consent("c1", "Patient/p1"))}
    )

    assert (result.rows[0].outcome, result.rows[0].detail) == (
        "refused",
        "Patient.telecom: has no mobile number in use now (each one's period has ended or "
        "not begun)",
    )
    session.expire_all()
    assert list(session.scalars(sa.select(Patient.phone))) == []


def test_a_mobile_that_stops_soon_gives_way_to_one_with_no_end(
    run_import: Importer, session: so.Session
) -> None:
    """The first-ranked mobile is a loaner in use until next week; the weeks of aftercare
    (the pain check on day 7, the blood-thinner texts) would go to a number the patient
    hands back. The record's other mobile, with no end, is the one to text."""
    record = patient(
        "p1",
        telecom=[
            {
                "system": "phone",
                "use": "mobile",
                "value": "(202) 555-0143",
                "rank": 1,
                "period": {"start": "2026-02-01", "end": "2026-03-10"},  # March 2026 now
            },
            {"system": "phone", "use": "mobile", "value": "(202) 555-0188", "rank": 2},
        ],
    )

    result = run_import(
        {"b.json": bundle(record, procedure("x1", "Patient/p1"), consent("c1", "Patient/p1"))}
    )

    assert result.rows[0].outcome == "planned"
    session.expire_all()
    assert list(session.scalars(sa.select(Patient.phone))) == ["+12025550188"]


def test_a_first_ranked_mobile_in_use_for_years_is_kept_over_an_unranked_one(
    run_import: Importer, session: so.Session
) -> None:
    """An end years away is no reason to pass over the patient's first-ranked number."""
    record = patient(
        "p1",
        telecom=[
            {"system": "phone", "use": "mobile", "value": "(202) 555-0188", "rank": 2},
            {
                "system": "phone",
                "use": "mobile",
                "value": "(202) 555-0143",
                "rank": 1,
                "period": {"start": "2020-01-01", "end": "2030-12-31"},
            },
        ],
    )
    result = run_import(
        {"b.json": bundle(record, procedure("x1", "Patient/p1"), consent("c1", "Patient/p1"))}
    )
    assert result.rows[0].outcome == "planned"
    session.expire_all()
    assert list(session.scalars(sa.select(Patient.phone))) == ["+12025550143"]


def test_of_mobiles_that_all_stop_soon_the_one_lasting_longest_is_texted(
    run_import: Importer, session: so.Session
) -> None:
    record = patient(
        "p1",
        telecom=[
            {
                "system": "phone",
                "use": "mobile",
                "value": "(202) 555-0143",
                "rank": 1,
                "period": {"end": "2026-03-09"},
            },
            {
                "system": "phone",
                "use": "mobile",
                "value": "(202) 555-0188",
                "rank": 2,
                "period": {"end": "2026-03-30"},
            },
        ],
    )
    result = run_import(
        {"b.json": bundle(record, procedure("x1", "Patient/p1"), consent("c1", "Patient/p1"))}
    )
    assert result.rows[0].outcome == "planned"
    session.expire_all()
    assert list(session.scalars(sa.select(Patient.phone))) == ["+12025550188"]
