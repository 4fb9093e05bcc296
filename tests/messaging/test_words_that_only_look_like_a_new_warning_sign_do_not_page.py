"""The words added to the warning signs in c50a440..71d956c also matched replies that say
no such thing, and each paged the staff (at night too) and told the patient to call now:
"running" as a temperature word read "we are running 40 minutes late" as a fever of 40 °C;
"numbing" read the local anaesthetic wearing off as new numbness; "soaked" read a dressing
wet from the shower as bleeding; "se cayó" read a scab or a patch that came off as a fall,
"tiene temperatura" a normal temperature as a fever, "sale agua" a runny nose as drainage
at the needle site, and "is severe" anything severe ("my osteoporosis is severe") as
severe pain; "I haven't peed on myself" was a retention of urine and "it hurts so much
better" severe pain. Before those commits each was filed needs-reading, as it is again.
So are "the bandage fell off" and "temp is 98.6", which were paged before them too. The signs
those words were added for stay urgent (the second test)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from followup.patients.validation import EnrollmentResult
from tests.messaging.conftest import Triaged

Triage = Callable[[str], Triaged]


def _calls_now(texts: list[str]) -> bool:
    return any("call us now" in t or "Llámenos ahora" in t for t in texts)


@pytest.mark.parametrize(
    "body",
    [
        "we are running 40 minutes late",
        "running late 40 min",
        "the numbing medicine wore off",
        "after the numbing wore off my back is sore",
        "the bandage got soaked in the shower",
        "the bandage is soaked from the shower",
        "se cayó la costra",
        "se cayó el parche",
        "tiene temperatura normal",
        "tiene temperatura de 36.5",
        "me sale agua de la nariz",
        "my osteoporosis is severe, should I take calcium?",
        "the bandage fell off",
        "the scab fell off",
        "temp is 98.6",
        "I haven't peed on myself",
        "it hurts so much better now that I rest",
    ],
)
def test_a_reply_that_only_looks_like_a_warning_sign_goes_to_a_nurse_unpaged(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "reading", (
        f"{body!r} filed {reply.row.triage} ({reply.row.triage_reason}): staff paged, the "
        f"patient answered {reply.texts!r}"
    )
    assert not _calls_now(reply.texts), reply.texts


@pytest.mark.parametrize(
    "body",
    [
        "she is running 101",
        "running 40 minutes late, fever 101",
        "numbing in my legs",
        "the numbing medicine wore off and my legs are numb",
        "the bandage is soaked with blood",
        "soaked through the bandage",
        "mi mamá se cayó y se le cayó la gasa",
        "se cayó la curita y también se cayó mi mamá",
        "I fell and the bandage fell off",
        "the bandage fell off when I fell",
        "tiene temperatura de 39",
        "tiene temperatura",
        "me sale agua de la herida",
        "it is severe",
        "my osteoporosis pain is severe",
        "temp is 101",
        "she hasn't peed since this morning",
    ],
)
def test_the_warning_signs_beside_them_stay_urgent(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "urgent", (body, reply.row.triage, reply.row.triage_reason)
    assert _calls_now(reply.texts), reply.texts
