"""Care protocols: TOML data, loaded and validated once at start-up. Pure (no I/O but files).

A protocol lists steps in the order they go out: the steps before the procedure (timed from
the booked time, the blood-thinner stop date or enrollment), then the steps after it (timed
from completion). Each step has one text per language, and may have two variants: one for a
patient who takes a blood thinner (`text_blood_thinner`), one for when it is the first text
the patient receives (`first_text`, which must introduce the program).
"""

from __future__ import annotations

import re
import string
import tomllib
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from followup.care import gsm
from followup.care.texts import (
    MAX_BLOOD_THINNER_LENGTH,
    MAX_TEXT_COUNT,
    PLACEHOLDERS,
    describe_date,
    describe_local_time,
    longest_date,
    longest_local_time,
    render,
)
from followup.care.timing import (
    BEFORE_ANCHORS,
    ENROLLED,
    Anchors,
    QuietHours,
    TimingSpec,
    parse_timing,
)
from followup.care.vocabulary import LANGUAGES, PROCEDURE_KINDS
from followup.errors import ConfigurationError

# Segment budgets: a GSM-7 text at most 2 segments (306 characters), a UCS-2 text (Spanish
# with its accents) at most 4 (268 UTF-16 units). English must stay GSM-7: one curly quote
# would double the cost of every English text without anyone noticing.
MAX_SEGMENTS = 2
MAX_SEPTETS = MAX_SEGMENTS * gsm.MULTI_SEGMENT  # 306
MAX_UCS2_SEGMENTS = 4
MAX_UCS2_UNITS = MAX_UCS2_SEGMENTS * gsm.UCS2_MULTI_SEGMENT  # 268
GSM_ONLY_LANGUAGES = frozenset({"en"})
ORDINARY_NAME_LENGTH = 20  # "Example Spine Clinic"
ORDINARY_PHONE_LENGTH = 14  # "(202) 555-0100"
CONDITIONS = frozenset({"blood_thinner"})
BEFORE = "before"
AFTER = "after"
# What the first text a patient receives must carry (carriers' opt-in confirmation).
# The anchors a text can name, by the placeholder that names them.
NAMED_BY_TEXT = {"scheduled": "{procedure_time}", "stop": "{stop_date}"}
INTRO_WORDS = {
    "en": ("HELP", "STOP", "Msg & data rates may apply"),
    "es": ("HELP", "STOP", "Pueden aplicarse tarifas de mensajes y datos"),
}
# An emergency number written out instead of {emergency_number}: wrong for other regions.
_LITERAL_EMERGENCY_RE = re.compile(r"(?<![\d-])(911|112|999|000|111)(?![\d-])")
# A sent text before the procedure naming a date a reschedule moved is corrected at once by a
# text of its own (`correction_key`), besides its step's usual text for the new date: a key
# keeps room for the mark in the outbox's 64-character step column.
CORRECTION_MARK = ".correction"
MAX_KEY_LENGTH = 64 - len(CORRECTION_MARK)
_KEY_RE = re.compile(rf"^[a-z][a-z0-9-]{{0,{MAX_KEY_LENGTH - 1}}}$")
_STEP_FIELDS = frozenset(
    {"key", "send", "expires", "when", "critical", "intro", "text", "text_blood_thinner"}
    | {"first_text"}
)
PACKAGED_DIR = Path(__file__).with_name("protocols")


def correction_key(key: str) -> str:
    """The outbox key of the correction of a step's text (sent at once after a reschedule)."""
    return key + CORRECTION_MARK


def is_correction(key: str) -> bool:
    return key.endswith(CORRECTION_MARK)


def step_key(key: str) -> str:
    """The protocol step an outbox key is a text of (a correction's is its step's)."""
    return key.removesuffix(CORRECTION_MARK)


