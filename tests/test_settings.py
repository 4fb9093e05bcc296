from datetime import time
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
        ({"FOLLOWUP_ENV": "production", "SECRET_KEY": "x" * 32}, "CLINIC_NAME must be set"),
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
