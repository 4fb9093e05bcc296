"""Care protocols: TOML data, loaded and validated once at start-up. Pure (no I/O but files)."""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from followup.care import gsm
from followup.care.texts import (
    MAX_BLOOD_THINNER_LENGTH,
    PLACEHOLDERS,
    describe_local_time,
    longest_local_time,
    render,
)
from followup.care.timing import QuietHours, TimingSpec, parse_timing
from followup.care.vocabulary import LANGUAGES, PROCEDURE_KINDS
from followup.errors import ConfigurationError

MAX_SEGMENTS = 2
MAX_SEPTETS = MAX_SEGMENTS * gsm.MULTI_SEGMENT  # 306
CONDITIONS = frozenset({"blood_thinner"})
_KEY_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
PACKAGED_DIR = Path(__file__).with_name("protocols")


@dataclass(frozen=True)
class Step:
    key: str
    send: TimingSpec
    expires: TimingSpec
    texts: dict[str, str]
    when: str | None = None
    critical: bool = False

    def applies(self, *, has_blood_thinner: bool) -> bool:
        """Tell whether this step is part of a procedure's plan."""
        return self.when is None or (self.when == "blood_thinner" and has_blood_thinner)


@dataclass(frozen=True)
class Protocol:
    kind: str
    steps: tuple[Step, ...]
    source: str

    def step(self, key: str) -> Step:
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(key)


def load_protocols(
    directory: Path | None = None, *, clinic_name: str, clinic_phone: str
) -> dict[str, Protocol]:
    """Load and validate every protocol; raise ConfigurationError naming file and step."""
    directory = directory or PACKAGED_DIR
    protocols: dict[str, Protocol] = {}
    for path in sorted(directory.glob("*.toml")):
        protocol = load_protocol(path, clinic_name=clinic_name, clinic_phone=clinic_phone)
        if protocol.kind in protocols:
            raise ConfigurationError(f"{path.name}: a second protocol for {protocol.kind!r}")
        protocols[protocol.kind] = protocol
    missing = [kind for kind in PROCEDURE_KINDS if kind not in protocols]
    if missing:
        raise ConfigurationError(f"{directory}: no protocol for {', '.join(missing)}")
    return protocols


def load_protocol(path: Path, *, clinic_name: str, clinic_phone: str) -> Protocol:
    """Load one protocol file and validate it against the clinic's real name and phone."""
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
    steps: list[Step] = []
    for index, raw in enumerate(raw_steps, start=1):
        label = raw.get("key", f"#{index}") if isinstance(raw, dict) else f"#{index}"
        try:
            step = _parse_step(raw, clinic_name=clinic_name, clinic_phone=clinic_phone)
        except ValueError as exc:
            raise ConfigurationError(f"{name}: step {label!r}: {exc}") from exc
        if any(s.key == step.key for s in steps):
            raise ConfigurationError(f"{name}: step {step.key!r}: key used twice")
        if steps and step.send.approx_hours() < steps[-1].send.approx_hours():
            raise ConfigurationError(
                f"{name}: step {step.key!r}: sent before the step listed above it "
                f"({steps[-1].key!r}); list steps in the order they go out"
            )
        steps.append(step)
    return Protocol(kind=kind, steps=tuple(steps), source=name)


def _parse_step(raw: object, *, clinic_name: str, clinic_phone: str) -> Step:
    if not isinstance(raw, dict):
        raise ValueError("must be a table")
    unknown = set(raw) - {"key", "send", "expires", "when", "critical", "text"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    key = raw.get("key")
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError("key must be lower-case letters, digits and dashes")
    send = parse_timing(str(raw.get("send", "")))
    expires = parse_timing(str(raw.get("expires", "")))
    if expires.approx_hours() <= send.approx_hours():
        raise ValueError("expires must come after send")
    when = raw.get("when")
    if when is not None and when not in CONDITIONS:
        raise ValueError(f"when must be one of: {', '.join(sorted(CONDITIONS))}")
    critical = raw.get("critical", False)
    if not isinstance(critical, bool):
        raise ValueError("critical must be true or false")
    texts = raw.get("text")
    if not isinstance(texts, dict):
        raise ValueError("needs a [steps.text] table with one text per language")
    for language in LANGUAGES:
        if not isinstance(texts.get(language), str) or not texts[language].strip():
            raise ValueError(f"missing the {language!r} text")
    extra = set(texts) - set(LANGUAGES)
    if extra:
        raise ValueError(f"text in unsupported language(s): {', '.join(sorted(extra))}")
    for language in LANGUAGES:
        _check_text(
            texts[language].strip(),
            language=language,
            when=when,
            clinic_name=clinic_name,
            clinic_phone=clinic_phone,
        )
    return Step(
        key=key,
        send=send,
        expires=expires,
        texts={lang: texts[lang].strip() for lang in LANGUAGES},
        when=when,
        critical=critical,
    )


def _check_text(
    template: str, *, language: str, when: str | None, clinic_name: str, clinic_phone: str
) -> None:
    used: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{language} text: {exc}") from exc
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            raise ValueError(
                f"{language} text: unknown placeholder {{{field}}}; "
                f"known: {', '.join(sorted(PLACEHOLDERS))}"
            )
        if spec or conversion:
            raise ValueError(f"{language} text: placeholder {{{field}}} takes no format")
        used.add(field)
    if "clinic_name" not in used:
        raise ValueError(f"{language} text must name the clinic with {{clinic_name}}")
    if "blood_thinner" in used and when != "blood_thinner":
        raise ValueError(f"{language} text uses {{blood_thinner}} but the step lacks when")
    # Render with the longest values the service can produce, then check the budget.
    longest = render(
        template,
        {
            "clinic_name": clinic_name,
            "clinic_phone": clinic_phone,
            "blood_thinner": "x" * MAX_BLOOD_THINNER_LENGTH,
            "from_time": longest_local_time(language),
        },
    )
    bad = gsm.non_gsm_characters(longest)
    if bad:
        raise ValueError(
            f"{language} text has characters outside GSM-7: {' '.join(repr(c) for c in bad)}"
        )
    if gsm.septets(longest) > MAX_SEPTETS:
        raise ValueError(
            f"{language} text is {gsm.septets(longest)} GSM-7 characters with the longest "
            f"values; the budget is {MAX_SEPTETS} ({MAX_SEGMENTS} segments)"
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
        """The keys of steps marked critical in any protocol (the blood-thinner restart)."""
        return frozenset(s.key for p in self.protocols.values() for s in p.steps if s.critical)

    def render_text(
        self,
        *,
        kind: str,
        step_key: str,
        language: str,
        tz: ZoneInfo,
        completed_at: datetime,
        blood_thinner: str | None,
    ) -> str:
        """Render one step's text for one patient, in their language and local time."""
        step = self.protocol(kind).step(step_key)
        values = {
            "clinic_name": self.clinic_name,
            "clinic_phone": self.clinic_phone,
            "blood_thinner": blood_thinner or "",
            "from_time": describe_local_time(step.send.resolve(completed_at, tz), tz, language),
        }
        return render(step.texts[language], values)