@dataclass(frozen=True)
class Step:
    key: str
    send: TimingSpec
    expires: TimingSpec
    texts: dict[str, str]
    when: str | None = None
    critical: bool = False
    texts_blood_thinner: dict[str, str] | None = None
    texts_first: dict[str, str] | None = None
    intro: bool = False  # its own text introduces the program (the welcome)

    @property
    def phase(self) -> str:
        """BEFORE the procedure (timed from the booking) or AFTER it (from completion)."""
        return BEFORE if self.send.anchor in BEFORE_ANCHORS else AFTER

    def names(self, anchor: str) -> bool:
        """Whether a text of this step names the booked time ("scheduled") or the
        blood-thinner stop date ("stop"): sent, it is wrong once that moves."""
        placeholder = NAMED_BY_TEXT.get(anchor)
        variants = (self.texts, self.texts_blood_thinner or {}, self.texts_first or {})
        return placeholder is not None and any(
            placeholder in text for texts in variants for text in texts.values()
        )

    def applies(self, *, has_blood_thinner: bool) -> bool:
        """Tell whether this step's condition holds for a procedure."""
        return self.when is None or (self.when == "blood_thinner" and has_blood_thinner)

    def template(self, language: str, *, has_blood_thinner: bool, first: bool) -> str:
        """The text to fill for this patient: the first-text or blood-thinner variant if any."""
        if first and self.texts_first is not None:
            return self.texts_first[language]
        if has_blood_thinner and self.texts_blood_thinner is not None:
            return self.texts_blood_thinner[language]
        return self.texts[language]


@dataclass(frozen=True)
class Protocol:
    kind: str
    steps: tuple[Step, ...]
    source: str

    def step(self, key: str) -> Step:
        """The step of that key, or of the correction keyed so (same words, same rules)."""
        key = step_key(key)
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(key)

    def phase_steps(self, phase: str, *, has_blood_thinner: bool) -> list[Step]:
        """The steps of one phase that apply, in protocol order (the intro step excluded)."""
        return [
            s
            for s in self.steps
            if s.phase == phase and not s.intro and s.applies(has_blood_thinner=has_blood_thinner)
        ]

    @property
    def intro_step(self) -> Step | None:
        """The step that introduces the program (the welcome), if the protocol has one."""
        return next((s for s in self.steps if s.intro), None)

    def text_count(self, *, booked: bool, has_blood_thinner: bool) -> int:
        """About how many texts a patient gets: the steps that apply to them."""
        count = len(self.phase_steps(AFTER, has_blood_thinner=has_blood_thinner))
        if booked:
            count += len(self.phase_steps(BEFORE, has_blood_thinner=has_blood_thinner))
            count += 1 if self.intro_step is not None else 0
        return count


def check_clinic_settings(*, clinic_name: str, clinic_phone: str) -> None:
    """Refuse a CLINIC_NAME or CLINIC_PHONE that no text can carry, naming the setting."""
    for setting, value in (("CLINIC_NAME", clinic_name), ("CLINIC_PHONE", clinic_phone)):
        bad = gsm.non_gsm_characters(value)
        if bad:
            raise ConfigurationError(
                f"{setting} {value!r} has characters outside GSM-7, the SMS alphabet every "
                f"English text must stay in: {_describe_characters(bad)}. Write it without "
                f"them (for example {_plain(value)!r})"
            )


def _describe_characters(chars: list[str]) -> str:
    return ", ".join(f"{c!r} ({unicodedata.name(c, 'unnamed')})" for c in chars)


def _plain(value: str) -> str:
    """`value` with accents dropped and other non-GSM characters replaced, as a suggestion."""
    decomposed = unicodedata.normalize("NFKD", value)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c if gsm.is_gsm(c) else "-" for c in kept)


def load_protocols(
    directory: Path | None = None,
    *,
    clinic_name: str,
    clinic_phone: str,
    emergency_number: str = "911",
) -> dict[str, Protocol]:
    """Load and validate every protocol; raise ConfigurationError naming file and step,
    or naming CLINIC_NAME / CLINIC_PHONE when it is the setting that breaks a text."""
    check_clinic_settings(clinic_name=clinic_name, clinic_phone=clinic_phone)
    directory = directory or PACKAGED_DIR
    protocols: dict[str, Protocol] = {}
    for path in sorted(directory.glob("*.toml")):
        protocol = load_protocol(
            path,
            clinic_name=clinic_name,
            clinic_phone=clinic_phone,
            emergency_number=emergency_number,
        )
        if protocol.kind in protocols:
            raise ConfigurationError(f"{path.name}: a second protocol for {protocol.kind!r}")
        protocols[protocol.kind] = protocol
    missing = [kind for kind in PROCEDURE_KINDS if kind not in protocols]
    if missing:
        raise ConfigurationError(f"{directory}: no protocol for {', '.join(missing)}")
    return protocols


