"""Twilio's error codes and what the outbox does about each: the one table of the policy.

A code that reaches us when a text is created (an API error) or later in a status callback
(ErrorCode) means the same thing either way, so both paths read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    PERMANENT = "permanent"  # the text is failed; retrying cannot help
    OPTED_OUT = "opted-out"  # failed, and the patient is opted out (pending texts cancelled)
    TRANSIENT = "transient"  # retried later with backoff, honouring Retry-After


@dataclass(frozen=True)
class ErrorRule:
    outcome: Outcome
    reason: str


# Twilio error codes (https://www.twilio.com/docs/api/errors/<code>).
ERROR_POLICY: dict[int, ErrorRule] = {
    21211: ErrorRule(Outcome.PERMANENT, "invalid 'To' phone number"),
    21614: ErrorRule(Outcome.PERMANENT, "'To' number is not a mobile number"),
    21408: ErrorRule(Outcome.PERMANENT, "sending to this region is not permitted"),
    30005: ErrorRule(Outcome.PERMANENT, "unknown destination handset"),
    30006: ErrorRule(Outcome.PERMANENT, "landline or unreachable carrier"),
    21610: ErrorRule(Outcome.OPTED_OUT, "recipient replied STOP"),
    20429: ErrorRule(Outcome.TRANSIENT, "too many requests"),
    21611: ErrorRule(Outcome.TRANSIENT, "sender's outgoing queue is full"),
    30001: ErrorRule(Outcome.TRANSIENT, "queue overflow"),
}

OPT_OUT_CODES = frozenset(c for c, r in ERROR_POLICY.items() if r.outcome is Outcome.OPTED_OUT)
# Codes whose failure passes: a text refused (or reported failed) so is tried again.
RETRIED_CODES = frozenset(c for c, r in ERROR_POLICY.items() if r.outcome is Outcome.TRANSIENT)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    # The provider may have created the text although it answered with an error.
    maybe_sent: bool = False


def classify_api_error(*, code: int | None, http_status: int | None, creating: bool) -> Decision:
    """Decide what an error answer from Twilio means for the text.

    A code in ERROR_POLICY wins. Otherwise HTTP 429 is transient; a 5xx is transient and,
    when it answered a create, the text may exist at Twilio (reconcile before resending);
    401/403 are our credentials, not the text, so transient too. Any other 4xx is permanent.
    """
    if code is not None and code in ERROR_POLICY:
        rule = ERROR_POLICY[code]
        return Decision(rule.outcome, rule.reason)
    if http_status == 429:
        return Decision(Outcome.TRANSIENT, "too many requests")
    if http_status is None or http_status >= 500:
        return Decision(Outcome.TRANSIENT, "Twilio server error", maybe_sent=creating)
    if http_status in (401, 403):
        return Decision(Outcome.TRANSIENT, "Twilio refused our credentials")
    return Decision(Outcome.PERMANENT, f"rejected by Twilio (HTTP {http_status})")


def describe_error_code(code: int | None) -> str | None:
    """Return the policy's reason for a Twilio error code, if it is in the table."""
    rule = ERROR_POLICY.get(code) if code is not None else None
    return rule.reason if rule is not None else None
