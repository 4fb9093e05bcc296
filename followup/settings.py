"""Settings: one frozen, typed object built from the environment and `.env`."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import string
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from dotenv import dotenv_values

from followup.care.timing import ClinicHours, QuietHours, parse_clinic_hours
from followup.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///followup.db"
DEVELOPMENT_SECRET_KEY = "dev-only-not-secret"  # noqa: S105 - refused in production
# Values a SECRET_KEY must never be in production: this project's own development default,
# the placeholders of its examples, and the stock values of tutorials.
KNOWN_SECRET_KEYS = frozenset(
    {
        "",
        DEVELOPMENT_SECRET_KEY,
        "change-me",
        "changeme",
        "change-me-to-a-long-random-value",
        "dev",
        "secret",
        "development",
        "secret-key",
        "secret_key",
        "your-secret-key",
        "super secret key",
        "supersecretkey",
        "not-a-secret",
        "please-change-me",
        "replace-me",
    }
)
# Words of a placeholder someone forgot to replace ("replace-with-the-output-of-...").
PLACEHOLDER_WORDS = ("change", "replace", "secret", "example", "placeholder", "password")
MIN_SECRET_KEY_BITS = 256  # 32 bytes of entropy
GENERATE_SECRET_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'  # noqa: S105 - a command
_EUROPE_112 = (
    "AT BE BG CH CY CZ DE DK EE ES FI FR GR HR HU IS IT LI LT LU LV MT NL NO PL PT RO SE SI SK"
)
# The emergency number for each region a clinic may be in; EMERGENCY_NUMBER overrides it.
EMERGENCY_NUMBERS: dict[str, str] = {
    "US": "911",
    "CA": "911",
    "PR": "911",
    "MX": "911",
    "GB": "999",
    "IE": "112",
    "AU": "000",
    "NZ": "111",
    "IN": "112",
    **dict.fromkeys(_EUROPE_112.split(), "112"),
}
_EMERGENCY_RE = re.compile(r"^\d{2,6}$")
_EMAIL_RE = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")
_SMTP_RE = re.compile(r"^(smtp|smtps|smtp\+starttls)://([^@/\s]+@)?[^@/:\s]+(:\d{1,5})?/?(\?.*)?$")
_QUIET_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment, parsed and checked once."""

    database_url: str = DEFAULT_DATABASE_URL
    environment: str = "development"
    sms_transport: str = "console"
    sms_console_file: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_base_url: str | None = None
    twilio_timeout_seconds: float = 10.0
    status_poll_after_minutes: int = 30
    public_base_url: str | None = None
    clinic_name: str = "Example Spine Clinic"
    clinic_phone: str = "555-0100"
    quiet_hours: QuietHours = QuietHours(time(21, 0), time(8, 0))
    default_region: str = "US"
    default_timezone: str = "America/New_York"
    secret_key: str = field(default=DEVELOPMENT_SECRET_KEY, repr=False)
    protocol_dir: str | None = None
    # The dispatcher: texts handed to the provider at once, and an optional rate cap.
    dispatch_concurrency: int = 16
    twilio_max_per_second: float | None = None
    # What every text and reply gives as the number to call in an emergency.
    emergency_number: str = "911"
    # Replies and alerts: when a nurse reads replies, whom to alert and how.
    clinic_hours: ClinicHours = field(
        default_factory=lambda: parse_clinic_hours("Mon-Fri 08:00-17:00")
    )
    oncall_phone: str | None = None
    escalation_phone: str | None = None
    alert_email: tuple[str, ...] = ()
    smtp_url: str | None = field(default=None, repr=False)
    escalate_after_minutes: int = 15
    # Sign-in sessions last at most this long from sign-in.
    session_hours: float = 10.0
    # ... and end after this long without a request.
    session_idle_minutes: int = 30
    # Reverse proxies in front of the web app that set X-Forwarded-For (the client address
    # sign-in throttling counts by), and where the throttle's counters live.
    trusted_proxies: int = 0
    ratelimit_storage_uri: str = "memory://"
    # Operations: /metrics bearer token (off when unset), log line format, data retention.
    metrics_token: str | None = field(default=None, repr=False)
    log_format: str = "text"
    retention_days: int = 400

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


def load_settings(
    environ: Mapping[str, str] | None = None, *, dotenv_path: str | Path | None = ".env"
) -> Settings:
    """Build Settings from `.env` and the environment; the real environment wins."""
    return settings_from_mapping(setting_values(environ, dotenv_path=dotenv_path))


