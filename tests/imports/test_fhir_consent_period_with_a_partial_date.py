"""A Consent's `provision.period` is a FHIR Period of dateTimes, and a FHIR dateTime may be
a year ("2027") or a year and month ("2026-12"). fhir.resources keeps such a value as the
string; the consent check turned it into an instant with `datetime.fromisoformat`, which
raises ValueError on both. The error is not a refusal of that patient: it escapes the
FHIR reader, so the whole file is lost (`followup import` prints an unexpected error,
the page "the file could not be read"), and every other patient in it gets no text.

Expected: a period that ends in 2027 is in effect on 2026-03-06 (the patient is planned),
one that ended in February 2026 refuses that patient with the usual line, and the other
patients of the file are imported either way.
"""

from __future__ import annotations

import pytest

from tests.imports.conftest import Importer
from tests.imports.helpers import bundle, consent, patient, procedure


@pytest.mark.parametrize(
    ("period_end", "outcome", "detail"),
    [
        ("2027", "planned", "patient "),
        ("2026-12", "planned", "patient "),
        ("2026-02", "refused", "Consent: the SMS Consent (entry 3 Consent/c1) ended 2026-02"),
    ],
)
def test_a_consent_period_ending_in_a_year_or_month_is_read_and_the_file_imports(
    run_import: Importer, period_end: str, outcome: str, detail: str
) -> None:
    text = bundle(
        patient("p1"),
        procedure("x1", "Patient/p1"),
        consent("c1", "Patient/p1", period_end=period_end),
        patient("p2", given="Luis", family="Muñoz", phone="+1 312 555 0177"),
        procedure("x2", "Patient/p2"),
        consent("c2", "Patient/p2"),
    )

    try:
        result = run_import({"export.json": text})
    except ValueError as exc:
        pytest.fail(
            f"a Consent whose provision.period.end is {period_end!r} (a valid FHIR dateTime) "
            f"stopped the whole import with {type(exc).__name__}: {exc}; neither patient "
            "of the file was imported"
        )

    x1 = result.by_ref("entry 2 Procedure/x1")
    assert (x1.outcome, x1.detail[: len(detail)]) == (outcome, detail)
    assert result.by_ref("entry 5 Procedure/x2").outcome == "planned"
