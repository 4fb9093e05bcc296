from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from followup.care import gsm
from followup.care.protocol import PACKAGED_DIR, CareContext, load_protocols
from followup.care.texts import describe_local_time
from followup.care.timing import QuietHours
from followup.errors import ConfigurationError

STEP = """
[[steps]]
key = "{key}"
send = "{send}"
expires = "{expires}"
{extra}
[steps.text]
en = "{en}"
es = "{es}"
"""


def write_protocols(
    directory: Path, steps: str, kinds: tuple[str, ...] = ("kyphoplasty", "vertebroplasty")
) -> None:
    for kind in kinds:
        (directory / f"{kind}.toml").write_text(f'kind = "{kind}"\n' + steps, encoding="utf-8")


def step(**overrides: str) -> str:
    values = {
        "key": "soreness",
        "send": "day 1 at 10:00",
        "expires": "day 1 at 20:00",
        "extra": "",
        "en": "{clinic_name}: soreness is normal. Call {clinic_phone}, or {emergency_number}.",
        "es": "{clinic_name}: el dolor es normal. Llame al {clinic_phone} o al {emergency_number}.",
    }
    values.update(overrides)
    return STEP.format(**values)


def load(directory: Path) -> None:
    load_protocols(directory, clinic_name="Riverside Spine Center", clinic_phone="(202) 555-0100")


def test_shipped_protocols_load_for_both_procedures() -> None:
    protocols = load_protocols(clinic_name="Riverside Spine Center", clinic_phone="(202) 555-0100")
    assert set(protocols) == {"kyphoplasty", "vertebroplasty"}
    for protocol in protocols.values():
        assert [s.key for s in protocol.steps] == [
            "welcome",
            "stop-blood-thinner",
            "day-before",
            "no-driving",
            "soreness",
            "blood-thinner-restart",
            "warning-signs",
            "pain-check",
        ]
        assert protocol.step("blood-thinner-restart").when == "blood_thinner"


def test_shipped_texts_never_name_the_procedure_or_diagnosis() -> None:
    for path in PACKAGED_DIR.glob("*.toml"):
        texts = [
            line for line in path.read_text().splitlines() if line.startswith(("en =", "es ="))
        ]
        assert len(texts) == 20
        for line in texts:
            lowered = line.lower()
            for word in (
                "kyphoplasty",
                "vertebroplasty",
                "cifoplastia",
                "vertebroplastia",
                "fracture",
                "fractura",
                "osteopor",
                "cancer",
            ):
                assert word not in lowered, (path.name, line)


def test_shipped_texts_say_what_the_clinic_material_says(care: CareContext) -> None:
    tz = ZoneInfo("America/New_York")
    completed = datetime(2026, 3, 6, 19, 30, tzinfo=UTC)

    def text(key: str, language: str = "en") -> str:
        return care.render_text(
            kind="kyphoplasty",
            step_key=key,
            language=language,
            tz=tz,
            completed_at=completed,
            blood_thinner="Eliquis",
        )

    assert "Do not drive" in text("no-driving")
    assert "2 or 3 days" in text("soreness")
    assert text("blood-thinner-restart").startswith(
        "Riverside Spine Center: You may restart your Eliquis from 3:30 PM on Sunday, March 8."
    )
    assert "desde las 3:30 p. m. del domingo 8 de marzo" in text("blood-thinner-restart", "es")
    warning = text("warning-signs")
    for sign in (
        "fever",
        "redness",
        "swelling",
        "bleeding",
        "numbness",
        "weakness",
        "911",
        "(202) 555-0100",
    ):
        assert sign in warning
    assert "0 (no pain) to 10" in text("pain-check")
    for key in ("no-driving", "soreness", "blood-thinner-restart", "warning-signs", "pain-check"):
        for language in ("en", "es"):
            body = text(key, language)
            assert body.startswith("Riverside Spine Center")
            if language == "en":
                assert not gsm.non_gsm_characters(body)
                assert gsm.segment_count(body) <= 2
            else:
                assert gsm.segment_count(body) <= 4


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            step(en="{clinic_name}: hello {first_name}"),
            "kyphoplasty.toml: step 'soreness': en text: unknown placeholder {first_name}",
        ),
        (step(es=""), "kyphoplasty.toml: step 'soreness': missing the 'es' text"),
        (step(en="Soreness is normal."), "step 'soreness': en text must name the clinic"),
        (
            step(en="{clinic_name}: la cirugía"),
            "step 'soreness': en text has characters outside GSM-7: 'í'",
        ),
        (
            step(en="{clinic_name}: {clinic_phone} {emergency_number}" + "x" * 270),
            "step 'soreness': en text is 312 GSM-7 characters",
        ),
        (
            step(send="day 1 at 20:00", expires="day 1 at 10:00"),
            "step 'soreness': expires must come after send",
        ),
        (step(send="tomorrow"), "step 'soreness': 'tomorrow' is neither"),
        (
            step(en="{clinic_name}: take {blood_thinner}"),
            "step 'soreness': en text uses {blood_thinner} but the step lacks when",
        ),
        (
            step() + step(key="early", send="+0h", expires="+2h"),
            "step 'early': sent before the step listed above it",
        ),
        (step() + step(), "step 'soreness': key used twice"),
        (step(extra='colour = "red"'), "step 'soreness': unknown field(s): colour"),
    ],
)
def test_invalid_protocol_stops_start_up_naming_file_and_step(
    tmp_path: Path, steps: str, message: str
) -> None:
    write_protocols(tmp_path, steps)
    with pytest.raises(ConfigurationError) as excinfo:
        load(tmp_path)
    assert message in str(excinfo.value)


