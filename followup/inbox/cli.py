"""`followup attention`: the needs-attention queue, listed and handled."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from followup.bounds import MAX_ID
from followup.clibase import CliState
from followup.errors import ValidationError
from followup.runtime import Runtime


@click.command()
@click.option(
    "--handle",
    "item",
    metavar="KIND:ID",
    help="Mark an item handled: reply:12, text:5, unreachable:3 (a patient's id) or "
    "unknown:7 (a held text, with --decision).",
)
@click.option("--note", default="", help="What was done (required with --handle).")
@click.option(
    "--decision",
    default=None,
    metavar="sent|resend|cancel",
    help="A held text (unknown:ID): it was sent, send it again, or do not send.",
)
@click.pass_obj
def attention(state: CliState, /, item: str | None, note: str, decision: str | None) -> None:
    """The needs-attention queue, urgent first then oldest first, as on /attention."""
    runtime = state.runtime()
    now = runtime.clock.now()
    try:
        queue = _attention(runtime, item, note, decision, now)
    finally:
        runtime.engine.dispose()
    if queue is None:
        return
    if not queue.items:
        click.echo("nothing needs attention")
        return
    for line in _attention_lines(queue, now, runtime.settings.default_timezone):
        click.echo(line)


def _attention(
    runtime: Runtime, item: str | None, note: str, decision: str | None, now: datetime
) -> Any:
    """Handle `item` (and return None), or return the queue."""
    from followup.inbox.queue import attention_queue
    from followup.inbox.service import mark_handled

    with runtime.session_factory() as session:
        if item is not None:
            kind, _, raw_id = item.partition(":")
            if not raw_id.isdigit() or len(raw_id) > 10 or not 1 <= int(raw_id) <= MAX_ID:
                raise ValidationError(
                    "handle", "must look like reply:12, text:5, unreachable:3 or unknown:7"
                )
            mark_handled(
                session=session, kind=kind, item_id=int(raw_id), note=note, actor="cli", now=now,
                decision=decision,
            )  # fmt: skip
            session.commit()
            click.echo(f"{kind} {raw_id} handled")
            return None
        return attention_queue(session=session, critical_steps=runtime.care.critical_steps())


def _attention_lines(queue: Any, now: datetime, clinic_zone: str) -> list[str]:
    """The queue as text: one block per item, the same fields as the web page."""
    from followup.care.texts import short_local
    from followup.care.timing import zone

    tz = zone(clinic_zone)
    lines = [f"{queue.open_count} open, {queue.urgent_count} urgent"]
    for entry in queue.items:
        flag = "URGENT " if entry.urgent else ""
        lines.append(
            f"{entry.key:<16} {flag}{entry.reason} | waiting {entry.waited(now)}"
            f" (since {short_local(entry.at, tz)})"
        )
        who = entry.patient_name or "unknown sender"
        if entry.patient_id is not None:
            who += f" (patient {entry.patient_id})"
        facts = [who, entry.phone or "-", entry.language or "-"]
        lines.append("    " + " | ".join(facts))
        if entry.words is not None:
            lines.append(f"    wrote: {entry.words!r}")
        if entry.answers:
            lines.append(f"    answers: {entry.answers}")
        if entry.answered_with:
            lines.append(f"    automatic answer: {entry.answered_with}")
        if entry.kind == "unknown":
            window = "open" if entry.window_open(now) else "closed"
            lines.append(
                f"    text: {entry.step} | handed to Twilio {short_local(entry.handed_at, tz)}"
                f" | window {window} until {short_local(entry.expires_at, tz)}"
            )
        if entry.action:
            lines.append(f"    what to do: {entry.action}")
        if entry.kind == "reply":
            alerts = "; ".join(
                f"{a.describe}, {short_local(a.claimed_at, tz)}" for a in entry.alerts
            )
            lines.append(f"    alerts: {alerts or 'none sent'}")
    if queue.truncated:
        lines.append(f"(showing {len(queue.items)} of {queue.open_count})")
    return lines