def load_protocol(
    path: Path, *, clinic_name: str, clinic_phone: str, emergency_number: str = "911"
) -> Protocol:
    """Load one protocol file and validate it against the clinic's real settings."""
    name = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{name}: cannot be read: {exc}") from exc
    kind = data.get("kind")
    if kind not in PROCEDURE_KINDS:
        raise ConfigurationError(f"{name}: kind must be one of {', '.join(PROCEDURE_KINDS)}")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigurationError(f"{name}: has no [[steps]]")
    clinic = _Clinic(clinic_name, clinic_phone, emergency_number)
    steps: list[Step] = []
    for index, raw in enumerate(raw_steps, start=1):
        label = raw.get("key", f"#{index}") if isinstance(raw, dict) else f"#{index}"
        try:
            step = _parse_step(raw, clinic=clinic, where=f"{name}: step {label!r}")
        except ValueError as exc:
            raise ConfigurationError(f"{name}: step {label!r}: {exc}") from exc
        if any(s.key == step.key for s in steps):
            raise ConfigurationError(f"{name}: step {step.key!r}: key used twice")
        if step.intro and any(s.intro for s in steps):
            raise ConfigurationError(f"{name}: step {step.key!r}: a second intro step")
        previous = steps[-1] if steps else None
        if previous is not None and _goes_out_before(step, previous):
            raise ConfigurationError(
                f"{name}: step {step.key!r}: sent before the step listed above it "
                f"({previous.key!r}); list steps in the order they go out"
            )
        steps.append(step)
    _check_safety_net(name, steps)
    return Protocol(kind=kind, steps=tuple(steps), source=name)


def _goes_out_before(step: Step, previous: Step) -> bool:
    if step.phase != previous.phase:
        return step.phase == BEFORE  # every step before the procedure comes first
    if step.send.anchor != previous.send.anchor:
        return step.send.anchor == ENROLLED  # stop and scheduled dates cannot be compared
    return step.send.approx_hours() < previous.send.approx_hours()


def _check_safety_net(name: str, steps: list[Step]) -> None:
    """Require a text on day 0 or 1 that says whom to call and the emergency number."""
    for step in steps:
        if step.phase != AFTER or step.when is not None or step.send.approx_hours() >= 36:
            continue
        if all(
            "{clinic_phone}" in text and "{emergency_number}" in text
            for text in step.texts.values()
        ):
            return
    raise ConfigurationError(
        f"{name}: no text on day 0 or day 1 gives both {{clinic_phone}} and "
        "{emergency_number} (when to call the clinic, and the emergency number)"
    )


@dataclass(frozen=True)
class _Clinic:
    name: str
    phone: str
    emergency_number: str


def _parse_step(raw: object, *, clinic: _Clinic, where: str) -> Step:
    if not isinstance(raw, dict):
        raise ValueError("must be a table")
    unknown = set(raw) - _STEP_FIELDS
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    key = raw.get("key")
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(
            f"key must be lower-case letters, digits and dashes, at most {MAX_KEY_LENGTH}"
        )
    send = parse_timing(str(raw.get("send", "")))
    expires = parse_timing(str(raw.get("expires", "")))
    if expires.anchor != send.anchor:
        raise ValueError("send and expires must count from the same moment")
    if expires.approx_hours() <= send.approx_hours():
        raise ValueError("expires must come after send")
    when = raw.get("when")
    if when is not None and when not in CONDITIONS:
        raise ValueError(f"when must be one of: {', '.join(sorted(CONDITIONS))}")
    critical = raw.get("critical", False)
    intro = raw.get("intro", False)
    if not isinstance(critical, bool) or not isinstance(intro, bool):
        raise ValueError("critical and intro must be true or false")
    if intro and (send.anchor != ENROLLED or when is not None):
        raise ValueError("an intro step is sent at enrollment ('enrolled +0h') to everyone")
    before = send.anchor in BEFORE_ANCHORS
    texts = _texts(raw.get("text"), "text")
    variants: dict[str, dict[str, str] | None] = {
        "text_blood_thinner": _texts(raw["text_blood_thinner"], "text_blood_thinner")
        if "text_blood_thinner" in raw
        else None,
        "first_text": _texts(raw["first_text"], "first_text") if "first_text" in raw else None,
    }
    if variants["first_text"] is not None and (before or intro):
        raise ValueError("first_text is for steps after the procedure (before it: the welcome)")
    checks: list[tuple[str, dict[str, str], bool, bool]] = [
        ("text", texts, when == "blood_thinner", intro)
    ]
    if variants["text_blood_thinner"] is not None:
        checks.append(("text_blood_thinner", variants["text_blood_thinner"], True, False))
    if variants["first_text"] is not None:
        checks.append(("first_text", variants["first_text"], when == "blood_thinner", True))
    for table, values, blood_thinner, first in checks:
        for language in LANGUAGES:
            _check_text(
                values[language],
                label=f"{language} {table}" if table != "text" else f"{language} text",
                language=language,
                blood_thinner=blood_thinner,
                before=before,
                at_enrollment=send.anchor == ENROLLED,
                first=first,
                clinic=clinic,
                where=where,
            )
    return Step(
        key=key,
        send=send,
        expires=expires,
        texts=texts,
        when=when,
        critical=critical,
        texts_blood_thinner=variants["text_blood_thinner"],
        texts_first=variants["first_text"],
        intro=intro,
    )


