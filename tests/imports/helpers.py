"""Import files made in the tests: CSV rows and FHIR resources, good and bad."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from followup.imports.csvformat import HEADER
from followup.imports.fhirformat import (
    BLOOD_THINNER_URL,
    CPT_SYSTEM,
    TIMEZONE_URL,
)
from followup.imports.fhirpatient import SMS_CONSENT_SYSTEM

# START (conftest) is Friday 2026-03-06 15:00 in New York.
DONE = {
    "first_name": "Ada",
    "last_name": "Moreno",
    "mobile_phone": "202-555-0143",
    "language": "en",
    "timezone": "America/New_York",
    "procedure": "kyphoplasty",
    "completed_at": "2026-03-06T13:30",
    "scheduled_at": "",
    "takes_blood_thinner": "yes",
    "blood_thinner": "Eliquis",
    "stop_blood_thinner_on": "",
    "sms_consent": "yes",
    "external_id": "CASE-1",
}
BOOKED = {
    "first_name": "Luis",
    "last_name": "Muñoz",
    "mobile_phone": "+1 312 555 0177",
    "language": "es",
    "timezone": "America/Chicago",
    "procedure": "vertebroplasty",
    "completed_at": "",
    "scheduled_at": "2026-03-12T09:00",
    "takes_blood_thinner": "yes",
    "blood_thinner": "warfarin",
    "stop_blood_thinner_on": "2026-03-07",
    "sms_consent": "yes",
    "external_id": "CASE-2",
}
BAD = {
    "first_name": "Bea",
    "last_name": "Lopez",
    "mobile_phone": "12",
    "language": "fr",
    "timezone": "Mars/Olympus",
    "procedure": "hip",
    "completed_at": "2026-03-06T13:30",
    "scheduled_at": "",
    "takes_blood_thinner": "maybe",
    "blood_thinner": "",
    "stop_blood_thinner_on": "",
    "sms_consent": "no",
    "external_id": "CASE-3",
}


def csv_text(*rows: dict[str, str], header: list[str] | None = None) -> str:
    out = io.StringIO()
    names = header or HEADER
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([row.get(name, "") for name in names])
    return out.getvalue()


def row(base: dict[str, str], **changes: str) -> dict[str, str]:
    return base | changes


# --- FHIR ---------------------------------------------------------------------------------


def patient(
    pid: str,
    *,
    given: str = "Ada",
    family: str = "Moreno",
    phone: str | None = "(202) 555-0143",
    language: str | None = "en-US",
    timezone: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"use": "official", "family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": "(202) 555-0100", "use": "work"}],
    }
    if phone:
        resource["telecom"].append({"system": "phone", "value": phone, "use": "mobile"})
    if language:
        resource["communication"] = [
            {
                "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]},
                "preferred": True,
            }
        ]
    if timezone:
        resource["extension"] = [{"url": TIMEZONE_URL, "valueCode": timezone}]
    return resource | extra


def blood_thinner(
    takes: bool | None, name: str | None = None, stop_on: str | None = None
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if takes is not None:
        parts.append({"url": "takes", "valueBoolean": takes})
    if name:
        parts.append({"url": "name", "valueString": name})
    if stop_on:
        parts.append({"url": "stopOn", "valueDate": stop_on})
    return {"url": BLOOD_THINNER_URL, "extension": parts}


def procedure(
    rid: str,
    subject: str | None,
    *,
    status: str = "completed",
    performed: str | None = "2026-03-06T13:30:00-05:00",
    cpt: str | None = "22513",
    text: str | None = None,
    thinner: dict[str, Any] | None = None,
    identifier: str | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Procedure", "id": rid, "status": status}
    if subject:
        resource["subject"] = {"reference": subject}
    code: dict[str, Any] = {}
    if cpt:
        code["coding"] = [{"system": CPT_SYSTEM, "code": cpt}]
    if text:
        code["text"] = text
    if code:
        resource["code"] = code
    if performed and status == "preparation":
        resource["performedPeriod"] = {"start": performed}
    elif performed:
        resource["performedDateTime"] = performed
    resource["extension"] = [thinner if thinner is not None else blood_thinner(False)]
    if identifier:
        resource["identifier"] = [{"system": "urn:example:cases", "value": identifier}]
    return resource


def consent(
    cid: str,
    subject: str,
    *,
    status: str = "active",
    provision: str | None = "permit",
    period_end: str | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "id": cid,
        "status": status,
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": SMS_CONSENT_SYSTEM, "code": "sms"}]}],
        "patient": {"reference": subject},
    }
    if provision or period_end:
        resource["provision"] = {}
        if provision:
            resource["provision"]["type"] = provision
        if period_end:
            resource["provision"]["period"] = {"end": period_end}
    return resource


def bundle(*resources: dict[str, Any]) -> str:
    return json.dumps(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{r.get('id', i)}", "resource": r}
                for i, r in enumerate(resources)
            ],
        },
        indent=1,
    )


def ndjson(*resources: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in resources)
