"""`followup check`: is this configuration ready to text patients? One line per check.

Checked, in order: every setting (one line per broken one); the database (reachable,
migrated to this version's head); every protocol step in every language, rendered with
this clinic's name, phone and emergency number; the transport (with Twilio: the
credentials, the sender and where replies go, by read-only API calls; PUBLIC_BASE_URL on
https in production); then what the metrics and retention settings mean.

`followup serve` and `followup worker` run the same checks at start and refuse to start
on a failure, except a network failure reaching Twilio (the dispatcher retries those).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import make_url

from followup.care.vocabulary import LANGUAGES
from followup.errors import ConfigurationError
from followup.settings import EMERGENCY_NUMBERS, Settings, settings_from_mapping

INBOUND_PATH = "/twilio/inbound"
_SETTING_NAME = re.compile(r"^([A-Z][A-Z0-9_]{2,})\b")
# Stand-ins that let the settings check go on past a required setting that is missing, so
# that every broken setting is reported in one run (never used for anything else).
_STAND_INS = {
    "CLINIC_NAME": "Clinic",
    "CLINIC_PHONE": "+1 202 555 0143",
    "PUBLIC_BASE_URL": "https://example.invalid",
    "SMTP_URL": "smtp://localhost",
    "EMERGENCY_NUMBER": "911",
    "SMS_TRANSPORT": "console",
}


@dataclass(frozen=True)
class Check:
    """One check's outcome, printed as one line."""

    name: str
    ok: bool
    detail: str
    # A network failure (Twilio unreachable): `serve` and `worker` start all the same.
    transient: bool = False

    def line(self, *, starting: bool = False) -> str:
        word = "ok" if self.ok else ("warn" if starting and self.transient else "FAIL")
        return f"{word:<4}  {self.name}: {self.detail}"


def checks_passed(checks: list[Check], *, starting: bool = False) -> bool:
    """True when nothing failed (at start, a transient failure does not count)."""
    return all(c.ok or (starting and c.transient) for c in checks)


def run_checks(*, values: Mapping[str, str], now: datetime) -> tuple[Settings | None, list[Check]]:
    """Run every check on these setting strings; return the settings (None if broken)."""
    settings, checks = check_settings(values)
    if settings is None:
        checks.append(
            Check("checks", False, "database, protocols and transport not checked: fix the above")
        )
        return None, checks
    from followup.ops.database_check import check_clock, check_database

    database = check_database(settings)
    checks.append(database)
    if database.ok:
        checks.append(check_clock(settings))
    checks += check_protocols(settings, now=now)
    checks += check_transport(settings)
    checks.append(describe_metrics(settings))
    checks.append(describe_alerts(settings))
    checks.append(describe_retention(settings, now=now))
    return settings, checks


# --- settings -----------------------------------------------------------------------------


def check_settings(values: Mapping[str, str]) -> tuple[Settings | None, list[Check]]:
    """Parse the settings, reporting every broken one (not only the first)."""
    trial = dict(values)
    problems: list[str] = []
    # A fresh random key stands in for a broken SECRET_KEY (a published one would be refused).
    stand_ins = {**_STAND_INS, "SECRET_KEY": secrets.token_urlsafe(48)}
    for _ in range(2 * len(stand_ins) + 40):
        try:
            settings = settings_from_mapping(trial)
        except ConfigurationError as exc:
            message = str(exc)
            if message in problems:
                break  # nothing more can be learnt
            problems.append(message)
            match = _SETTING_NAME.match(message)
            name = match.group(1) if match else None
            if name in stand_ins and trial.get(name) != stand_ins[name]:
                trial[name] = stand_ins[name]  # a value that passes, to look further
            elif name is not None and (trial.get(name) or "").strip():
                trial.pop(name)  # fall back to the default and look further
            else:
                break
            continue
        if not problems:
            return settings, [
                Check(
                    "settings",
                    True,
                    f"valid ({settings.environment}; transport {settings.sms_transport}; "
                    f"database {make_url(settings.database_url).get_backend_name()})",
                )
            ]
        break
    if any(message.startswith("DEFAULT_REGION") for message in problems):
        # The clinic's phone is read in that region: judged in the default one instead, a
        # right number would be blamed too ("020 7946 0958" with UK for GB). Checked once
        # the region is right.
        problems = [m for m in problems if not (m.startswith("CLINIC_PHONE") and "can call" in m)]
    return None, [Check("settings", False, message) for message in problems]


# --- database: followup/ops/database_check.py ---------------------------------------------


# --- protocols ----------------------------------------------------------------------------


