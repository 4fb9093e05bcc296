"""The FHIR R4 import format: a Bundle (JSON) or bulk-export NDJSON of Patient, Procedure
and Consent resources, read with the `fhir.resources` models.

`fhir.resources` 8 reads R4 data through its R4B models: FHIR 4.3 (R4B) left Patient,
Procedure and Consent exactly as 4.0.1 (R4) has them (the R5 models, the library's default,
moved Procedure.performed[x] to occurrence[x] and rewrote Consent).

One enrollment per Procedure, with its subject Patient:

- `Procedure.status` `completed`: `performedDateTime` is when it finished; `preparation`:
  `performedPeriod.start` is the booked time. Either must carry a time of day (FHIR then
  requires its UTC offset). Any other status is refused.
- `Procedure.code`: CPT 22510-22512 (vertebroplasty) or 22513-22515 (kyphoplasty, percutaneous
  vertebral augmentation), or the word kyphoplasty or vertebroplasty in `code.text` or a
  coding's `display`.
- The blood-thinner answer is the Procedure's extension BLOOD_THINNER_URL, with `takes`
  (valueBoolean, required), `name` (valueString, when taken) and `stopOn` (valueDate, a
  booked procedure's stop date). It belongs to this procedure: a patient's medication list
  cannot say which drug the doctor wants stopped, so the clinic states it.
- `Procedure.identifier[0].value` (else `Procedure/<id>`) is the external id that makes a
  second import of the same file add nothing.
- Patient: `name` (official, else usual, else the first) given and family; the mobile is
  the `telecom` with system `phone` (or `sms`) and use `mobile` in use now (its `period`,
  if any, includes now), lowest rank first; the language is the `communication` marked
  preferred (else the first), by its BCP 47 code's language (`es-MX` is `es`; none given:
  English); the time zone is the core extension TIMEZONE_URL (valueCode, IANA), else
  DEFAULT_TIMEZONE. A patient recorded deceased is refused.
- Consent: each patient needs an `active` Consent whose `patient` is them, with category
  coding SMS_CONSENT_SYSTEM|sms and `provision.type` permit (or no provision type),
  in effect now (`provision.period`). An active SMS Consent that denies refuses the patient.

The Patient's fields and the Consent's are read in fhirpatient.py; this module finds the
resources, ties them together and reads the Procedure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pydantic
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure

from followup.imports.fhirpatient import (
    SMS_CONSENT_CODE,
    SMS_CONSENT_SYSTEM,
    extension_code,
    is_sms_consent,
    mobile_in_use,
    mobile_points,
    patient_language,
    patient_name,
    sms_consent_problem,
)
from followup.imports.source import (
    FHIR_BUNDLE,
    FHIR_NDJSON,
    MAX_IMPORT_ROWS,
    FileRefused,
    ImportItem,
    ParsedImport,
    Upload,
    decode_utf8,
    detect_format,
    patient_label,
)
from followup.patients.bulk import BulkRow
from followup.patients.validation import EnrollmentForm

BLOOD_THINNER_URL = "https://followup.example/fhir/StructureDefinition/blood-thinner"
TIMEZONE_URL = "http://hl7.org/fhir/StructureDefinition/timezone"
CPT_SYSTEM = "http://www.ama-assn.org/go/cpt"
CPT_KINDS = {
    "22510": "vertebroplasty",
    "22511": "vertebroplasty",
    "22512": "vertebroplasty",
    "22513": "kyphoplasty",
    "22514": "kyphoplasty",
    "22515": "kyphoplasty",
}
FIELD_NAMES = {
    "first_name": "Patient.name.given",
    "last_name": "Patient.name.family",
    "phone": "Patient.telecom",
    "language": "Patient.communication",
    "timezone": "Patient.extension (timezone)",
    "procedure": "Procedure.code",
    "completed_at": "Procedure.performedDateTime",
    "scheduled_at": "Procedure.performedPeriod.start",
    "takes_blood_thinner": "Procedure.extension (blood-thinner) takes",
    "blood_thinner": "Procedure.extension (blood-thinner) name",
    "stop_blood_thinner_on": "Procedure.extension (blood-thinner) stopOn",
    "consent": "Consent",
    "external_id": "Procedure.identifier",
}
_MODELS: dict[str, type[Patient] | type[Procedure] | type[Consent]] = {
    "Patient": Patient,
    "Procedure": Procedure,
    "Consent": Consent,
}


@dataclass
class _Resource:
    where: str  # "entry 3" or "Procedure.ndjson line 7"
    full_url: str | None
    model: Patient | Procedure | Consent

    @property
    def ref(self) -> str:
        name = f"{self.model.get_resource_type()}/{self.model.id}" if self.model.id else ""
        return f"{self.where} {name}".strip()


@dataclass
class _Collected:
    patients: list[_Resource] = field(default_factory=list)
    procedures: list[_Resource] = field(default_factory=list)
    consents: list[_Resource] = field(default_factory=list)
    refused: list[ImportItem] = field(default_factory=list)  # unreadable resources
    ignored: dict[str, int] = field(default_factory=dict)  # other resource types, counted


def parse_fhir(uploads: list[Upload], *, default_timezone: str, now: datetime) -> ParsedImport:
    """Read FHIR Bundles and NDJSON files as one set of resources; one item per Procedure
    (and per Patient without one, and per resource that could not be read)."""
    collected = _Collected()
    formats = set()
    for upload in uploads:
        text = decode_utf8(upload)
        if detect_format(upload) == FHIR_NDJSON:
            formats.add(FHIR_NDJSON)
            _read_ndjson(upload, text, collected, prefix=len(uploads) > 1)
        else:
            formats.add(FHIR_BUNDLE)
            _read_bundle(upload, text, collected, prefix=len(uploads) > 1)
    if len(collected.procedures) > MAX_IMPORT_ROWS:
        raise FileRefused(
            f"{uploads[0].name}: has more than {MAX_IMPORT_ROWS:,} Procedures; split the file"
        )
    items = _items(collected, default_timezone=default_timezone, now=now)
    if not items:
        raise FileRefused(f"{uploads[0].name}: has no Patient or Procedure resources")
    notes = [
        f"ignored {count:,} {kind} resource{'s' if count > 1 else ''} (not read by the import)"
        for kind, count in sorted(collected.ignored.items())
    ]
    return ParsedImport(format="+".join(sorted(formats)), items=items, notes=notes)


def _read_bundle(upload: Upload, text: str, collected: _Collected, *, prefix: bool) -> None:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileRefused(
            f"{upload.name}: is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "a FHIR import is a Bundle in JSON or NDJSON, one resource a line"
        ) from exc
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        kind = document.get("resourceType") if isinstance(document, dict) else None
        raise FileRefused(
            f"{upload.name}: is not a FHIR Bundle"
            + (f" (its resourceType is {kind!r})" if kind else "")
        )
    entries = document.get("entry") or []
    shell = {key: value for key, value in document.items() if key != "entry"}
    try:
        Bundle.model_validate(shell)
    except pydantic.ValidationError as exc:
        raise FileRefused(f"{upload.name}: is not a valid Bundle: {_errors(exc)}") from exc
    if not isinstance(entries, list):
        raise FileRefused(f"{upload.name}: Bundle.entry is not a list")
    where_prefix = f"{upload.name} " if prefix else ""
    for number, entry in enumerate(entries, start=1):
        where = f"{where_prefix}entry {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            collected.refused.append(_unreadable(where, "Bundle.entry has no resource"))
            continue
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        _add(where, full_url, entry["resource"], collected)


def _read_ndjson(upload: Upload, text: str, collected: _Collected, *, prefix: bool) -> None:
    where_prefix = f"{upload.name} " if prefix else ""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{where_prefix}line {number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            collected.refused.append(_unreadable(where, f"is not JSON ({exc.msg})"))
            continue
        if not isinstance(raw, dict):
            collected.refused.append(_unreadable(where, "is not a FHIR resource"))
            continue
        _add(where, None, raw, collected)


def _add(where: str, full_url: str | None, raw: dict[str, Any], collected: _Collected) -> None:
    kind = raw.get("resourceType")
    model_class = _MODELS.get(kind) if isinstance(kind, str) else None
    if model_class is None:
        name = kind if isinstance(kind, str) else "(no resourceType)"
        collected.ignored[name] = collected.ignored.get(name, 0) + 1
        return
    try:
        model = model_class.model_validate(raw)
    except pydantic.ValidationError as exc:
        resource_id = raw.get("id")
        name = f"{kind}/{resource_id}" if isinstance(resource_id, str) else str(kind)
        collected.refused.append(_unreadable(f"{where} {name}", f"{kind}: {_errors(exc)}"))
        return
    resource = _Resource(where=where, full_url=full_url, model=model)
    if isinstance(model, Patient):
        collected.patients.append(resource)
    elif isinstance(model, Procedure):
        collected.procedures.append(resource)
    else:
        collected.consents.append(resource)


def _errors(exc: pydantic.ValidationError) -> str:
    """The FHIR library's first few complaints, each with its path."""
    parts = []
    for error in exc.errors()[:3]:
        path = ".".join(str(part) for part in error["loc"]) or "(resource)"
        parts.append(f"{path}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _unreadable(ref: str, message: str) -> ImportItem:
    return ImportItem(ref=ref, patient="-", row=None, field_names=FIELD_NAMES, errors={"": message})


# --- references -----------------------------------------------------------------------------


def _keys(resource: _Resource) -> set[str]:
    """Every reference that points at this resource."""
    keys = set()
    if resource.model.id:
        keys.add(f"{resource.model.get_resource_type()}/{resource.model.id}")
    if resource.full_url:
        keys.add(resource.full_url)
        keys.add(_relative(resource.full_url))
    return keys


def _relative(reference: str) -> str:
    """`http://ehr/fhir/Patient/7/_history/2` and `Patient/7` both as `Patient/7`."""
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        return reference
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else reference


def _reference(value: Any) -> str | None:
    reference = getattr(value, "reference", None) if value is not None else None
    return _relative(reference) if isinstance(reference, str) and reference else None


# --- the items ----------------------------------------------------------------------------


@dataclass
class _PatientFacts:
    resource: _Resource
    first: str
    last: str
    phone: str
    language: str
    timezone: str
    deceased: bool
    consent_problem: str | None  # None: an active SMS consent is in effect


def _items(collected: _Collected, *, default_timezone: str, now: datetime) -> list[ImportItem]:
    facts: dict[str, _PatientFacts] = {}
    items: list[ImportItem] = list(collected.refused)
    consents = _consents_by_patient(collected.consents, now)
    for resource in collected.patients:
        keys = _keys(resource)
        earlier = next((facts[key] for key in keys if key in facts), None)
        if earlier is not None:
            items.append(
                _unreadable(
                    resource.ref,
                    f"Patient: the same patient as {earlier.resource.ref}; the first is used",
                )
            )
            continue
        patient_facts = _patient_facts(resource, keys, consents, default_timezone, now)
        for key in keys:
            facts[key] = patient_facts
    with_procedure: set[int] = set()
    for resource in collected.procedures:
        subject = _reference(getattr(resource.model, "subject", None))
        patient = facts.get(subject) if subject else None
        if patient is None:
            problem = (
                "Procedure.subject: names no patient"
                if subject is None
                else f"Procedure.subject: {subject} is not in the file (or could not be read)"
            )
            items.append(_unreadable(resource.ref, problem))
            continue
        with_procedure.add(id(patient))
        items.append(_procedure_item(resource, patient))
    for patient in {id(p): p for p in facts.values()}.values():
        if id(patient) not in with_procedure:
            items.append(
                ImportItem(
                    ref=patient.resource.ref,
                    patient=patient_label(patient.first, patient.last, patient.phone),
                    row=None,
                    field_names=FIELD_NAMES,
                    errors={"Procedure": "no Procedure in the file names this patient"},
                )
            )
    return items


def _patient_facts(
    resource: _Resource,
    keys: set[str],
    consents: dict[str, list[str | None]],
    default_timezone: str,
    now: datetime,
) -> _PatientFacts:
    patient = resource.model
    assert isinstance(patient, Patient)  # noqa: S101 - sorted by resourceType
    first, last = patient_name(patient)
    problems = [problem for key in keys for problem in consents.get(key, [])]
    if not problems:
        consent_problem: str | None = (
            "no active Consent for SMS names this patient (status active, category "
            f"{SMS_CONSENT_SYSTEM}|{SMS_CONSENT_CODE}, provision permit)"
        )
    elif None in problems:
        deny = [problem for problem in problems if problem is not None and "denies" in problem]
        consent_problem = deny[0] if deny else None
    else:
        consent_problem = next(problem for problem in problems if problem is not None)
    return _PatientFacts(
        resource=resource,
        first=first,
        last=last,
        phone=mobile_in_use(patient, now),
        language=patient_language(patient),
        timezone=extension_code(patient, TIMEZONE_URL) or default_timezone,
        deceased=bool(patient.deceasedBoolean) or patient.deceasedDateTime is not None,
        consent_problem=consent_problem,
    )


def _consents_by_patient(consents: list[_Resource], now: datetime) -> dict[str, list[str | None]]:
    """For each patient reference: None for each SMS consent in effect, else why not."""
    by_patient: dict[str, list[str | None]] = {}
    for resource in consents:
        consent = resource.model
        assert isinstance(consent, Consent)  # noqa: S101 - sorted by resourceType
        patient = _reference(consent.patient)
        if patient is None or not is_sms_consent(consent):
            continue
        by_patient.setdefault(patient, []).append(sms_consent_problem(consent, resource.ref, now))
    return by_patient


def _procedure_item(resource: _Resource, patient: _PatientFacts) -> ImportItem:
    procedure = resource.model
    assert isinstance(procedure, Procedure)  # noqa: S101 - sorted by resourceType
    errors: dict[str, str] = {}
    completed_at = scheduled_at = ""
    if procedure.status == "completed":
        completed_at = _moment(
            procedure.performedDateTime, "completed_at", errors, "when it finished"
        )
        if procedure.performedDateTime is None and procedure.performedPeriod is not None:
            errors["completed_at"] = "is missing: give performedDateTime, when it finished"
    elif procedure.status == "preparation":
        start = procedure.performedPeriod.start if procedure.performedPeriod else None
        scheduled_at = _moment(start, "scheduled_at", errors, "the booked time")
    else:
        errors["status"] = (
            f"is {procedure.status!r}; only completed (with performedDateTime) or "
            "preparation (with performedPeriod.start) are imported"
        )
    kind = _kind(procedure)
    if kind is None:
        errors["procedure"] = (
            "is neither kyphoplasty nor vertebroplasty (CPT 22510-22515, or the word in code.text)"
        )
    takes, name, stop_on = _blood_thinner(procedure, errors)
    if patient.deceased:
        errors["deceased"] = "the patient is recorded as deceased (Patient.deceased)"
    if patient.consent_problem is not None:
        errors["consent"] = patient.consent_problem
    if not patient.phone:
        errors["phone"] = (
            "has no mobile number in use now (each one's period has ended or not begun)"
            if mobile_points(patient.resource.model)
            else "has no mobile number (system phone, use mobile)"
        )
    form = EnrollmentForm(
        first_name=patient.first,
        last_name=patient.last,
        phone=patient.phone,
        procedure=kind or "",
        timezone=patient.timezone,
        completed_at=completed_at,
        scheduled_at=scheduled_at,
        language=patient.language,
        takes_blood_thinner=takes,
        blood_thinner=name,
        stop_blood_thinner_on=stop_on,
        consent=patient.consent_problem is None,
        external_id=_external_id(procedure),
    )
    ref = f"{resource.ref} ({patient.resource.ref.split(' ')[-1]})"
    return ImportItem(
        ref=ref,
        patient=patient_label(patient.first, patient.last, patient.phone),
        row=BulkRow(ref=ref, form=form, format_errors=errors),
        field_names=FIELD_NAMES | {"status": "Procedure.status", "deceased": "Patient.deceased"},
    )


def _moment(value: Any, name: str, errors: dict[str, str], what: str) -> str:
    if value is None:
        errors[name] = f"is missing: {what}"
        return ""
    if not isinstance(value, datetime):
        errors[name] = f"{value} has no time of day: give {what} with its time and offset"
        return ""
    return value.isoformat()


def _kind(procedure: Procedure) -> str | None:
    code = procedure.code
    if code is None:
        return None
    kinds = set()
    words = [str(code.text or "")]
    for coding in code.coding or []:
        if coding.system == CPT_SYSTEM and str(coding.code) in CPT_KINDS:
            kinds.add(CPT_KINDS[str(coding.code)])
        words.append(str(coding.display or ""))
    for kind in ("kyphoplasty", "vertebroplasty"):
        if any(kind in word.lower() for word in words):
            kinds.add(kind)
    return kinds.pop() if len(kinds) == 1 else None


def _blood_thinner(
    procedure: Procedure, errors: dict[str, str]
) -> tuple[bool | None, str | None, str | None]:
    """The blood-thinner answer in the Procedure's extension: (takes, name, stop date)."""
    found = [ext for ext in procedure.extension or [] if ext.url == BLOOD_THINNER_URL]
    if not found:
        errors["takes_blood_thinner"] = (
            f"is missing: the Procedure needs the extension {BLOOD_THINNER_URL} with "
            "takes (valueBoolean)"
        )
        return None, None, None
    parts = {ext.url: ext for ext in found[0].extension or []}
    takes_part = parts.get("takes")
    takes = takes_part.valueBoolean if takes_part is not None else None
    if takes is None:
        errors["takes_blood_thinner"] = "is missing: the extension needs takes (valueBoolean)"
    name_part = parts.get("name")
    stop_part = parts.get("stopOn")
    name = str(name_part.valueString) if name_part and name_part.valueString else None
    stop_on = stop_part.valueDate if stop_part is not None else None
    return takes, name, stop_on.isoformat() if isinstance(stop_on, date) else None


def _external_id(procedure: Procedure) -> str | None:
    for identifier in procedure.identifier or []:
        if identifier.value:
            return str(identifier.value)
    return f"Procedure/{procedure.id}" if procedure.id else None
