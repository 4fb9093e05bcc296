"""Review of 8a4f9e4 and bbf61b9 (a risen score said without a tie word; a higher number
the reading cannot place).

8a4f9e4 made "8 this morning" a score tied to the one before, whatever stood in front of
it: "pain 3, slept until 8 this morning" and "dolor 3 se levanto 8 esta mañana" (the time
the patient got up) were filed urgent as "pain score 8 of 10": staff paged, the patient,
who said 3, told to call now. Its "it's 8" rule did the same with a clock time, an amount
or a count: "pain is 3, its 8:30" (":" cut "8:30" into the clauses "8" and "30"), "it's 9
o clock", "its 10% better", "it's 8 degrees outside", "its 8 steps to the bathroom". And
bbf61b9 paged for "dolor bajo, se durmió a las 9" (a time) and "no pain, can i lift over
10" (an amount). "pain 3 this afternoon, 9 this morning" (the pain fell since the
morning) was paged as a 9, and "no pain today, it was 8 yesterday" as the old 8. (Older:
"no pain, walked 8 blocks" and "pain free, did 10 laps" were paged as pain scores of 8
and 10: a pain word within four words before a number made it a score, "no" or "free"
beside it or not, whatever the number counted.)

The other way, higher_numbers took any word after a number but a short list for a thing
counted ("8 blocks"), so the pain on moving, "pain 4 at rest 8 walking", "le duele 3
acostada pero 8 parada", "pain 3 usually, 8 sometimes", was filed away as the low score,
no nurse reading it; and "pain 5 most of the day, 8 at night" read "day, 8" as "day 8"
across the comma, "pain 3 during the day 8 at night" (older) "the day 8" as a day 8."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from followup.patients.validation import EnrollmentResult
from tests.messaging.conftest import Triaged

Triage = Callable[[str], Triaged]

NOT_A_SCORE = [
    ("pain is 3 slept til 9 this morning", 3),
    ("pain 3, slept until 8 this morning", 3),
    ("pain 2 took tylenol 8 this morning", 2),
    ("dolor 3 se levanto 8 esta mañana", 3),
    ("dolor 2, se levanto a las 8 esta manana", 2),
    ("pain is 3, its 8:30", 3),
    ("pain 2. its 9:15 and im going to bed", 2),
    ("pain is 4, it's 9 o clock", 4),
    ("pain 3, its 10% better", 3),
    ("pain 3, it's 8 degrees outside", 3),
    ("pain is 2, its 8 steps to the bathroom", 2),
    ("pain 3, it's 9 miles to the clinic", 3),
    ("pain 3, in bed by 9 tonight", 3),
    ("dolor bajo, se durmió a las 9", None),
    ("no pain, can i lift over 10", None),
    ("no pain since 9/15", None),
]

# Numbers after "no pain" or "pain free": paged as a pain score of that number.
NO_PAIN = [
    ("no pain, walked 8 blocks", None),
    ("pain free, did 10 laps", None),
    ("no pain, 10 thumbs up", None),
    ("no pain, my 8 year old grandson visited", None),
    ("sin dolor, camine 8 cuadras", None),
    ("no pain. 10 stars for your staff", None),
    ("9 without pain meds, 5 with them", 5),
]

FELL = [
    ("pain 3 this afternoon, 9 this morning", 3),
    ("dolor 3 esta tarde, 9 esta mañana", 3),
    ("no pain today, it was 8 yesterday", None),
    ("sin dolor hoy, ayer 8", None),
]

ON_MOVING = [
    "pain 4 at rest 8 walking",
    "pain 3 sitting, 9 walking",
    "pain 2 laying down 9 getting up",
    "le duele 3 acostada pero 8 parada",
    "pain 3 usually, 8 sometimes",
    "pain 5 with meds 9 without",
    "pain 5 most of the day, 8 at night",
    "pain 3 during the day 8 at night",
    "pain 3 all day 8 at night",
]


def _calls_now(texts: list[str]) -> bool:
    return any("call us now" in t or "Llámenos ahora" in t for t in texts)


@pytest.mark.parametrize(("body", "score"), NOT_A_SCORE + NO_PAIN + FELL)
def test_a_time_an_amount_or_a_pain_that_fell_is_not_paged(
    body: str, score: int | None, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage != "urgent", (
        f"{body!r} filed urgent ({reply.row.triage_reason}), pain score stored "
        f"{reply.row.pain_score}: staff paged; the patient was answered {reply.texts!r}"
    )
    assert reply.row.pain_score == score, (reply.row.pain_score, reply.row.triage_reason)
    assert not _calls_now(reply.texts), reply.texts


@pytest.mark.parametrize("body", ON_MOVING)
def test_a_higher_score_on_moving_or_at_night_is_not_filed_away(
    body: str, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage in ("urgent", "reading"), (
        f"{body!r} filed {reply.row.triage} ({reply.row.triage_reason}): kept off the "
        f"nurses' queue; the patient was answered {reply.texts!r}"
    )
    assert reply.row.needs_attention
    assert not any("we recorded your pain score" in t or "anotamos" in t for t in reply.texts)


@pytest.mark.parametrize(
    ("body", "now"), [("pain 3 today. last night 9", 3), ("dolor 3 hoy, anoche 9", 3)]
)
def test_a_pain_that_fell_since_last_night_is_recorded_as_the_pain_now(
    body: str, now: int, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert (reply.row.triage, reply.row.pain_score) == ("recorded", now), reply.row.triage_reason


@pytest.mark.parametrize(
    ("body", "score"),
    [
        ("her pain was 2 earlier, its 9 pls call", 9),
        ("no pain at rest, 8 when i walk", 8),
        ("no pain sitting but 9 standing", 9),
        ("pain 3 this morning, 8 this afternoon", 8),
        ("pain was 4 yesterday but 8 this morning", 8),
    ],
)
def test_a_high_pain_beside_these_rules_is_still_urgent(
    body: str, score: int | None, triaged: Triage, pain_checked: EnrollmentResult
) -> None:
    """What the rules above pass over is no score; a pain of 8 or 9 said beside them is
    still one."""
    reply = triaged(body)
    assert reply.row.triage == "urgent", (body, reply.row.triage, reply.row.triage_reason)
    assert reply.row.pain_score == score, (reply.row.pain_score, reply.row.triage_reason)
    assert _calls_now(reply.texts), reply.texts
