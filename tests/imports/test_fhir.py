"""FHIR R4 imports (Bundles and bulk-export NDJSON) through fhir.resources and the real
services, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.imports.source import FileRefused
from followup.patients.models import Patient, Procedure
from tests.imports.conftest import Importer, counts
from tests.imports.helpers import blood_thinner, bundle, consent, ndjson, patient, procedure


def test_a_bundle_enrolls_each_consenting_patients_procedures_and_refuses_the_rest(
    run_import: Importer, session: so.Session
) -> None:
    text = bundle(
        patient("p1", timezone="America/Chicago"),
        procedure(
            "x1",
            "Patient/p1",
            thinner=blood_thinner(True, "Eliquis"),
            performed="2026-03-06T13:30:00-06:00",
        ),
        consent("c1", "Patient/p1"),
        patient("p2", given="Luis", family="Muñoz", phone="+1 312 555 0177", language="es-MX"),
        procedure(
            "x2",
            "Patient/p2",
            status="preparation",
            performed="2026-03-12T09:00:00-05:00",
            cpt=None,
            text="Vertebroplasty L2",
            thinner=blood_thinner(True, "warfarin", "2026-03-07"),
            identifier="CASE-22",
        ),
        consent("c2", "Patient/p2"),
        patient("p3", given="Bea", phone="202-555-0199"),  # no Consent
        procedure("x3", "Patient/p3"),
        procedure("x4", None),  # no subject
        procedure("x5", "Patient/nobody"),
        patient("p6", given="Cy", phone="202-555-0166"),  # no Procedure
        consent("c6", "Patient/p6"),
        {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"}},
    )

    result = run_import({"export.json": text})

    assert result.summary.format == "fhir-bundle"
    assert result.summary.notes == ["ignored 1 Encounter resource (not read by the import)"]
    x1 = result.by_ref("entry 2 Procedure/x1")
    assert x1.ref == "entry 2 Procedure/x1 (Patient/p1)"
    assert x1.outcome == "planned"
    assert "kyphoplasty finished Fri 2026-03-06 13:30 CST" in x1.detail
    assert "blood thinner Eliquis" in x1.detail
    x2 = result.by_ref("entry 5 Procedure/x2")
    assert x2.outcome == "planned"
    assert x2.patient == "Luis Muñoz (phone ending 0177)"
    assert "vertebroplasty booked Thu 2026-03-12 10:00 EDT" in x2.detail  # 09:00-05:00
    assert result.by_ref("entry 8 Procedure/x3").detail.startswith(
        "Consent: no active Consent for SMS names this patient"
    )
    # R4 requires Procedure.subject: the FHIR library refuses the resource itself.
    assert result.by_ref("entry 9 Procedure/x4").detail == "Procedure: subject: Field required"
    assert result.by_ref("entry 10 Procedure/x5").detail == (
        "Procedure.subject: Patient/nobody is not in the file (or could not be read)"
    )
    assert (
        result.by_ref("entry 11 Patient/p6").detail
        == "Procedure: no Procedure in the file names this patient"
    )
    assert (result.summary.planned, result.summary.refused) == (2, 4)

    patients = session.scalars(sa.select(Patient).order_by(Patient.id)).all()
    assert [(p.first_name, p.phone, p.language, p.timezone) for p in patients] == [
        ("Ada", "+12025550143", "en", "America/Chicago"),
        ("Luis", "+13125550177", "es", "America/New_York"),
    ]
    procedures = session.scalars(sa.select(Procedure).order_by(Procedure.id)).all()
    assert [(p.kind, p.status, p.external_id, p.blood_thinner) for p in procedures] == [
        ("kyphoplasty", "completed", "Procedure/x1", "Eliquis"),
        ("vertebroplasty", "scheduled", "CASE-22", "warfarin"),
    ]

    again = run_import({"export.json": text})
    assert (again.summary.planned, again.summary.already, again.summary.refused) == (0, 2, 4)
    assert counts(session)["patients"] == 2


def test_bulk_export_ndjson_files_are_read_together(
    run_import: Importer, session: so.Session
) -> None:
    files = {
        "Patient.ndjson": ndjson(patient("p1"), patient("p2", phone="202-555-0122")),
        "Procedure.ndjson": ndjson(
            procedure("x1", "Patient/p1"), procedure("x2", "Patient/p2", cpt="22511")
        )
        + "{not json\n",
        "Consent.ndjson": ndjson(consent("c1", "Patient/p1"), consent("c2", "Patient/p2")),
    }

    result = run_import(files)

    assert result.summary.format == "fhir-ndjson"
    assert [r.outcome for r in result.rows].count("planned") == 2
    broken = result.by_ref("Procedure.ndjson line 3")
    assert broken.outcome == "refused"
    assert broken.detail.startswith("is not JSON (")
    kinds = session.scalars(sa.select(Procedure.kind).order_by(Procedure.id)).all()
    assert kinds == ["kyphoplasty", "vertebroplasty"]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (
            [consent("c1", "Patient/p1", status="inactive")],
            "Consent: the SMS Consent (entry 3 Consent/c1) is inactive, not active",
        ),
        (
            [consent("c1", "Patient/p1"), consent("c2", "Patient/p1", provision="deny")],
            "Consent: the SMS Consent (entry 4 Consent/c2) denies texts",
        ),
        (
            [consent("c1", "Patient/p1", period_end="2026-02-28")],
            "Consent: the SMS Consent (entry 3 Consent/c1) ended 2026-02-28",
        ),
    ],
)
def test_a_patient_without_an_active_sms_consent_in_effect_is_refused(
    run_import: Importer, session: so.Session, resources: list[dict[str, object]], expected: str
) -> None:
    result = run_import(
        {"b.json": bundle(patient("p1"), procedure("x1", "Patient/p1"), *resources)}
    )

    assert result.rows[0].outcome == "refused"
    assert result.rows[0].detail == expected
    assert counts(session)["patients"] == 0


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"status": "in-progress"}, "Procedure.status: is 'in-progress'; only completed"),
        ({"performed": "2026-03-06"}, "Procedure.performedDateTime: 2026-03-06 has no time of day"),
        ({"cpt": "27447"}, "Procedure.code: is neither kyphoplasty nor vertebroplasty"),
        (
            {"thinner": {"url": "https://example.org/other"}},
            "Procedure.extension (blood-thinner) takes: is missing",
        ),
        (
            {"thinner": blood_thinner(True)},
            "Procedure.extension (blood-thinner) name: is required when the patient takes one",
        ),
        (
            {"performed": "2026-03-20T10:00:00-04:00"},
            "Procedure.performedDateTime: is in the future",
        ),
    ],
)
def test_a_procedure_that_cannot_be_enrolled_is_refused_naming_its_fhir_field(
    run_import: Importer, session: so.Session, changes: dict[str, object], expected: str
) -> None:
    text = bundle(
        patient("p1"), procedure("x1", "Patient/p1", **changes), consent("c1", "Patient/p1")
    )  # type: ignore[arg-type]

    result = run_import({"b.json": text})

    assert result.rows[0].outcome == "refused"
    assert expected in result.rows[0].detail
    assert counts(session)["procedures"] == 0


def test_a_patient_without_a_mobile_or_recorded_deceased_is_refused(run_import: Importer) -> None:
    text = bundle(
        patient("p1", phone=None),
        procedure("x1", "Patient/p1"),
        consent("c1", "Patient/p1"),
        patient("p2", phone="202-555-0122", deceasedBoolean=True),
        procedure("x2", "Patient/p2"),
        consent("c2", "Patient/p2"),
    )

    result = run_import({"b.json": text})

    assert (
        result.rows[0].detail == "Patient.telecom: has no mobile number (system phone, use mobile)"
    )
    assert (
        result.rows[1].detail
        == "Patient.deceased: the patient is recorded as deceased (Patient.deceased)"
    )


def test_a_resource_the_fhir_library_refuses_is_reported_with_its_path(
    run_import: Importer,
) -> None:
    bad = procedure("x1", "Patient/p1") | {"performedDateTime": "yesterday", "subject": "p1"}

    result = run_import({"b.json": bundle(patient("p1"), bad, consent("c1", "Patient/p1"))})

    refused = result.by_ref("entry 2 Procedure/x1")
    assert refused.outcome == "refused"
    assert refused.detail.startswith("Procedure: ")
    assert "performedDateTime" in refused.detail
    assert "subject" in refused.detail
    assert (
        result.by_ref("entry 1 Patient/p1").detail
        == "Procedure: no Procedure in the file names this patient"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"resourceType": "Bundle", "entry": [',
            "b.json: is not JSON (Expecting value at line 1 column 38)",
        ),
        ("not json at all", "b.json: is not JSON (Expecting value at line 1 column 1)"),
        (json.dumps(patient("p1")), "b.json: is not a FHIR Bundle (its resourceType is 'Patient')"),
        (
            '{"resourceType": "Bundle", "type": "collection", "total": "many"}',
            "b.json: is not a valid Bundle: total: ",
        ),
        (
            '{"resourceType": "Bundle", "type": "collection"}',
            "b.json: has no Patient or Procedure resources",
        ),
    ],
)
def test_a_bundle_that_is_not_a_bundle_is_refused_whole(
    run_import: Importer, session: so.Session, text: str, message: str
) -> None:
    with pytest.raises(FileRefused) as refused:
        run_import({"b.json": text})
    assert str(refused.value).startswith(message)
    assert counts(session)["patients"] == 0