def test_a_long_clinic_name_that_overflows_two_segments_is_refused() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load_protocols(
            clinic_name="Regional Interventional Radiology " * 4, clinic_phone="(202) 555-0100"
        )
    message = str(excinfo.value)
    assert message.startswith("CLINIC_NAME 'Regional Interventional Radiology")
    assert "is too long" in message and "shorten CLINIC_NAME to at most" in message


def test_a_missing_procedure_kind_is_refused(tmp_path: Path) -> None:
    write_protocols(tmp_path, step(), kinds=("kyphoplasty",))
    with pytest.raises(ConfigurationError, match="no protocol for vertebroplasty"):
        load(tmp_path)


def test_valid_custom_protocols_load(tmp_path: Path) -> None:
    write_protocols(tmp_path, step())
    protocols = load_protocols(tmp_path, clinic_name="C", clinic_phone="1")
    assert protocols["vertebroplasty"].steps[0].key == "soreness"


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", "12:05 AM on Monday, November 2"), ("es", "las 12:05 a. m. del lunes 2 de noviembre")],
)
def test_describe_local_time_in_each_language(language: str, expected: str) -> None:
    tz = ZoneInfo("America/New_York")
    instant = datetime(2026, 11, 2, 5, 5, tzinfo=UTC)
    assert describe_local_time(instant, tz, language) == expected


@pytest.mark.parametrize(
    ("text", "segments"),
    [("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3), ("€" * 80, 1), ("€" * 81, 2)],
)
def test_segment_count_follows_gsm_7_rules(text: str, segments: int) -> None:
    assert gsm.segment_count(text) == segments


@pytest.mark.parametrize(
    ("setting", "name", "phone", "shown"),
    [
        (
            "CLINIC_NAME",
            "Clínica San José",
            "(202) 555-0100",
            "'í' (LATIN SMALL LETTER I WITH ACUTE)",
        ),
        (
            "CLINIC_PHONE",
            "Riverside",
            "(202)\u00a0555\u20110100",
            "'\\xa0' (NO-BREAK SPACE), '\u2011' (NON-BREAKING HYPHEN)",
        ),
    ],
)
def test_a_clinic_setting_no_text_can_carry_is_named_with_its_characters(
    setting: str, name: str, phone: str, shown: str
) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load_protocols(clinic_name=name, clinic_phone=phone)
    message = str(excinfo.value)
    assert message.startswith(f"{setting} "), message
    assert shown in message and ".toml" not in message


def test_a_name_with_accents_gets_a_plain_suggestion() -> None:
    with pytest.raises(ConfigurationError, match="for example 'Clinica San Jose'"):
        load_protocols(clinic_name="Clínica San José", clinic_phone="(202) 555-0100")


def test_every_text_gives_the_configured_emergency_number(settings: object) -> None:
    protocols = load_protocols(
        clinic_name="Riverside Spine Center", clinic_phone="020 7946 0000", emergency_number="999"
    )
    care = CareContext(
        protocols=protocols,
        clinic_name="Riverside Spine Center",
        clinic_phone="020 7946 0000",
        quiet_hours=QuietHours(time(21, 0), time(8, 0)),
        emergency_number="999",
    )
    body = care.render_text(
        kind="kyphoplasty", step_key="warning-signs", language="es", tz=ZoneInfo("Europe/London"),
        completed_at=datetime(2026, 3, 6, 14, 0, tzinfo=UTC), blood_thinner=None,
    )  # fmt: skip
    assert body.endswith("En una emergencia, llame al 999.") and "911" not in body


def test_a_key_too_long_for_its_correction_s_outbox_key_is_refused(tmp_path: Path) -> None:
    # A correction after a reschedule is keyed "<step>.correction" in the outbox's
    # 64-character step column: a 54-character key would not fit it.
    write_protocols(tmp_path, step(key="s" * 54))
    with pytest.raises(ConfigurationError, match="at most 53"):
        load(tmp_path)
    write_protocols(tmp_path, step(key="s" * 53))
    load(tmp_path)


def test_a_text_that_writes_911_itself_is_refused(tmp_path: Path) -> None:
    write_protocols(tmp_path, step(en="{clinic_name}: {clinic_phone}, {emergency_number} or 911."))
    with pytest.raises(ConfigurationError, match="write {emergency_number}, not the number"):
        load(tmp_path)


def test_a_first_text_without_help_stop_and_rates_is_refused(tmp_path: Path) -> None:
    first = '[steps.first_text]\nen = "{clinic_name}: hi {clinic_phone} {emergency_number}"\nes = "{clinic_name}: hola"\n'
    write_protocols(tmp_path, step() + first)
    with pytest.raises(ConfigurationError) as excinfo:
        load(tmp_path)
    assert "en first_text is a patient's first text and must carry HELP, STOP" in str(excinfo.value)


def test_a_protocol_without_a_day_0_or_1_safety_net_is_refused(tmp_path: Path) -> None:
    write_protocols(tmp_path, step(send="day 3 at 10:00", expires="day 3 at 20:00"))
    with pytest.raises(ConfigurationError, match="no text on day 0 or day 1 gives both"):
        load(tmp_path)


@pytest.mark.parametrize(
    ("text", "segments"),
    [("á" * 70, 1), ("á" * 71, 2), ("á" * 134, 2), ("á" * 135, 3), ("á" * 268, 4), ("á" * 269, 5)],
)
def test_segment_count_follows_ucs2_rules(text: str, segments: int) -> None:
    assert gsm.segment_count(text) == segments
