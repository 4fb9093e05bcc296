from datetime import datetime, time
from pathlib import Path

import pytest

from followup.errors import ConfigurationError
from followup.settings import load_settings, settings_from_mapping


def test_defaults_are_the_embedded_service() -> None:
    settings = settings_from_mapping({})
    assert settings.database_url == "sqlite:///followup.db"
    assert settings.sms_transport == "console"
    assert (settings.quiet_hours.start, settings.quiet_hours.end) == (time(21), time(8))
    assert settings.default_region == "US"


def test_twilio_is_the_default_transport_when_credentials_are_set() -> None:
    settings = settings_from_mapping(
        {
            "TWILIO_ACCOUNT_SID": "AC1",
            "TWILIO_AUTH_TOKEN": "t",
            "TWILIO_FROM_NUMBER": "+15005550006",
        }
    )
    assert settings.sms_transport == "twilio"
    assert "auth_token" not in repr(settings)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"SMS_TRANSPORT": "twilio"}, "SMS_TRANSPORT=twilio needs TWILIO_ACCOUNT_SID"),
        ({"SMS_TRANSPORT": "pigeon"}, "SMS_TRANSPORT must be"),
        ({"QUIET_HOURS": "9pm-8am"}, "QUIET_HOURS"),
        ({"DEFAULT_TIMEZONE": "Mars/Base"}, "DEFAULT_TIMEZONE"),
        ({"DEFAULT_REGION": "ZZ"}, "DEFAULT_REGION"),
        (
            {
                "FOLLOWUP_ENV": "production",
                "CLINIC_NAME": "C",
                "CLINIC_PHONE": "1",
                "SECRET_KEY": "change-me",
            },
            "SECRET_KEY",
        ),
        (
            {
                "FOLLOWUP_ENV": "production",
                "SECRET_KEY": "Hq3vXw9pLr2Zt7Kc5Nm8Bd4Fg6Js1Ya0Ue3Oi7Rl9Tb5",
            },
            "CLINIC_NAME must be set",
        ),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(
    values: dict[str, str], words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words):
        settings_from_mapping(values)