def check_protocols(settings: Settings, *, now: datetime) -> list[Check]:
    """Render every step, language and variant with this clinic's details; report what is off.

    A booked procedure two days from now (blood thinner stopped three days before it),
    completed now: every anchor a step can be timed from exists, and each step's variants
    (the first text a patient receives, the one for a blood thinner) are rendered too.
    """
    from followup.care.timing import zone
    from followup.runtime import build_care

    try:
        care = build_care(settings)
    except ConfigurationError as exc:
        return [Check("protocols", False, str(exc))]
    others = (set(EMERGENCY_NUMBERS.values()) | {"911"}) - {settings.emergency_number}
    tz = zone(settings.default_timezone)
    scheduled_at = now + timedelta(days=2)
    problems: list[Check] = []
    texts = 0
    for kind, protocol in sorted(care.protocols.items()):
        for step in protocol.steps:
            for language, blood_thinner, intro in _variants(step):
                where = f"{protocol.source} step {step.key!r} ({language}"
                where += (", blood thinner" if blood_thinner else "") + (", first" if intro else "")
                where += ")"
                try:
                    text = care.render_text(
                        kind=kind,
                        step_key=step.key,
                        language=language,
                        tz=tz,
                        completed_at=now,
                        blood_thinner="Eliquis" if blood_thinner else None,
                        scheduled_at=scheduled_at,
                        stop_blood_thinner_on=(scheduled_at - timedelta(days=3)).date(),
                        intro=intro,
                    )
                except Exception as exc:  # noqa: BLE001 - any failure to render is the finding
                    problems.append(
                        Check("protocols", False, f"{where} does not render: {type(exc).__name__}")
                    )
                    continue
                texts += 1
                if settings.clinic_name not in text:
                    problems.append(
                        Check("protocols", False, f"{where} does not name {settings.clinic_name}")
                    )
                said = _numbers_said(text.replace(settings.clinic_phone, " "), others)
                if said:
                    problems.append(
                        Check(
                            "protocols",
                            False,
                            f"{where} tells patients to call {', '.join(said)} but "
                            f"EMERGENCY_NUMBER is {settings.emergency_number}",
                        )
                    )
    if problems:
        return problems
    return [
        Check(
            "protocols",
            True,
            f"{len(care.protocols)} protocols, {texts} texts render with "
            f"{settings.clinic_name}, {settings.clinic_phone}, "
            f"emergency number {settings.emergency_number}",
        )
    ]


def _variants(step: Any) -> Iterator[tuple[str, bool, bool]]:
    """Each (language, with a blood thinner, as the first text) a step can be sent as."""
    for language in LANGUAGES:
        for blood_thinner in (False, True):
            if not step.applies(has_blood_thinner=blood_thinner):
                continue
            if blood_thinner and step.when is None and step.texts_blood_thinner is None:
                continue  # the same text either way
            for intro in (False, True) if step.texts_first is not None else (False,):
                yield language, blood_thinner, intro


def _numbers_said(text: str, numbers: set[str]) -> list[str]:
    """Which of `numbers` the text gives as a number to call (whole digit groups only)."""
    found = set(re.findall(r"(?<![\d-])(\d{2,6})(?![\d-])", text))
    return sorted(found & numbers)


# --- transport ----------------------------------------------------------------------------


def check_transport(settings: Settings) -> list[Check]:
    """The console in development; with Twilio, the account, the sender and the webhooks."""
    if settings.sms_transport == "console":
        if settings.is_production:
            return [
                Check(
                    "transport",
                    False,
                    "console in production: texts are printed, none reaches a patient "
                    "(set the TWILIO_* settings)",
                )
            ]
        return [Check("transport", True, "console: texts are printed, not sent")]
    checks = [_check_public_url(settings)]
    checks += check_twilio(settings)
    return checks


def _check_public_url(settings: Settings) -> Check:
    url = settings.public_base_url
    if url is None:
        return Check(
            "PUBLIC_BASE_URL",
            True,
            "not set: no delivery reports or replies reach this service (development)",
        )
    if settings.is_production and not url.startswith("https://"):
        return Check(
            "PUBLIC_BASE_URL",
            False,
            f"{url} must be https:// in production (Twilio posts replies and reports there)",
        )
    return Check(
        "PUBLIC_BASE_URL", True, f"{url} (webhooks: {url}/twilio/status, {url}{INBOUND_PATH})"
    )


@contextmanager
def _twilio_client(settings: Settings) -> Iterator[Any]:
    from twilio.rest import Client  # type: ignore[import-untyped]

    from followup.messaging.transports.twilio import RoutedHttpClient

    http = RoutedHttpClient(
        timeout=settings.twilio_timeout_seconds, base_url=settings.twilio_api_base_url
    )
    try:
        yield Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            account_sid=settings.twilio_account_sid,
            http_client=http,
        )
    finally:
        http.close()


