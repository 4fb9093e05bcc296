"""Triage of replies that are no warning sign: pain scores (after the pain check and
before), closings, questions, pictures, keywords; and a property test that no reply
crashes the classifier."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from followup.messaging.models import (
    REPLY_KINDS,
    TRIAGE_CLOSING,
    TRIAGE_KEYWORD,
    TRIAGE_READING,
    TRIAGE_RECORDED,
    TRIAGE_URGENT,
    TRIAGES,
)
from followup.messaging.replies import classify_reply
from tests.messaging.test_triage import triage


@pytest.mark.parametrize(
    ("body", "score"),
    [("7", 7), ("10", 10), ("8/10", 8), ("9 out of 10", 9), ("seven", 7), ("ocho", 8)],
)
def test_triage_pain_score_of_7_or_more_after_the_check_is_urgent(body: str, score: int) -> None:
    result = triage(body)
    assert (result.kind, result.triage, result.pain_score) == ("pain", TRIAGE_URGENT, score)
    assert result.reason == f"pain score {score} of 10"


# How patients answer "Reply with a number from 0 to 10": a short answer whose only
# content is the score (a range counts as its top). These were "not understood".
@pytest.mark.parametrize(
    ("body", "score"),
    [
        ("It's a 9", 9),
        ("about 8", 8),
        ("8-9", 9),
        ("7 or 8", 8),
        ("8 today", 8),
        ("10+", 10),
        ("9 of 10", 9),
        ("I'd say 9", 9),
        ("a 10!!", 10),
        ("como un 8", 8),
        ("hoy 9", 9),
    ],
)
def test_triage_short_answer_to_the_pain_check_is_the_score(body: str, score: int) -> None:
    result = triage(body)
    assert (result.kind, result.triage, result.pain_score) == ("pain", TRIAGE_URGENT, score)


@pytest.mark.parametrize(("body", "score"), [("about 3", 3), ("2-3", 3), ("It's a 4 today", 4)])
def test_triage_short_low_answer_to_the_pain_check_is_recorded(body: str, score: int) -> None:
    result = triage(body)
    assert (result.kind, result.triage, result.pain_score) == ("pain", TRIAGE_RECORDED, score)


@pytest.mark.parametrize(
    "body", ["was 8 now 3", "It's a 9", "8-9", "took 2 at 8", "6.5", "about -1", "2 or 3 times"]
)
def test_triage_short_answer_is_no_score_without_a_pain_check_or_with_other_words(
    body: str,
) -> None:
    pain_check = body not in ("It's a 9", "8-9")
    result = triage(body, pain_check_sent=pain_check)
    assert (result.triage, result.pain_score) == (TRIAGE_READING, None)


@pytest.mark.parametrize(
    ("body", "score"), [("my pain is 8", 8), ("dolor 9/10", 9), ("pain is about a 7 today", 7)]
)
def test_triage_pain_score_in_words_is_urgent_even_before_the_check(body: str, score: int) -> None:
    result = triage(body, pain_check_sent=False)
    assert (result.triage, result.pain_score) == (TRIAGE_URGENT, score)


def test_triage_pain_above_ten_is_urgent_but_not_stored_as_a_score() -> None:
    result = triage("pain 12/10")
    assert (result.triage, result.pain_score) == (TRIAGE_URGENT, None)
    assert result.reason == "pain score 12 of 10"


@pytest.mark.parametrize(("body", "score"), [("0", 0), ("3", 3), (" 6 ", 6), ("5/10", 5)])
def test_triage_low_pain_score_is_recorded_not_queued(body: str, score: int) -> None:
    result = triage(body)
    assert (result.kind, result.triage, result.pain_score) == ("pain", TRIAGE_RECORDED, score)
    assert not result.needs_attention


@pytest.mark.parametrize("body", ["3", "8", "11", "-1", "3.5"])
def test_triage_bare_number_without_a_pain_check_is_read(body: str) -> None:
    result = triage(body, pain_check_sent=False)
    assert (result.triage, result.pain_score) == (TRIAGE_READING, None)


def test_triage_low_score_with_a_question_is_read() -> None:
    result = triage("my pain is 3, can I take ibuprofen?")
    assert (result.triage, result.pain_score) == (TRIAGE_READING, 3)
    assert result.reason == "pain score 3 of 10; a question"


@pytest.mark.parametrize(
    "body",
    [
        "thanks",
        "Thank you!",
        "ok",
        "OK thanks",
        "thx",
        "gracias",
        "Muchas gracias",
        "ok gracias",
        "vale",
        "\N{THUMBS UP SIGN}",
        "\N{HEAVY BLACK HEART}\N{VARIATION SELECTOR-16}",
        "thanks \N{SMILING FACE WITH SMILING EYES}",
    ],
)
def test_triage_closing_is_recorded_only(body: str) -> None:
    result = triage(body)
    assert (result.kind, result.triage) == ("closing", TRIAGE_CLOSING)
    assert not result.needs_attention


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("Thanks! Can I take a shower?", "a question"),
        ("can I drive tomorrow", "a question"),
        ("¿Puedo bañarme?", "a question"),
        ("my back is worse", "says something is worse"),
        ("estoy peor", "says something is worse"),
        ("not ok", "not understood automatically"),
        ("\N{CRYING FACE}", "not understood automatically"),
        ("Who is this", "a question"),
        ("", "an empty message"),
    ],
)
def test_triage_questions_and_anything_not_understood_need_reading(body: str, reason: str) -> None:
    result = triage(body)
    assert (result.kind, result.triage, result.reason) == ("other", TRIAGE_READING, reason)
    assert result.needs_attention


# An emoji that may say something is wrong reaches a person; these were "closing"
# (recorded, not queued, nobody reads them).
@pytest.mark.parametrize(
    "body",
    [
        "\N{WORRIED FACE}",
        "\N{PENSIVE FACE}",
        "\N{OVERHEATED FACE}",
        "\N{FREEZING FACE}",
        "\N{FACE WITH OPEN MOUTH AND COLD SWEAT}",
        "\N{DIZZY FACE}",
        "\N{FACE WITH UNEVEN EYES AND WAVY MOUTH}",
        "\N{THUMBS DOWN SIGN}",
        "\N{HOSPITAL}",
        "\N{ADHESIVE BANDAGE}",
        "\N{LEG}",
        "ok \N{WORRIED FACE}",
        "thanks \N{OVERHEATED FACE}",
    ],
)
def test_triage_worrying_emoji_need_reading(body: str) -> None:
    result = triage(body)
    assert (result.kind, result.triage) == ("other", TRIAGE_READING)


def test_triage_a_picture_needs_reading() -> None:
    result = triage("", media=1)
    assert (result.triage, result.reason) == (TRIAGE_READING, "sent a picture or file")


@pytest.mark.parametrize(
    ("body", "kind", "confirm"),
    [
        ("STOP", "stop", False),
        (" stop ", "stop", False),
        ("PARAR", "stop", True),
        ("alto", "stop", True),
        ("Cancelar", "stop", True),
        ("START", "start", False),
        ("HELP", "help", False),
        ("AYUDA", "help", False),
        ("ayúda", "help", False),
    ],
)
def test_triage_keywords(body: str, kind: str, confirm: bool) -> None:
    result = triage(body)
    assert (result.kind, result.triage, result.confirm_opt_out) == (kind, TRIAGE_KEYWORD, confirm)
    assert not result.needs_attention


def test_triage_spanish_words_are_answered_in_spanish_for_an_unknown_sender() -> None:
    assert triage("tengo fiebre").language == "es"
    assert triage("PARAR").language == "es"
    assert triage("I have a fever").language is None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300), st.booleans(), st.integers(min_value=0, max_value=10))
@example("pain \N{ETHIOPIC DIGIT ONE}", True, 0)  # a digit int() cannot read: it crashed
@example("dolor \N{SUPERSCRIPT TWO}", True, 0)
def test_classifier_never_crashes(body: str, pain_check_sent: bool, media: int) -> None:
    result = classify_reply(
        body, opt_out_type=None, pain_check_sent=pain_check_sent, media_count=media
    )
    assert result.kind in REPLY_KINDS
    assert result.triage in TRIAGES
    assert result.pain_score is None or 0 <= result.pain_score <= 10
    assert len(result.reason or "") <= 200 or result.triage == TRIAGE_URGENT


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "no",
                "fever",
                "but",
                "numb",
                "legs",
                "can't",
                "feel",
                "my",
                ",",
                "gracias",
                "8",
                "/10",
                "¿",
                "?",
                "pain",
                "dolor",
                "sangre",
                "blood",
                "thinner",
                "\N{THUMBS UP SIGN}",
                "\n",
            ]
        ),
        max_size=40,
    )
)
def test_classifier_never_crashes_on_word_salad(parts: list[str]) -> None:
    result = classify_reply(" ".join(parts), opt_out_type=None, pain_check_sent=True)
    assert result.triage in TRIAGES


# --- the clinic's staffed hours in the "a nurse will read it" answer -----------------------
