"""English warning signs said of the patient by family ("she wet herself", "he peed
himself"), or in words the lists lacked ("haven't been able to pee", "lost bladder
control", "my legs won't move", "my leg gave way", "breathing is hard", "running a
temp") are urgent. Each was filed needs-reading, "not understood automatically": nobody
paged, the patient told a nurse reads it when the clinic opens. Not being able to pass
urine and losing control of the bladder are the signs of a compressed cord the service
exists for. A test per sign, with the denials and look-alikes that must stay as they were."""

from __future__ import annotations

import pytest

from followup.messaging.models import TRIAGE_READING, TRIAGE_URGENT
from followup.messaging.replies import classify_reply
from followup.messaging.triage_words import URGENT_RULES

REASONS = {rule.key: rule.reason for rule in URGENT_RULES}

MISSED = {
    "continence": [
        "she wet herself",
        "he peed himself",
        "she pooped herself",
        "my dad soiled himself",
        "I peed on myself",
        "peed my pants",
        "he pooped his pants",
        "she had an accident in bed",
        "i havent peed all day",
        "haven't been able to pee",
        "havent urinated since yesterday",
        "he hasn't peed since the procedure",
        "not able to pee",
        "not able to urinate",
        "unable to hold my bladder",
        "lost bladder control",
        "lost bowel control",
        "loss of bladder control",
    ],
    "legs": [
        "I have not been able to feel my legs",
        "i havent been able to move my legs",
        "she wasn't able to move her legs",
        "can't feel anything below my waist",
        "no more feeling in my legs",
        "no feeling in my feet",
        "i have no sensation in my legs",
        "legs wont move",
        "my legs won't work",
        "my legs dont work",
        "her legs are not working",
    ],
    "weakness": [
        "my leg gave way",
        "my legs buckled",
        "her knees keep buckling",
        "my legs feel like jelly",
        "she's having trouble walking",
        "difficulty walking since this morning",
        "can't get out of bed",
        "he couldn't get out of bed this morning",
    ],
    "numbness": ["pins and needles in my feet"],  # "and" had cut the words in two
    "breathing": [
        "breathing is hard",
        "her breathing is difficult",
        "she is gasping for air",
        "having a hard time breathing",
        "i cant get enough air",
    ],
    "fever": ["she is running a temp", "running a temperature", "he is burning up", "feber"],
    "infection": ["the site is warm to the touch", "the needle site is hot"],
}


@pytest.mark.parametrize(
    ("key", "body"), [(key, body) for key, bodies in MISSED.items() for body in bodies]
)
def test_a_warning_sign_in_these_words_is_urgent(key: str, body: str) -> None:
    result = classify_reply(body, opt_out_type=None, pain_check_sent=False)
    assert result.triage == TRIAGE_URGENT, (body, result)
    assert REASONS[key] in (result.reason or ""), (body, result)


@pytest.mark.parametrize(
    "body",
    [
        "she didn't wet herself",
        "no trouble walking",
        "I'm not running a fever",
        "the site isn't warm to the touch",
        "no trouble breathing",
    ],
)
def test_their_denials_stay_denials(body: str) -> None:
    result = classify_reply(body, opt_out_type=None, pain_check_sent=False)
    assert result.triage == TRIAGE_READING, result
    assert "(says not)" in (result.reason or ""), result


@pytest.mark.parametrize(
    "body",
    [
        "I can't wait to walk my dog again",
        "my legs haven't buckled",
        "I haven't peed myself",
        "she gasped when she saw the bill",
        "I can't get up early for the appointment",
        "can I have a hot bath?",
        "my seatbelt buckle hurts the site?",
        "can't hold the phone long, what time is my appointment",
    ],
)
def test_look_alikes_are_not_those_signs(body: str) -> None:
    result = classify_reply(body, opt_out_type=None, pain_check_sent=False)
    assert result.triage == TRIAGE_READING, result