def check_twilio(settings: Settings) -> list[Check]:
    """Ask Twilio (read-only) whether it knows these credentials, this sender, this webhook."""
    sid = settings.twilio_account_sid or ""
    with _twilio_client(settings) as client:
        account = _ask(
            "twilio account",
            lambda: client.api.v2010.accounts(sid).fetch(),
            refused="check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        )
        if isinstance(account, Check):
            return [account]
        status = str(account.status or "")
        checks = [
            Check(
                "twilio account",
                status == "active",
                f"{_short(sid)} accepted the credentials; status {status}"
                + ("" if status == "active" else ": Twilio sends nothing for it"),
            )
        ]
        expected = settings.public_base_url + INBOUND_PATH if settings.public_base_url else None
        if settings.twilio_messaging_service_sid:
            checks.append(_check_service(client, settings.twilio_messaging_service_sid, expected))
        if settings.twilio_from_number:
            checks.append(
                _check_number(
                    client,
                    settings.twilio_from_number,
                    expected if not settings.twilio_messaging_service_sid else None,
                )
            )
    return checks


def _check_service(client: Any, service_sid: str, expected_inbound: str | None) -> Check:
    name = "twilio sender"
    service = _ask(
        name,
        lambda: client.messaging.v1.services(service_sid).fetch(),
        missing=f"TWILIO_MESSAGING_SERVICE_SID {service_sid} is not a Messaging Service "
        "of this account",
    )
    if isinstance(service, Check):
        return service
    if expected_inbound and not service.use_inbound_webhook_on_number:
        actual = service.inbound_request_url or "nowhere"
        if actual != expected_inbound:
            return Check(
                name,
                False,
                f"Messaging Service {service_sid} sends incoming messages to {actual}, not "
                f"{expected_inbound}: replies (STOP, pain scores) would not reach followup",
            )
    return Check(name, True, f"Messaging Service {service_sid} found")


def _check_number(client: Any, number: str, expected_inbound: str | None) -> Check:
    name = "twilio sender"
    found = _ask(
        name,
        lambda: client.api.v2010.accounts(client.account_sid).incoming_phone_numbers.list(
            phone_number=number, limit=1
        ),
    )
    if isinstance(found, Check):
        return found
    if not found:
        return Check(name, False, f"TWILIO_FROM_NUMBER {number} is not a number of this account")
    incoming = found[0]
    capabilities = incoming.capabilities or {}
    if capabilities.get("sms") is False:
        return Check(name, False, f"{number} cannot send SMS")
    if expected_inbound and (incoming.sms_url or "") != expected_inbound:
        return Check(
            name,
            False,
            f"{number} sends incoming messages to {incoming.sms_url or 'nowhere'}, not "
            f"{expected_inbound}: replies (STOP, pain scores) would not reach followup",
        )
    return Check(name, True, f"{number} belongs to the account and can send SMS")


def _ask(
    name: str, request: Callable[[], Any], *, refused: str | None = None, missing: str | None = None
) -> Any:
    """Run one read-only Twilio request; a failure comes back as a failed Check."""
    import requests
    from twilio.base.exceptions import TwilioRestException  # type: ignore[import-untyped]

    try:
        return request()
    except TwilioRestException as exc:
        status = int(exc.status) if isinstance(exc.status, int) else 0
        code = f"Twilio {exc.code or status}"
        if status in (401, 403):
            return Check(name, False, f"credentials refused ({code}): {refused or 'check them'}")
        if status == 404 and missing:
            return Check(name, False, f"{missing} ({code})")
        return Check(name, False, f"Twilio answered {status} ({code})", transient=status >= 500)
    except requests.RequestException as exc:
        return Check(name, False, f"could not reach Twilio ({type(exc).__name__})", transient=True)


def _short(sid: str) -> str:
    return sid[:2] + "..." + sid[-4:] if len(sid) > 8 else sid


# --- what the remaining settings mean -----------------------------------------------------


def describe_metrics(settings: Settings) -> Check:
    if settings.metrics_token is None:
        return Check("metrics", True, "off (set METRICS_TOKEN to serve /metrics)")
    return Check("metrics", True, "/metrics on, for requests with the METRICS_TOKEN bearer token")


def describe_alerts(settings: Settings) -> Check:
    """Who an urgent reply alerts, and whether its escalation reaches anyone new."""
    first = [
        *(["on-call SMS"] if settings.oncall_phone else []),
        *([f"e-mail to {len(settings.alert_email)} address(es)"] if settings.alert_email else []),
    ]
    if not first:
        return Check(
            "alerts",
            True,
            "none: an urgent reply alerts no one (only the queue's count shows it); set "
            "ONCALL_PHONE or ALERT_EMAIL",
        )
    minutes = settings.escalate_after_minutes
    if settings.escalation_phone and settings.escalation_phone != settings.oncall_phone:
        escalation = f"escalation after {minutes} min also to ESCALATION_PHONE"
    else:
        escalation = (
            f"escalation after {minutes} min to the same people only (no separate "
            "ESCALATION_PHONE: if the on-call phone cannot be reached, no one else is)"
        )
    return Check("alerts", True, f"{' and '.join(first)}; {escalation}")


def describe_retention(settings: Settings, *, now: datetime) -> Check:
    cutoff = now - timedelta(days=settings.retention_days)
    return Check(
        "retention",
        True,
        f"{settings.retention_days} days: patients whose last procedure ended before "
        f"{cutoff:%Y-%m-%d} lose name, phone and text bodies (daily, or 'followup purge')",
    )
