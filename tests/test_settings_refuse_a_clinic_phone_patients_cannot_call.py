"""Production refuses a CLINIC_PHONE patients cannot call.

CLINIC_PHONE is "the number patients call with questions or warning signs": the
warning-signs text (fever, bleeding at the site, new numbness or weakness) tells every
patient to call it. FOLLOWUP_ENV=production "requires the clinic's name and phone" so that
the development default does not reach patients, but any value passes: the very value
`.env.example` ships and the code defaults to ("555-0100": seven digits, no area code, not
a number a mobile phone can dial), or a note left in the file ("TBD"). `followup check`
says "all checks passed" and every text tells a bleeding patient to call it. ONCALL_PHONE
and ESCALATION_PHONE are parsed and validated with phonenumbers; CLINIC_PHONE is not.
"""

from __future__ import annotations

import secrets

import pytest

from followup.ops.checks import check_protocols, check_settings
from tests.conftest import START


def production(**values: str) -> dict[str, str]:
    return {
        "FOLLOWUP_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "CLINIC_NAME": "Riverside Spine Center",
        **values,
    }


@pytest.mark.parametrize("phone", ["555-0100", "TBD"])
def test_production_refuses_a_clinic_phone_that_is_not_a_phone_number(phone: str) -> None:
    settings, checks = check_settings(production(CLINIC_PHONE=phone))
    lines = [c.line() for c in checks]
    if settings is not None:
        # What the accepted setting does: the texts render and tell patients to call it.
        (rendered,) = check_protocols(settings, now=START)
        assert rendered.ok and f"Riverside Spine Center, {phone}," in rendered.detail
    assert settings is None, (
        f"CLINIC_PHONE={phone!r} accepted in production ({lines}): every text tells "
        "patients with warning signs to call it"
    )
    assert any(not c.ok and c.detail.startswith("CLINIC_PHONE") for c in checks), lines


def test_production_accepts_the_clinic_s_real_number() -> None:
    settings, checks = check_settings(production(CLINIC_PHONE="(202) 555-0143"))
    assert settings is not None, [c.line() for c in checks]
    assert settings.clinic_phone == "(202) 555-0143"  # kept as the clinic writes it