def test_the_real_environment_wins_over_dotenv(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CLINIC_NAME=From Dotenv\nCLINIC_PHONE=111\n")
    settings = load_settings({"CLINIC_NAME": "From Environment"}, dotenv_path=env_file)
    assert settings.clinic_name == "From Environment"
    assert settings.clinic_phone == "111"


@pytest.mark.parametrize(
    ("region", "number"),
    [("US", "911"), ("CA", "911"), ("GB", "999"), ("DE", "112"), ("IN", "112"), ("AU", "000")],
)
def test_emergency_number_defaults_from_the_region(region: str, number: str) -> None:
    assert settings_from_mapping({"DEFAULT_REGION": region}).emergency_number == number


def test_settings_added_for_the_dispatcher_replies_sessions_and_operations() -> None:
    settings = settings_from_mapping(
        {
            "DEFAULT_REGION": "JP",
            "EMERGENCY_NUMBER": "119",
            "DISPATCH_CONCURRENCY": "4",
            "TWILIO_MAX_PER_SECOND": "1",
            "CLINIC_HOURS": "Mon-Fri 08:00-17:00; Sat 09:00-12:00",
            "ONCALL_PHONE": "+12025550111",
            "ALERT_EMAIL": "oncall@clinic.example, lead@clinic.example",
            "SMTP_URL": "smtp+starttls://user:pw@mail.clinic.example:587",
            "LOG_FORMAT": "JSON",
        }
    )
    assert settings.emergency_number == "119"
    assert (settings.dispatch_concurrency, settings.twilio_max_per_second) == (4, 1.0)
    assert settings.clinic_hours.is_open(datetime(2026, 3, 7, 11, 59))  # a Saturday
    assert not settings.clinic_hours.is_open(datetime(2026, 3, 7, 12, 0))
    assert not settings.clinic_hours.is_open(datetime(2026, 3, 8, 10, 0))  # Sunday
    assert settings.alert_email == ("oncall@clinic.example", "lead@clinic.example")
    assert settings.log_format == "json"
    assert "pw@" not in repr(settings)
    defaults = settings_from_mapping({})
    assert (defaults.escalate_after_minutes, defaults.session_hours) == (15, 10.0)
    assert (defaults.retention_days, defaults.metrics_token) == (400, None)
    assert defaults.clinic_hours.is_open(datetime(2026, 3, 9, 8, 0))  # Monday
    assert not defaults.clinic_hours.is_open(datetime(2026, 3, 9, 17, 0))


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"DEFAULT_REGION": "JP"}, "EMERGENCY_NUMBER must be set"),
        ({"EMERGENCY_NUMBER": "nine-one-one"}, "EMERGENCY_NUMBER"),
        ({"DISPATCH_CONCURRENCY": "0"}, "DISPATCH_CONCURRENCY"),
        ({"TWILIO_MAX_PER_SECOND": "fast"}, "TWILIO_MAX_PER_SECOND"),
        ({"CLINIC_HOURS": "weekdays 8-5"}, "CLINIC_HOURS"),
        ({"CLINIC_HOURS": "Mon-Fri 17:00-08:00"}, "CLINIC_HOURS"),
        ({"ONCALL_PHONE": "12"}, "ONCALL_PHONE"),
        ({"ALERT_EMAIL": "nurse", "SMTP_URL": "smtp://localhost:25"}, "ALERT_EMAIL"),
        ({"ALERT_EMAIL": "nurse@clinic.example"}, "ALERT_EMAIL needs SMTP_URL"),
        ({"SMTP_URL": "http://mail"}, "SMTP_URL"),
        ({"ESCALATE_AFTER_MINUTES": "0"}, "ESCALATE_AFTER_MINUTES"),
        ({"SESSION_HOURS": "100"}, "SESSION_HOURS"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"RETENTION_DAYS": "7"}, "RETENTION_DAYS"),
    ],
)
def test_new_settings_are_refused_with_the_setting_named(
    values: dict[str, str], words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words):
        settings_from_mapping(values)


PRODUCTION = {"FOLLOWUP_ENV": "production", "CLINIC_NAME": "C", "CLINIC_PHONE": "(202) 555-0143"}


@pytest.mark.parametrize(
    "key",
    [
        "dev-only-not-secret",  # the project's own development default
        "DEV-ONLY-NOT-SECRET",
        "change-me",
        "aaaaaaaaaaaaaaaa",
        "0123456789abcdef",
        "a" * 200,
        "0123456789abcdef" * 8,  # long, but a pattern
        "abc" * 50,
        "correct horse battery staple",  # words, not 32 random bytes
        "x" * 32,
        "2f8c1a9e4b7d6f3a",  # random, but 8 bytes
    ],
)
def test_production_refuses_a_known_or_weak_secret_key_and_says_how_to_make_one(
    key: str,
) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        settings_from_mapping({**PRODUCTION, "SECRET_KEY": key})
    message = str(excinfo.value)
    assert "SECRET_KEY" in message
    assert 'python -c "import secrets; print(secrets.token_urlsafe(48))"' in message


def test_production_refuses_a_missing_secret_key() -> None:
    with pytest.raises(ConfigurationError, match="SECRET_KEY must be set"):
        settings_from_mapping(PRODUCTION)


def test_production_accepts_generated_keys() -> None:
    import base64
    import random

    # Keys shaped like secrets.token_urlsafe(48), token_hex(32) and token_urlsafe(32), from
    # a seeded generator so that the run is the same every time.
    rng = random.Random(20261130)
    for _ in range(2000):
        raw = rng.randbytes(48)
        for key in (
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
            raw[:32].hex(),
            base64.urlsafe_b64encode(raw[:32]).decode().rstrip("="),
        ):
            settings = settings_from_mapping({**PRODUCTION, "SECRET_KEY": key})
            assert settings.secret_key == key


