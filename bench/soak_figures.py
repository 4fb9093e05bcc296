"""The soak's figures (bench/soak.py): what reached the fake Twilio against what the
database recorded, duplicates, texts early, late or in quiet hours, kill to settled, and
patient data in the processes' output. Prints them; returns whether a promise broke."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.soak import FINAL, PROMISE, Planned, quiet_at
from bench.soak_processes import Kill, Proc
from followup.care.timing import QuietHours
from followup.messaging.models import Message, MessageEvent
from followup.patients.models import Patient

# --- the figures --------------------------------------------------------------------------


def fmt_seconds(values: list[float]) -> str:
    if not values:
        return "none"
    return (
        f"median {statistics.median(values):.1f} s, max {max(values):.1f} s, "
        f"min {min(values):.1f} s (n={len(values)})"
    )


def history(engine: sa.Engine, message_id: int) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(MessageEvent.at, MessageEvent.kind, MessageEvent.status, MessageEvent.detail)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.id)
        ).all()
    return [
        f"    {at:%H:%M:%S.%f} {kind} {status or ''} {detail or ''}"
        for at, kind, status, detail in rows
    ]


def report(
    engine: sa.Engine,
    kills: list[Kill],
    received: list[dict[str, Any]],
    people: list[Planned],
    quiet: QuietHours,
    folder: Path,
    procs: list[Proc],
    start: datetime,
    finished: datetime,
) -> bool:
    broken = False
    with engine.connect() as conn:
        texts = [
            dict(r)
            for r in conn.execute(
                sa.select(
                    Message.id, Message.step, Message.status, Message.to_phone, Message.body,
                    Message.provider_sid, Message.due_at, Message.expires_at, Message.sent_at,
                    Message.lease_owner, Patient.timezone,
                ).join(Patient, Patient.id == Message.patient_id)
            ).mappings()
        ]  # fmt: skip
        events = conn.execute(
            sa.select(
                MessageEvent.message_id, MessageEvent.at, MessageEvent.kind, MessageEvent.status
            ).order_by(MessageEvent.id)
        ).all()
    by_status = Counter(t["status"] for t in texts)
    sent = [t for t in texts if t["provider_sid"] is not None]
    print(f"\nrun {start:%Y-%m-%d %H:%M:%S} to {finished:%H:%M:%S} UTC")
    print(
        f"texts in the database: {len(texts)}, "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
    )
    print(f"creates at the fake Twilio: {len(received)}; texts recorded with a SID: {len(sent)}")

    # Never twice: one create per (recipient, body); every create's SID recorded.
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in received:
        groups[(r["to"], r["body"])].append(r)
    by_key = {(t["to_phone"], t["body"]): t for t in texts if t["body"] is not None}
    dupes = {k: v for k, v in groups.items() if len(v) > 1}
    recorded = {t["provider_sid"] for t in sent}
    unrecorded = [r for r in received if r["sid"] not in recorded]
    unmatched = [r for r in received if (r["to"], r["body"]) not in by_key]
    print(f"duplicates (two creates, same recipient and body): {len(dupes)}")
    print(
        f"creates whose SID no text recorded: {len(unrecorded)}; matching no text: {len(unmatched)}"
    )
    for key, copies in dupes.items():
        broken = True
        text = by_key.get(key)
        mid = text["id"] if text else None
        print(
            f"  DUPLICATE message {mid}: creates at "
            + ", ".join(
                f"{datetime.fromtimestamp(c['received_at'], UTC):%H:%M:%S.%f} {c['sid']}"
                for c in copies
            )
        )
        if mid is not None:
            print("\n".join(history(engine, mid)))
    for r in unrecorded:
        if (r["to"], r["body"]) in dupes:
            continue
        broken = True
        text = by_key.get((r["to"], r["body"]))
        print(
            f"  UNRECORDED create {r['sid']} for message {text['id'] if text else None} "
            f"(status {text['status'] if text else '?'})"
        )
        if text is not None:
            print("\n".join(history(engine, text["id"])))

    # On time, never late, never at night: by the fake's receive time.
    early, late, night, lateness = [], [], [], []
    for r in received:
        text = by_key.get((r["to"], r["body"]))
        if text is None:
            continue
        got = datetime.fromtimestamp(r["received_at"], UTC)
        if got < text["due_at"]:
            early.append((text, got))
        if got >= text["expires_at"]:
            late.append((text, got))
        if quiet_at(quiet, text["timezone"], got):
            night.append((text, got))
        lateness.append((got - text["due_at"]).total_seconds())
    print(
        f"reached the fake before due: {len(early)}; at or after expiry: {len(late)}; "
        f"in the patient's quiet hours ({quiet}): {len(night)}"
    )
    for label, items in (("EARLY", early), ("LATE", late), ("QUIET HOURS", night)):
        for text, got in items:
            broken = True
            print(
                f"  {label} message {text['id']} {text['step']} ({text['timezone']}): at fake "
                f"{got:%H:%M:%S.%f}, due {text['due_at']:%H:%M:%S}, expires {text['expires_at']:%H:%M:%S}"
            )
            print("\n".join(history(engine, text["id"])))
    if lateness:
        q = (
            statistics.quantiles(lateness, n=100, method="inclusive")
            if len(lateness) > 1
            else lateness * 99
        )
        print(
            f"due to the fake's receive time: p50 {q[49]:.1f} s, p95 {q[94]:.1f} s, max {max(lateness):.1f} s"
        )
    never = [
        t
        for t in texts
        if t["status"] in ("pending",)
        and t["due_at"] <= finished
        and quiet_at(quiet, t["timezone"], finished) is False
        and t["expires_at"] > finished
    ]
    if never:
        print(
            f"  due and not sent at the end (outside quiet hours): {len(never)}: "
            + ", ".join(str(t["id"]) for t in never[:20])
        )

    # Killed workers' texts.
    ev_by_id: dict[int, list[tuple[datetime, str, str | None]]] = defaultdict(list)
    for mid, at, kind, status in events:
        ev_by_id[mid].append((at, kind, status))
    settled_s, released_s, over, open_ = [], [], [], []
    by_handed: dict[bool, list[float]] = {True: [], False: []}
    status_of = {t["id"]: t for t in texts}
    labels = {
        "reconciled": "found at Twilio",
        "sent": "sent again",
        "deferred": "requeued, then deferred to the morning",
    }
    for kill in kills:
        outcomes: Counter[str] = Counter()
        for h in kill.held:
            after = [(at, kind, status) for at, kind, status in ev_by_id[h["id"]] if at > kill.at]
            released = after[0][0] if after else None
            # Settled: sent with a SID or closed, or taken back by a live dispatcher that
            # found it in quiet hours (it waits for the morning, under no lease).
            settled = next(
                (
                    (at, kind)
                    for at, kind, status in after
                    if (status in FINAL and kind != "claimed") or kind == "deferred"
                ),
                None,
            )
            if released is not None:
                released_s.append((released - kill.at).total_seconds())
            if settled is None:
                open_.append((kill, h))
                outcomes["unsettled"] += 1
                continue
            seconds = (settled[0] - kill.at).total_seconds()
            settled_s.append(seconds)
            by_handed[h["handed_at"] is not None].append(seconds)
            outcomes[labels.get(settled[1], settled[1])] += 1
            if seconds > PROMISE.total_seconds():
                over.append((kill, h, seconds))
        handed = sum(1 for h in kill.held if h["handed_at"] is not None)
        print(
            f"kill -9 {kill.process} (pid {kill.pid}) at {kill.at:%H:%M:%S}: {len(kill.held)} texts "
            f"held ({handed} handed to Twilio); settled: "
            + ", ".join(f"{k} {v}" for k, v in outcomes.items())
        )
    print(f"kill to first event (released): {fmt_seconds(released_s)}")
    print(
        f"kill to settled (sent with a SID, closed, or deferred): {fmt_seconds(settled_s)}; "
        f"promise {PROMISE.total_seconds():.0f} s; over it: {len(over)}"
    )
    print(f"  of texts handed to Twilio before the kill: {fmt_seconds(by_handed[True])}")
    print(f"  of texts claimed, not handed over: {fmt_seconds(by_handed[False])}")
    for kill, h, seconds in over:
        broken = True
        print(
            f"  OVER 2 MINUTES message {h['id']}: {seconds:.1f} s after the kill at {kill.at:%H:%M:%S.%f} "
            f"(lease to {h['lease_expires_at']:%H:%M:%S}, handed {h['handed_at']})"
        )
        print("\n".join(history(engine, h["id"])))
    for _kill, h in open_:
        broken = True
        t = status_of.get(h["id"], {})
        print(
            f"  UNSETTLED message {h['id']} (status {t.get('status')}, owner {t.get('lease_owner')})"
        )
        print("\n".join(history(engine, h["id"])))

    # Patient data in the processes' output.
    needles: dict[str, str] = {}
    for p in people:
        national = p.phone[2:]
        needles[p.last] = "name"
        needles[p.phone] = "phone"
        needles[national] = "phone"
        needles[f"({national[:3]}) {national[3:6]}-{national[6:]}"] = "phone"
        needles[f"{national[:3]}-{national[3:6]}-{national[6:]}"] = "phone"
    for t in texts:
        if t["body"]:
            words = t["body"].split(": ", 1)[-1]
            needles[words[:40]] = "body"
    found: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for proc in procs:
        output = proc.log_path.read_text(errors="replace")
        for needle, kind in needles.items():
            if needle and needle in output:
                found[kind] += output.count(needle)
                line = next(x for x in output.splitlines() if needle in x)
                samples.setdefault(kind, proc.name + ": " + re.sub(r"\s+", " ", line)[:200])
    sizes = ", ".join(f"{p.name} {p.log_path.stat().st_size} bytes" for p in procs)
    print(
        f"patient names / numbers / bodies in the processes' output ({sizes}): "
        f"{found['name']} / {found['phone']} / {found['body']}"
    )
    for kind, line in samples.items():
        broken = True
        print(f"  PII ({kind}) {line}")
    print("PROMISE BROKEN: see above" if broken else "every promise kept")
    return broken
