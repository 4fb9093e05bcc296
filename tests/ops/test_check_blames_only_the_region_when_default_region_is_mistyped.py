"""`followup check` names each broken setting, and only those (one line each: the invariant
of test_checks.py's `test_every_settings_error_starts_with_the_setting_it_is_about`).

A London clinic goes to production with DEFAULT_REGION=UK (the ISO code is GB) and its
real number written as patients dial it, CLINIC_PHONE=020 7946 0958. Since a2d3b02 the
production clinic-phone check reads that number in US when the region is unknown: the check
reports two failures, the second true (the region) and the first false ("CLINIC_PHONE '020
7946 0958' is not a number patients can call: give the whole number, area code included").
The operator is told to change a correct clinic phone (to what? it *is* the whole number);
with DEFAULT_REGION=GB the very same CLINIC_PHONE passes.
"""

from __future__ import annotations

import pytest

from followup.ops.checks import check_settings

LONDON = {
    "FOLLOWUP_ENV": "production",
    "CLINIC_NAME": "Riverside Spine Centre",
    "CLINIC_PHONE": "020 7946 0958",
    "DEFAULT_TIMEZONE": "Europe/London",
    "EMERGENCY_NUMBER": "999",
    # A published-looking key would be refused: a fixed, random-looking one of 64 chars.
    "SECRET_KEY": "q7Vd1pX0mZ3tR8yKcW2nB5hJ9sLfA4eG6uT1oI3rY8wE0vN7bM2kS5xH9jC4zQ6a",
}


def test_the_london_clinic_s_settings_are_valid_with_the_right_region() -> None:
    settings, checks = check_settings({**LONDON, "DEFAULT_REGION": "GB"})
    assert settings is not None, [c.line() for c in checks]


@pytest.mark.parametrize("region", ["UK", "EN", "G B"])
def test_a_mistyped_region_is_the_only_failure_reported(region: str) -> None:
    settings, checks = check_settings({**LONDON, "DEFAULT_REGION": region})
    assert settings is None
    named = [c.detail.split()[0] for c in checks]
    assert named == ["DEFAULT_REGION"], (
        "only DEFAULT_REGION is broken, but the check also blames the clinic's correct phone "
        f"number: {[c.line() for c in checks]}"
    )