def test_development_keeps_its_default_key() -> None:
    assert settings_from_mapping({}).secret_key == "dev-only-not-secret"


def test_secret_key_bits_estimates() -> None:
    from followup.settings import secret_key_bits

    assert secret_key_bits("") == 0
    assert secret_key_bits("a" * 64) < 64
    assert secret_key_bits("0123456789abcdef") < 128
    assert 256 <= secret_key_bits(
        "9c0e5b7a1d3f8e2c6a4b0d9f7e1c3a5b8d2f6e0a4c7b9e1d3f5a7c9e0b2d4f6a"
    )


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"SESSION_IDLE_MINUTES": "1"}, "SESSION_IDLE_MINUTES must be between 5 and 1440"),
        ({"TRUSTED_PROXIES": "9"}, "TRUSTED_PROXIES must be between 0 and 5"),
        ({"RATELIMIT_STORAGE_URI": "mysql://x"}, "RATELIMIT_STORAGE_URI must be"),
    ],
)
def test_session_and_throttle_settings_are_checked(values: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        settings_from_mapping(values)


def test_session_and_throttle_settings_are_read() -> None:
    settings = settings_from_mapping(
        {
            "SESSION_IDLE_MINUTES": "45",
            "TRUSTED_PROXIES": "1",
            "RATELIMIT_STORAGE_URI": "redis://cache:6379",
        }
    )
    assert (settings.session_idle_minutes, settings.trusted_proxies) == (45, 1)
    assert settings.ratelimit_storage_uri == "redis://cache:6379"
    assert settings_from_mapping({}).ratelimit_storage_uri == "memory://"


@pytest.mark.parametrize(
    "key",
    [
        "replace-with-the-output-of-openssl-rand-hex-32",
        "my-Production-Secret-Key-2026-for-the-clinic",
    ],
)
def test_production_refuses_a_placeholder_key(key: str) -> None:
    with pytest.raises(ConfigurationError, match="SECRET_KEY is a placeholder"):
        settings_from_mapping({**PRODUCTION, "SECRET_KEY": key})


@pytest.mark.parametrize(
    "url", ["http://api.example.org", "http://10.0.0.5:8080", "http://twilio-proxy.internal"]
)
def test_production_refuses_twilio_over_plain_http_beyond_this_machine(url: str) -> None:
    """Every request to Twilio carries the account's auth token and every text's body."""
    with pytest.raises(ConfigurationError, match="TWILIO_API_BASE_URL must be an https://"):
        settings_from_mapping(
            {
                **PRODUCTION,
                "SECRET_KEY": "x" * 8 + "Q7v#pL2m@Zr9!kW4sT6^bN1yE3uH5jD8",
                "TWILIO_API_BASE_URL": url,
            }
        )


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.org",
        "http://127.0.0.1:8099",
        "http://localhost:8099",
        "http://[::1]:8099",
    ],
)
def test_production_takes_twilio_over_https_or_to_this_machine(url: str) -> None:
    settings = settings_from_mapping(
        {
            **PRODUCTION,
            "SECRET_KEY": "x" * 8 + "Q7v#pL2m@Zr9!kW4sT6^bN1yE3uH5jD8",
            "TWILIO_API_BASE_URL": url,
        }
    )
    assert settings.twilio_api_base_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.org\\@127.0.0.1",
        "http://api.example.org:80\\@localhost:8099",
    ],
)
def test_production_refuses_a_plain_http_twilio_url_that_only_looks_local(url: str) -> None:
    """urlsplit reads "http://api.example.org\\@127.0.0.1" as loopback; requests connects to
    api.example.org, with the auth token and the text in clear."""
    with pytest.raises(ConfigurationError, match="TWILIO_API_BASE_URL must be an https://"):
        settings_from_mapping(
            {
                **PRODUCTION,
                "SECRET_KEY": "x" * 8 + "Q7v#pL2m@Zr9!kW4sT6^bN1yE3uH5jD8",
                "TWILIO_API_BASE_URL": url,
            }
        )