def _texts(raw: object, table: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ValueError(f"needs a [steps.{table}] table with one text per language")
    for language in LANGUAGES:
        if not isinstance(raw.get(language), str) or not raw[language].strip():
            raise ValueError(f"missing the {language!r} {table}")
    extra = set(raw) - set(LANGUAGES)
    if extra:
        raise ValueError(f"{table} in unsupported language(s): {', '.join(sorted(extra))}")
    return {language: " ".join(raw[language].split()) for language in LANGUAGES}


def _check_text(
    template: str,
    *,
    label: str,
    language: str,
    blood_thinner: bool,
    before: bool,
    at_enrollment: bool,
    first: bool,
    clinic: _Clinic,
    where: str,
) -> None:
    used: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from exc
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            raise ValueError(
                f"{label}: unknown placeholder {{{field}}}; "
                f"known: {', '.join(sorted(PLACEHOLDERS))}"
            )
        if spec or conversion:
            raise ValueError(f"{label}: placeholder {{{field}}} takes no format")
        used.add(field)
    if not template.startswith("{clinic_name}"):
        raise ValueError(f"{label} must name the clinic first, starting with {{clinic_name}}")
    if "blood_thinner" in used and not blood_thinner:
        raise ValueError(
            f'{label} uses {{blood_thinner}} but the step lacks when = "blood_thinner" '
            "(or put it in text_blood_thinner)"
        )
    if {"procedure_time", "stop_date"} & used and not before:
        raise ValueError(f"{label}: {{procedure_time}} and {{stop_date}} are for steps before")
    if "stop_date" in used and not blood_thinner:
        raise ValueError(f"{label} uses {{stop_date}} but is not about a blood thinner")
    if "from_time" in used and at_enrollment:
        raise ValueError(f"{label}: {{from_time}} means nothing in a text sent at enrollment")
    if _LITERAL_EMERGENCY_RE.search(template):
        raise ValueError(f"{label}: write {{emergency_number}}, not the number itself")
    if first:
        missing = [word for word in INTRO_WORDS[language] if word not in template]
        if "text_count" not in used:
            missing.append("{text_count}")
        if missing:
            raise ValueError(
                f"{label} is a patient's first text and must carry {', '.join(missing)}"
            )
    _check_budget(template, label=label, language=language, clinic=clinic, where=where)


def _longest_values(language: str, clinic: _Clinic) -> dict[str, str]:
    return {
        "clinic_name": clinic.name,
        "clinic_phone": clinic.phone,
        "emergency_number": clinic.emergency_number,
        "blood_thinner": "x" * MAX_BLOOD_THINNER_LENGTH,
        "stop_date": longest_date(language),
        "from_time": longest_local_time(language),
        "procedure_time": longest_local_time(language),
        "text_count": str(MAX_TEXT_COUNT),
    }


def _over_budget(text: str, language: str) -> tuple[int, int, str] | None:
    """(length, budget, unit) when `text` is over its segment budget, else None."""
    if language in GSM_ONLY_LANGUAGES:
        if not gsm.is_gsm(text):
            return None  # reported as characters outside GSM-7 instead
        length = gsm.septets(text)
        return (length, MAX_SEPTETS, "GSM-7 characters") if length > MAX_SEPTETS else None
    # Other languages may go as UCS-2 whatever this rendering holds (a "sábado" in a date
    # does it): budget them as UCS-2 always.
    length = gsm.ucs2_units(text)
    return (length, MAX_UCS2_UNITS, "UCS-2 characters") if length > MAX_UCS2_UNITS else None


def _check_budget(template: str, *, label: str, language: str, clinic: _Clinic, where: str) -> None:
    """Render with the longest values; blame the setting when it is what breaks the text."""
    values = _longest_values(language, clinic)
    longest = render(template, values)
    if language in GSM_ONLY_LANGUAGES:
        bad = gsm.non_gsm_characters(longest)
        if bad:
            raise ValueError(
                f"{label} has characters outside GSM-7: {' '.join(repr(c) for c in bad)}"
            )
    over = _over_budget(longest, language)
    if over is None:
        return
    length, budget, unit = over
    # The setting is to blame when the text fits with a name and phone of ordinary length.
    short_name = render(template, {**values, "clinic_name": "x" * ORDINARY_NAME_LENGTH})
    short_phone = render(template, {**values, "clinic_phone": "x" * ORDINARY_PHONE_LENGTH})
    segments = MAX_SEGMENTS if "GSM" in unit else MAX_UCS2_SEGMENTS
    if "{clinic_name}" in template and _over_budget(short_name, language) is None:
        fits = len(clinic.name) - (length - budget)
        raise ConfigurationError(
            f"CLINIC_NAME {clinic.name!r} is too long: with it the {label} of {where} is "
            f"{length} {unit} with the longest values, over the budget of {budget} "
            f"({segments} segments); shorten CLINIC_NAME to at most {max(fits, 1)} characters"
        )
    if "{clinic_phone}" in template and _over_budget(short_phone, language) is None:
        raise ConfigurationError(
            f"CLINIC_PHONE {clinic.phone!r} is too long: with it the {label} of {where} is "
            f"{length} {unit} with the longest values, over the budget of {budget}"
        )
    raise ValueError(
        f"{label} is {length} {unit} with the longest values; the budget is {budget} "
        f"({segments} segments)"
    )


@dataclass(frozen=True)
class CareContext:
    """What planning and rendering need besides the patient: protocols, clinic, quiet hours."""

    protocols: dict[str, Protocol]
    clinic_name: str
    clinic_phone: str
    quiet_hours: QuietHours
    emergency_number: str = "911"

    def protocol(self, kind: str) -> Protocol:
        return self.protocols[kind]

    def critical_steps(self) -> frozenset[str]:
        """The keys of steps marked critical in any protocol (the blood-thinner restart),
        and of their corrections (a critical text before the procedure naming a date a
        reschedule moved: its correction failing is as much a person's to follow up)."""
        critical = [s for p in self.protocols.values() for s in p.steps if s.critical]
        return frozenset(s.key for s in critical) | frozenset(
            correction_key(s.key) for s in critical if any(map(s.names, NAMED_BY_TEXT))
        )

    def render_text(
        self,
        *,
        kind: str,
        step_key: str,
        language: str,
        tz: ZoneInfo,
        completed_at: datetime | None,
        blood_thinner: str | None,
        scheduled_at: datetime | None = None,
        stop_blood_thinner_on: date | None = None,
        intro: bool = False,
    ) -> str:
        """Render one step's text for one patient, in their language and local time.

        `intro` marks the first text the patient receives: a step with a first_text uses it.
        """
        protocol = self.protocol(kind)
        step = protocol.step(step_key)
        has_blood_thinner = blood_thinner is not None
        anchors = Anchors(
            completed_at=completed_at, scheduled_at=scheduled_at, stop_on=stop_blood_thinner_on
        )
        template = step.template(language, has_blood_thinner=has_blood_thinner, first=intro)
        values = {
            "clinic_name": self.clinic_name,
            "clinic_phone": self.clinic_phone,
            "emergency_number": self.emergency_number,
            "blood_thinner": blood_thinner or "",
            # Once the procedure is done, the texts before it can no longer come: a booked
            # patient's first text after it counted them ("about 8 texts", 5 to come).
            "text_count": str(
                protocol.text_count(
                    booked=scheduled_at is not None and completed_at is None,
                    has_blood_thinner=has_blood_thinner,
                )
            ),
        }
        if "{from_time}" in template:
            values["from_time"] = describe_local_time(step.send.resolve(anchors, tz), tz, language)
        if "{procedure_time}" in template and scheduled_at is not None:
            values["procedure_time"] = describe_local_time(scheduled_at, tz, language)
        if "{stop_date}" in template and stop_blood_thinner_on is not None:
            values["stop_date"] = describe_date(stop_blood_thinner_on, language)
        return render(template, values)