def setting_values(
    environ: Mapping[str, str] | None = None, *, dotenv_path: str | Path | None = ".env"
) -> dict[str, str]:
    """The raw setting strings: `.env`, then the environment over it."""
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def settings_from_mapping(values: Mapping[str, str]) -> Settings:
    """Parse and check a mapping of setting names to strings."""

    def get(name: str) -> str | None:
        raw = values.get(name)
        if raw is None or raw.strip() == "":
            return None
        return raw.strip()

    environment = get("FOLLOWUP_ENV") or "development"
    if environment not in ("development", "production"):
        raise ConfigurationError("FOLLOWUP_ENV must be 'development' or 'production'")
    production = environment == "production"

    sid = get("TWILIO_ACCOUNT_SID")
    token = get("TWILIO_AUTH_TOKEN")
    transport = (get("SMS_TRANSPORT") or ("twilio" if sid and token else "console")).lower()
    if transport not in ("console", "twilio"):
        raise ConfigurationError("SMS_TRANSPORT must be 'console' or 'twilio'")
    from_number = get("TWILIO_FROM_NUMBER")
    service_sid = get("TWILIO_MESSAGING_SERVICE_SID")
    if transport == "twilio":
        missing = [
            n for n, v in (("TWILIO_ACCOUNT_SID", sid), ("TWILIO_AUTH_TOKEN", token)) if not v
        ]
        if not (from_number or service_sid):
            missing.append("TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
        if missing:
            raise ConfigurationError(
                "SMS_TRANSPORT=twilio needs " + ", ".join(missing) + " to be set"
            )

    clinic_name = get("CLINIC_NAME")
    clinic_phone = get("CLINIC_PHONE")
    secret_key = get("SECRET_KEY")
    if production:
        for name, value in (
            ("CLINIC_NAME", clinic_name),
            ("CLINIC_PHONE", clinic_phone),
            ("PUBLIC_BASE_URL", get("PUBLIC_BASE_URL") if transport == "twilio" else "n/a"),
        ):
            if not value:
                raise ConfigurationError(f"{name} must be set when FOLLOWUP_ENV=production")
        check_secret_key(secret_key)
        region_given = (get("DEFAULT_REGION") or "US").upper()
        if region_given in phonenumbers.SUPPORTED_REGIONS:  # else that is the one error
            check_clinic_phone(clinic_phone or "", region_given)

    region = (get("DEFAULT_REGION") or "US").upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigurationError(f"DEFAULT_REGION {region!r} is not a known region code")
    default_tz = get("DEFAULT_TIMEZONE") or "America/New_York"
    try:
        ZoneInfo(default_tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"DEFAULT_TIMEZONE {default_tz!r} is not an IANA zone") from exc

    # At most 24 s: the dispatcher's lease covers two whole requests (2 x timeout + 1 s
    # each), and a dead dispatcher's texts are settled within 2 minutes: 100 s of lease at
    # most, then the reaper's next round (every 20 s).
    timeout = _bounded_number(
        get("TWILIO_TIMEOUT_SECONDS") or "10", "TWILIO_TIMEOUT_SECONDS", low=0.1, high=24
    )
    poll_after = _bounded_number(
        get("STATUS_POLL_AFTER_MINUTES") or "30",
        "STATUS_POLL_AFTER_MINUTES",
        low=1,
        high=7 * 24 * 60,
    )
    api_base_url = get("TWILIO_API_BASE_URL")
    for name, url in (
        ("TWILIO_API_BASE_URL", api_base_url),
        ("PUBLIC_BASE_URL", get("PUBLIC_BASE_URL")),
    ):
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise ConfigurationError(f"{name} must be an http:// or https:// URL")
    if production and api_base_url is not None and not _https_or_loopback(api_base_url):
        # The account's auth token goes with every request, and every text's body.
        raise ConfigurationError(
            "TWILIO_API_BASE_URL must be an https:// URL when FOLLOWUP_ENV=production "
            "(http:// only to this machine: 127.0.0.1, ::1 or localhost)"
        )

    emergency_number = get("EMERGENCY_NUMBER") or EMERGENCY_NUMBERS.get(region)
    if emergency_number is None:
        raise ConfigurationError(
            f"EMERGENCY_NUMBER must be set: there is no default for DEFAULT_REGION {region}"
        )
    if not _EMERGENCY_RE.match(emergency_number):
        raise ConfigurationError(
            f"EMERGENCY_NUMBER {emergency_number!r} must be 2 to 6 digits, like 911 or 112"
        )
    concurrency = _bounded_number(
        get("DISPATCH_CONCURRENCY") or "16", "DISPATCH_CONCURRENCY", low=1, high=256
    )
    max_per_second_text = get("TWILIO_MAX_PER_SECOND")
    max_per_second = (
        _bounded_number(max_per_second_text, "TWILIO_MAX_PER_SECOND", low=0.1, high=10_000)
        if max_per_second_text is not None
        else None
    )
    try:
        clinic_hours = parse_clinic_hours(get("CLINIC_HOURS") or "Mon-Fri 08:00-17:00")
    except ValueError as exc:
        raise ConfigurationError(f"CLINIC_HOURS {exc}") from exc
    oncall_phone = _phone_setting(get("ONCALL_PHONE"), "ONCALL_PHONE", region)
    escalation_phone = _phone_setting(get("ESCALATION_PHONE"), "ESCALATION_PHONE", region)
    alert_email = tuple(
        part.strip() for part in (get("ALERT_EMAIL") or "").split(",") if part.strip()
    )
    for address in alert_email:
        if not _EMAIL_RE.match(address):
            raise ConfigurationError(f"ALERT_EMAIL {address!r} is not an e-mail address")
    smtp_url = get("SMTP_URL")
    if smtp_url is not None and not _SMTP_RE.match(smtp_url):
        raise ConfigurationError(
            "SMTP_URL must look like smtp://host:25, smtp+starttls://user:password@host:587 "
            "or smtps://user:password@host:465"
        )
    if alert_email and smtp_url is None:
        raise ConfigurationError("ALERT_EMAIL needs SMTP_URL to send through")
    escalate_after = _bounded_number(
        get("ESCALATE_AFTER_MINUTES") or "15", "ESCALATE_AFTER_MINUTES", low=1, high=24 * 60
    )
    session_hours = _bounded_number(
        get("SESSION_HOURS") or "10", "SESSION_HOURS", low=0.25, high=24
    )
    session_idle_minutes = _bounded_number(
        get("SESSION_IDLE_MINUTES") or "30", "SESSION_IDLE_MINUTES", low=5, high=24 * 60
    )
    trusted_proxies = _bounded_number(
        get("TRUSTED_PROXIES") or "0", "TRUSTED_PROXIES", low=0, high=5
    )
    ratelimit_storage_uri = get("RATELIMIT_STORAGE_URI") or "memory://"
    if not re.match(
        r"^(memory|redis|rediss|redis\+cluster|redis\+sentinel|memcached|valkey)://",
        ratelimit_storage_uri,
    ):
        raise ConfigurationError(
            "RATELIMIT_STORAGE_URI must be memory://, redis://host:6379 or memcached://host:11211"
        )
    metrics_token = get("METRICS_TOKEN")
    if metrics_token is not None and (
        len(metrics_token) < 16
        or metrics_token.lower() in KNOWN_SECRET_KEYS
        or any(word in metrics_token.lower() for word in PLACEHOLDER_WORDS)
        or not metrics_token.isprintable()
        or " " in metrics_token
    ):
        raise ConfigurationError(
            "METRICS_TOKEN must be a random value of at least 16 characters, without spaces"
        )
    log_format = (get("LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigurationError("LOG_FORMAT must be 'text' or 'json'")
    retention_days = _bounded_number(
        get("RETENTION_DAYS") or "400", "RETENTION_DAYS", low=60, high=36_500
    )

    base = Settings()
    return Settings(
        database_url=get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        environment=environment,
        sms_transport=transport,
        sms_console_file=get("SMS_CONSOLE_FILE"),
        twilio_account_sid=sid,
        twilio_auth_token=token,
        twilio_from_number=from_number,
        twilio_messaging_service_sid=service_sid,
        twilio_api_base_url=api_base_url,
        twilio_timeout_seconds=timeout,
        status_poll_after_minutes=round(poll_after),
        public_base_url=(get("PUBLIC_BASE_URL") or "").rstrip("/") or None,
        clinic_name=clinic_name or base.clinic_name,
        clinic_phone=clinic_phone or base.clinic_phone,
        quiet_hours=parse_quiet_hours(get("QUIET_HOURS") or "21:00-08:00"),
        default_region=region,
        default_timezone=default_tz,
        secret_key=secret_key or base.secret_key,
        protocol_dir=get("PROTOCOL_DIR"),
        dispatch_concurrency=round(concurrency),
        twilio_max_per_second=max_per_second,
        emergency_number=emergency_number,
        clinic_hours=clinic_hours,
        oncall_phone=oncall_phone,
        escalation_phone=escalation_phone,
        alert_email=alert_email,
        smtp_url=smtp_url,
        escalate_after_minutes=round(escalate_after),
        session_hours=session_hours,
        session_idle_minutes=round(session_idle_minutes),
        trusted_proxies=round(trusted_proxies),
        ratelimit_storage_uri=ratelimit_storage_uri,
        metrics_token=metrics_token,
        log_format=log_format,
        retention_days=round(retention_days),
    )


def check_secret_key(key: str | None) -> None:
    """Refuse a production SECRET_KEY that is known or has less than 32 bytes of entropy."""
    how = f"; generate one with: {GENERATE_SECRET_KEY}"
    if key is None:
        raise ConfigurationError("SECRET_KEY must be set when FOLLOWUP_ENV=production" + how)
    if key.lower() in KNOWN_SECRET_KEYS:
        raise ConfigurationError(
            "SECRET_KEY is a published example or development value, not a secret" + how
        )
    if any(word in key.lower() for word in PLACEHOLDER_WORDS):
        raise ConfigurationError("SECRET_KEY is a placeholder, not a secret" + how)
    if secret_key_bits(key) < MIN_SECRET_KEY_BITS:
        raise ConfigurationError(
            "SECRET_KEY is too short or too regular: it needs at least 32 bytes (256 bits) "
            "of randomness" + how
        )


def secret_key_bits(key: str) -> float:
    """Estimate a key's entropy in bits, erring low for keys that are not random.

    Three upper bounds, the smallest wins: the length times the bits of the character
    classes used (digits, lower, upper, other); the length times the characters' observed
    spread (Shannon entropy, plus a margin for short samples); and the key's size once
    compressed (repeats and runs like "abcabc" or "0123...0123" compress away).
    """
    if not key:
        return 0.0
    classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits)
    size = sum(len(c) for c in classes if any(ch in c for ch in key))
    if any(not (ch.isascii() and ch.isalnum()) for ch in key):
        size += 33
    n = len(key)
    counts = Counter(key)
    spread = -sum(c / n * math.log2(c / n) for c in counts.values())
    # A short sample's spread runs low: Miller-Madow's correction, plus a margin, so that
    # a 43-character token_urlsafe(32) (256 bits) is not refused for a chance repeat.
    spread += (len(counts) - 1) / (2 * n * math.log(2)) + 1.5
    per_char = min(math.log2(max(size, 2)), spread)
    compressed = (len(zlib.compress(key.encode(), 9)) - 8) * 8  # minus zlib's framing
    return min(n * per_char, float(compressed))


def check_clinic_phone(text: str, region: str) -> None:
    """Production: CLINIC_PHONE is a number a patient's phone can dial (every text tells
    them to call it), not the example's "555-0100" nor a placeholder; its formatting is
    kept as the clinic writes it."""
    try:
        number = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException as exc:
        raise ConfigurationError(
            f"CLINIC_PHONE {text!r} is not a phone number patients can call"
        ) from exc
    if text.strip() == Settings.clinic_phone or not phonenumbers.is_valid_number(number):
        raise ConfigurationError(
            f"CLINIC_PHONE {text!r} is not a number patients can call: give the whole number, "
            "area code included"
        )


def _phone_setting(text: str | None, name: str, region: str) -> str | None:
    """Parse a staff phone number setting into E.164."""
    if text is None:
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise ConfigurationError(f"{name} {text!r} is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise ConfigurationError(f"{name} {text!r} is not a valid phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _https_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    if "@" in parts.netloc or "\\" in parts.netloc:
        # Parsers disagree on where such a host starts: with a backslash before the "@"
        # requests connects to the name before it, urlsplit reads the loopback after it.
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bounded_number(text: str, name: str, *, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number, not {text!r}") from exc
    if not low <= value <= high:  # also refuses nan
        raise ConfigurationError(f"{name} must be between {low:g} and {high:g}")
    return value


def parse_quiet_hours(text: str) -> QuietHours:
    """Parse 'HH:MM-HH:MM' into QuietHours."""
    match = _QUIET_RE.match(text)
    if not match:
        raise ConfigurationError(f"QUIET_HOURS {text!r} must look like 21:00-08:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        quiet = QuietHours(time(h1, m1), time(h2, m2))
    except ValueError as exc:
        raise ConfigurationError(f"QUIET_HOURS {text!r} is not a valid time range") from exc
    # Empty ("21:00-21:00") or the wrong way round ("08:00-21:00": quiet all day, texts at
    # 3 a.m.): the hours must cover the middle of the night.
    if not quiet.contains(NIGHT):
        raise ConfigurationError(
            f"QUIET_HOURS {text!r} must cover the night (e.g. 21:00-08:00), {NIGHT:%H:%M} included"
        )
    return quiet


NIGHT = time(3, 0)  # quiet hours must include this local time
