"""Asking the provider about a text whose outcome is unknown, for both reaper passes (texts
left `sending`, `reconcile.py`; copies closed meanwhile, `closed_copies.py`): find the
provider's text, when to ask again, what the provider says became of it, and the guarded
write each pass settles a text with.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.messaging.events import MESSAGES
from followup.messaging.models import DELIVERED, FAILED, UNDELIVERED, FailedCopy, Message
from followup.messaging.retries import RETRY_BACKOFF_MAX
from followup.messaging.status import TWILIO_STATUSES, apply_provider_status
from followup.messaging.transports.base import (
    CannotTell,
    SendResult,
    SmsTransport,
    TransientSendError,
)

RECONCILE_SLACK = timedelta(minutes=2)  # look a little before the hand-over for clock skew


def guarded(
    session: so.Session,
    rows: list[dict[str, Any]],
    guard: sa.ColumnElement[bool],
    values: dict[str, Any],
) -> set[int]:
    if not rows:
        return set()
    return set(
        session.scalars(
            sa.update(MESSAGES)
            .where(MESSAGES.c.id.in_([r["id"] for r in rows]), guard)
            .values(values)
            .returning(MESSAGES.c.id)
        )
    )


FIND_TRIES = 20  # texts with the same words to one number, looked past at most


LOOKUPS_AT_ONCE = 16  # provider look-ups a reaper pass makes at the same time
# Texts asked about between two renewals of a batch's lease: four rounds of questions side
# by side, 40 s at a 10 s timeout each, within the 60 s lease.
REAP_PART = 4 * LOOKUPS_AT_ONCE
# How long a reaper waits before asking again after a 429 that named no Retry-After.
THROTTLED_PAUSE = 30.0

FirstLook = SendResult | None | Exception


def slow_down(answers: Iterable[FirstLook | Exception]) -> float | None:
    """Seconds to wait when the provider refused a question as too many (429), else None."""
    pauses = [
        answer.retry_after or THROTTLED_PAUSE
        for answer in answers
        if isinstance(answer, TransientSendError) and answer.throttled
    ]
    return max(pauses) if pauses else None


def ask_again_at(now: datetime, handed_at: datetime, exc: Exception) -> datetime:
    """When to ask again about a text whose question failed with `exc`: `ask_after`, and
    not before the provider's Retry-After when it refused the question as too many."""
    again = ask_after(now, handed_at)
    pause = slow_down([exc])
    return again if pause is None else max(again, now + timedelta(seconds=pause))


def first_looks(
    transport: SmsTransport, rows: list[Any], *, at_once: int = LOOKUPS_AT_ONCE
) -> dict[int, FirstLook]:
    """Each row's first question to the provider (`find_unrecorded`'s), asked `at_once` at
    a time: a dead dispatcher may leave a hundred texts handed over, and one after another
    at list latency (about 0.4 s) the reaper's pass alone would outlast the 2 minutes in
    which they are to be settled. What each answered, or the exception it raised; the
    answers are recorded one by one afterwards, on the session's thread."""

    def look(row: Any) -> FirstLook:
        try:
            return transport.find_sent(
                to=row.to_phone or "", body=row.body or "", since=row.handed_at - RECONCILE_SLACK
            )
        except Exception as exc:  # noqa: BLE001 - raised again where the answer is used
            return exc

    if len(rows) <= 1 or at_once <= 1:
        return {row.id: look(row) for row in rows}
    with ThreadPoolExecutor(max_workers=min(at_once, len(rows))) as pool:
        return dict(zip([row.id for row in rows], pool.map(look, rows), strict=True))


def find_unrecorded(
    session: so.Session,
    transport: SmsTransport,
    row: Any,
    since: datetime,
    *,
    first: FirstLook | None = None,
    asked: bool = False,
) -> SendResult | None:
    """The provider's text for `row`: to its number, with its words, created since, and
    whose SID no other text of ours carries. Two texts can have the same words to one
    number (two procedures of one patient, a phone two patients share): the one recorded
    for the other is looked past, never taken for this one. With `asked`, `first` is the
    provider's answer to the first question already (`first_looks`). A copy that failed
    and set off a retry (`FailedCopy`, this text's or another's) is looked past too: it is
    an earlier request's. Skipping every copy that failed so instead took, for a text whose
    own copy had just failed, the copy of another text with the same words to that number,
    and that text was sent again."""
    exclude: set[str] = set()
    for attempt in range(FIND_TRIES):
        if attempt == 0 and asked:
            if isinstance(first, Exception):
                raise first
            found = first
        else:
            found = transport.find_sent(
                to=row.to_phone or "", body=row.body or "", since=since, exclude=frozenset(exclude)
            )
        if found is None:
            return None
        sid = found.provider_sid
        holder = session.scalar(sa.select(Message.id).where(Message.provider_sid == sid))
        failed = session.get(FailedCopy, sid)
        if failed is None and (holder is None or holder == row.id):
            return found
        exclude.add(sid)
    raise CannotTell(f"more than {FIND_TRIES} texts with the same words to one number")


ASK_AGAIN_FIRST = timedelta(seconds=15)  # within the reaper's next round (every 20 s)


def ask_after(now: datetime, handed_at: datetime) -> datetime:
    """When to ask the provider again after it could not be asked: at the reaper's next
    round at first (a dead worker's texts are to be settled within 2 minutes; one failed
    list request put off a whole lease made that 208 s in a soak), then less and less
    often: a quarter of the time since the hand-over, at most RETRY_BACKOFF_MAX."""
    return now + min(RETRY_BACKOFF_MAX, max(ASK_AGAIN_FIRST, (now - handed_at) / 4))


def group_by(rows: list[Any], key: Any) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def apply_found_status(
    session: so.Session,
    message_id: int,
    found: SendResult,
    now: datetime,
    *,
    opt_out: bool = True,
    retry: bool = True,
    care: CareContext | None = None,
) -> None:
    """What the provider says became of a text found there, past `sent`: delivered, or
    failed and undelivered (a failed critical text then reaches the needs-attention queue
    now, not at the next status poll), with the provider's error code: the poller asks only
    about texts still `sent`, so this is the last word (21610 opts the patient out, a
    cannot-receive code puts the patient in the nurses' queue)."""
    if TWILIO_STATUSES.get(found.provider_status) in (DELIVERED, UNDELIVERED, FAILED):
        apply_provider_status(
            session=session, message_id=message_id, reported_sid=found.provider_sid,
            status=found.provider_status, error_code=found.error_code, now=now,
            kind="reconciled", opt_out=opt_out, retry=retry, care=care,
        )  # fmt: skip
