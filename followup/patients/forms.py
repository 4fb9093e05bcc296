"""Enrollment and patient-page forms: rendering and typed values only.

The rules live in followup/patients/validation.py; views put its errors on these fields.
CSRF is checked for every POST by CSRFProtect.
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TelField,
)

from followup.care.vocabulary import LANGUAGES, PROCEDURE_KINDS

LANGUAGE_NAMES = {"en": "English", "es": "Spanish (Español)"}
LANGUAGE_CHOICES = [SelectChoice(code, LANGUAGE_NAMES.get(code, code)) for code in LANGUAGES]
PROCEDURE_CHOICES = [SelectChoice(kind, kind.capitalize()) for kind in PROCEDURE_KINDS]
TIMEZONES = (
    ("America/New_York", "Eastern (New York)"),
    ("America/Chicago", "Central (Chicago)"),
    ("America/Denver", "Mountain (Denver)"),
    ("America/Phoenix", "Arizona (Phoenix, no DST)"),
    ("America/Los_Angeles", "Pacific (Los Angeles)"),
    ("America/Anchorage", "Alaska (Anchorage)"),
    ("Pacific/Honolulu", "Hawaii (Honolulu)"),
    ("America/Puerto_Rico", "Atlantic (Puerto Rico)"),
)
COMMON_BLOOD_THINNERS = (
    "Eliquis",
    "Xarelto",
    "warfarin",
    "Coumadin",
    "Plavix",
    "Pradaxa",
    "Brilinta",
    "Effient",
    "Savaysa",
    "Lovenox",
    "aspirin",
)


def timezone_choices(default: str) -> list[SelectChoice]:
    """The zones a nurse picks from, with the clinic's own zone first."""
    zones = list(TIMEZONES)
    if all(name != default for name, _ in zones):
        zones.insert(0, (default, default))
    zones.sort(key=lambda zone: zone[0] != default)
    return [SelectChoice(name, label) for name, label in zones]


class _Form(FlaskForm):  # type: ignore[misc]
    class Meta:
        csrf = False  # the template adds the token; CSRFProtect checks it


WHEN_CHOICES = [
    SelectChoice("done", "Already done"),
    SelectChoice("booked", "Booked for a later time"),
]
YES_NO = [SelectChoice("yes", "Yes"), SelectChoice("no", "No")]


class EnrollForm(_Form):
    first_name = StringField("First name")
    last_name = StringField("Last name")
    phone = TelField("Mobile phone")
    language = SelectField("Language of the texts", choices=LANGUAGE_CHOICES, default="en")
    procedure = SelectField("Procedure", choices=PROCEDURE_CHOICES)
    when = RadioField("The procedure is", choices=WHEN_CHOICES, default="done")
    completed_at = StringField("Finished at (local date and time)")
    scheduled_at = StringField("Booked for (local date and time)")
    # Offered only when the time typed happens twice (the night the clocks go back).
    time_offset = RadioField("Which one?", choices=[], validate_choice=False)
    timezone = SelectField("Patient's time zone")
    takes_blood_thinner = RadioField(
        "Does the patient take a blood thinner?", choices=YES_NO, validate_choice=False
    )
    blood_thinner = StringField("Which blood thinner")
    stop_blood_thinner_on = StringField("Date the doctor gave to stop it")
    consent = BooleanField("The patient agreed to receive these texts")


class SearchForm(_Form):
    q = StringField("Name or last 4 digits of the phone")


class CompletionForm(_Form):
    procedure_id = HiddenField()
    completed_at = StringField("Corrected completion (local date and time)")


class FinishedForm(_Form):
    procedure_id = HiddenField()
    completed_at = StringField("Finished at (local date and time)")


class RescheduleForm(_Form):
    procedure_id = HiddenField()
    scheduled_at = StringField("New booked time (local date and time)")
    stop_blood_thinner_on = StringField("New stop date for the blood thinner (if it moved)")


class CancelForm(_Form):
    procedure_id = HiddenField()
    confirm = BooleanField("Yes, cancel this procedure and all its pending texts")


class PhoneForm(_Form):
    phone = TelField("New mobile phone")


class LanguageForm(_Form):
    language = SelectField("Language of the texts", choices=LANGUAGE_CHOICES)


class OptOutForm(_Form):
    confirm = BooleanField("The patient asked us, by phone, to stop the texts")
