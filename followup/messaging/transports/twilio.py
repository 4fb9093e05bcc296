"""The Twilio transport: the official `twilio` client, at api.twilio.com or a compatible mock.

Errors are mapped through followup.messaging.errors (the policy table). Error text from
Twilio is not kept: it can quote the phone number, and error messages reach the send log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Collection, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException  # type: ignore[import-untyped]
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]
from urllib3.exceptions import NewConnectionError

from followup.errors import ConfigurationError
from followup.messaging.errors import Outcome, classify_api_error
from followup.messaging.status import ProviderStatus
from followup.messaging.transports.base import (
    CannotTell,
    OutgoingSms,
    PermanentSendError,
    SendResult,
    TransientSendError,
)
from followup.messaging.transports.connect import DeadlineAdapter
from followup.messaging.transports.pacing import Pacer
from followup.settings import Settings

log = logging.getLogger(__name__)

STATUS_CALLBACK_PATH = "/twilio/status"
RECONCILE_SCAN = 200  # newest texts to one number looked at when reconciling (a patient gets ~5)
PAGE_SIZE = 50
TOO_MANY_REQUESTS = 20429  # Twilio's code for HTTP 429: slow down, the text was not created


_RECIPIENT_PARAM = re.compile(r"\b(To|From)=[^&\s\"]*")


class _RedactRecipients(logging.Filter):
    """Mask To=/From= in urllib3's debug line for each request (it logs the whole URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _RECIPIENT_PARAM.sub(r"\1=***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


_redaction_lock = threading.Lock()


def _redact_urllib3_logs() -> None:
    """Install the redaction once per process (idempotent)."""
    logger = logging.getLogger("urllib3.connectionpool")
    with _redaction_lock:
        if not any(isinstance(f, _RedactRecipients) for f in logger.filters):
            logger.addFilter(_RedactRecipients())


# Seconds to connect, the name's lookup and every address it has together (connect.py):
# under the dispatcher's 2 s hand-over margin.
CONNECT_TIMEOUT = 1.5


class RoutedHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The client's HTTP layer, sent to `base_url` instead of *.twilio.com when one is given.

    Subclassing TwilioHttpClient is the documented way to change how the client talks HTTP.
    Only scheme and host change (plus a path prefix, if the base URL has one); the path and
    query the client built are kept. It also remembers each thread's last response headers,
    which TwilioRestException does not carry (Retry-After), and logs no query parameters
    (a list by recipient puts the phone number in them).
    """

    def __init__(self, *, timeout: float, base_url: str | None = None) -> None:
        super().__init__(timeout=timeout, logger=log)
        # (connect, read) for requests: a request either reaches Twilio within the connect
        # timeout of its last clock check, or fails unsent; either way before the expiry
        # or the quiet hours the dispatcher kept HANDOVER_MARGIN (2 s) away from.
        self.timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        if self.session is not None:
            # The connect timeout as one budget for the lookup and every address
            # (connect.py); the pool as large as the client's own default.
            adapter = DeadlineAdapter(pool_maxsize=min(32, (os.cpu_count() or 1) + 4))
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)
        _redact_urllib3_logs()
        self._base = urlsplit(base_url.rstrip("/")) if base_url else None
        self._local = threading.local()
        # requests reads the proxy and CA settings from the environment on every request
        # (a walk over os.environ, twice): read them once here, for the one host we call.
        if self.session is not None:
            found: dict[str, Any] = self.session.merge_environment_settings(
                self.route("https://api.twilio.com/"), {}, None, None, None
            )
            given: dict[str, str] = getattr(self, "proxy", None) or {}
            self.proxy = {**found.get("proxies", {}), **given}
            self.session.verify = found.get("verify", True)
            self.session.trust_env = False

    def route(self, url: str) -> str:
        """Return `url` moved to the configured base URL (unchanged without one)."""
        if self._base is None:
            return url
        parts = urlsplit(url)
        path = self._base.path + parts.path
        return urlunsplit((self._base.scheme, self._base.netloc, path, parts.query, ""))

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Any:
        self._local.headers = {}
        response = super().request(
            method,
            self.route(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,  # None: the client's own (connect, read) pair
            allow_redirects=allow_redirects,
        )
        self._local.headers = response.headers or {}
        return response

    def last_headers(self) -> Mapping[str, str]:
        """Headers of this thread's last response ({} if there was none)."""
        headers: Mapping[str, str] = getattr(self._local, "headers", {})
        return headers

    def log_request(self, kwargs: dict[str, Any]) -> None:
        log.debug("twilio request %s %s", kwargs["method"], urlsplit(kwargs["url"]).path)

    def log_response(self, status_code: int, response: Any) -> None:
        log.debug("twilio response %s", status_code)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


class TwilioTransport:
    """Send texts through Twilio's Messages resource and ask it what it already has.

    Safe to call from many threads at once: each thread gets its own official client and
    HTTP session. One client must not be shared: TwilioHttpClient keeps each request's
    response on the instance (`_test_only_last_response`) and returns it from there, so two
    threads sharing a client can each be handed the other's answer (and its SID).
    """

    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        api_base_url: str | None = None,
        timeout: float = 10.0,
        max_per_second: float | None = None,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ConfigurationError(
                "the Twilio transport needs TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"
            )
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._from_number = from_number
        self._messaging_service_sid = messaging_service_sid
        self._status_callback = status_callback
        self._api_base_url = api_base_url
        self.timeout = timeout
        # TWILIO_MAX_PER_SECOND and 429s: the dispatcher asks it before each hand-over.
        self.pacer = Pacer(max_per_second)
        self._local = threading.local()
        self._clients: dict[int, tuple[threading.Thread, RoutedHttpClient]] = {}
        self._clients_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioTransport:
        """Build the transport from TWILIO_* and PUBLIC_BASE_URL."""
        if not settings.twilio_account_sid or not settings.twilio_auth_token:
            raise ConfigurationError(
                "SMS_TRANSPORT=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to be set"
            )
        callback = (
            settings.public_base_url.rstrip("/") + STATUS_CALLBACK_PATH
            if settings.public_base_url
            else None
        )
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            from_number=settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            status_callback=callback,
            api_base_url=settings.twilio_api_base_url,
            timeout=settings.twilio_timeout_seconds,
            max_per_second=settings.twilio_max_per_second,
        )

    @property
    def http(self) -> RoutedHttpClient:
        """This thread's HTTP client (created on first use)."""
        self._client()
        http: RoutedHttpClient = self._local.http
        return http

    def _client(self) -> Any:
        """This thread's official client, with an HTTP session of its own."""
        client = getattr(self._local, "client", None)
        if client is None:
            http = RoutedHttpClient(timeout=self.timeout, base_url=self._api_base_url)
            client = Client(
                self._account_sid,
                self._auth_token,
                account_sid=self._account_sid,
                http_client=http,
            )
            self._local.client = client
            self._local.http = http
            current = threading.current_thread()
            with self._clients_lock:
                for ident, (thread, old) in list(self._clients.items()):
                    if not thread.is_alive():  # a finished pool's thread: free its sockets
                        old.close()
                        del self._clients[ident]
                self._clients[current.ident or 0] = (current, http)
        return client

    def close(self) -> None:
        """Close every thread's pooled HTTP connections."""
        with self._clients_lock:
            clients = [http for _thread, http in self._clients.values()]
            self._clients.clear()
        for http in clients:
            http.close()
        self._local = threading.local()

    # --- SmsTransport -----------------------------------------------------------------

    def send(self, sms: OutgoingSms) -> SendResult:
        """Create one Message; raise TransientSendError or PermanentSendError."""
        params: dict[str, str] = {"to": sms.to, "body": sms.body}
        if self._from_number:
            params["from_"] = self._from_number
        if self._messaging_service_sid:
            params["messaging_service_sid"] = self._messaging_service_sid
        if self._status_callback:
            params["status_callback"] = self._status_callback
        try:
            message = self._client().messages.create(**params)
        except TwilioException as exc:
            raise self._api_error(exc, now=sms.now, creating=True) from exc
        except requests.RequestException as exc:
            raise network_error(exc) from exc
        return _send_result(message)

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        """Find an outgoing text to `to` with this exact body created at or after `since`,
        other than the SIDs in `exclude`: the earliest created, if several.

        Lists by recipient only and compares the creation time here: Twilio's DateSent
        filter is by day and a text still queued at Twilio has no date_sent yet, so
        filtering on it could miss exactly the text we are looking for. The earliest match:
        two of our texts with the same words to one number (a phone two patients share)
        handed over minutes apart are asked about with windows from their hand-overs, and
        the earlier text's window holds both messages; taking the newest, it took the
        later text's message, and the later text, whose window does not reach the earlier
        message, was found missing and sent again.

        A scan that stops at its cap (RECONCILE_SCAN texts) with no match has not seen them
        all, and never will (texts to the number only accumulate): CannotTell (held for a
        person), never None, however old the last text it saw. Twilio documents neither
        which date orders its list, newest first (DateCreated or DateSent), nor where a text
        it has not sent yet goes: listed by DateSent with those last, ours, still queued at
        Twilio, comes after every text sent since, old ones too.
        """
        seen = 0
        earliest: Any = None
        try:
            for message in self._client().messages.stream(
                to=to, limit=RECONCILE_SCAN, page_size=PAGE_SIZE
            ):
                seen += 1
                created = message.date_created
                if not isinstance(created, datetime) or created < since:
                    continue
                direction = str(message.direction or "")
                if (
                    direction.startswith("outbound")
                    and (message.body or "") == body
                    and message.sid not in exclude
                    and (earliest is None or created <= earliest.date_created)
                ):
                    earliest = message
        except TwilioException as exc:
            raise self._api_error(exc, now=None, creating=False) from exc
        except requests.RequestException as exc:
            raise network_error(exc) from exc
        if earliest is not None:
            return _send_result(earliest)
        if seen >= RECONCILE_SCAN:
            raise CannotTell(f"{seen} texts to one number listed, at least")
        return None

    # --- status poller ----------------------------------------------------------------

    def fetch_status(self, provider_sid: str) -> ProviderStatus:
        """Ask Twilio for one Message's current status and error code."""
        try:
            message = self._client().messages(provider_sid).fetch()
        except TwilioException as exc:
            raise self._api_error(exc, now=None, creating=False) from exc
        except requests.RequestException as exc:
            raise network_error(exc) from exc
        code = message.error_code
        return ProviderStatus(
            status=str(message.status or ""),
            error_code=int(code) if code not in (None, "") else None,
        )

    # --- errors -----------------------------------------------------------------------

    def _api_error(
        self, exc: Exception, *, now: datetime | None, creating: bool
    ) -> TransientSendError | PermanentSendError:
        raw_code = getattr(exc, "code", None)
        status = getattr(exc, "status", None)
        page = _refused_page(exc)
        if page is not None:
            status, raw_code = page
        code = (
            int(raw_code) if isinstance(raw_code, int | str) and str(raw_code).isdigit() else None
        )
        http_status = int(status) if isinstance(status, int) else None
        decision = classify_api_error(code=code, http_status=http_status, creating=creating)
        label = str(code if code is not None else http_status or "twilio")
        text = f"{decision.reason} (Twilio {label})"
        if decision.outcome is Outcome.TRANSIENT:
            return TransientSendError(
                label,
                text,
                retry_after=retry_after_seconds(self.http.last_headers(), now=now),
                maybe_sent=decision.maybe_sent,
                throttled=http_status == 429 or code == TOO_MANY_REQUESTS,
            )
        return PermanentSendError(label, text, opted_out=decision.outcome is Outcome.OPTED_OUT)


def _refused_page(exc: Exception) -> tuple[int, int | None] | None:
    """The HTTP status and Twilio error code of a list page Twilio refused.

    The official client raises a page answered other than 200 (a 429 among them) as a
    bare TwilioException("Unable to fetch page", response), with no status or code of its
    own: they are read from the response it carries.
    """
    response = exc.args[1] if len(exc.args) > 1 else None
    status = getattr(response, "status_code", None)
    if not isinstance(status, int):
        return None
    try:
        code = json.loads(getattr(response, "text", "") or "{}").get("code")
    except (TypeError, ValueError, AttributeError):
        code = None
    return status, code if isinstance(code, int) else None


def _send_result(message: Any) -> SendResult:
    segments = message.num_segments
    count = int(segments) if segments not in (None, "") and str(segments).isdigit() else 0
    code = message.error_code
    return SendResult(
        provider_sid=str(message.sid),
        provider_status=str(message.status or "queued"),
        # A Messaging Service reports 0 segments until it has picked a sender.
        segments=count or None,
        error_code=int(code) if code not in (None, "") and str(code).isdigit() else None,
    )


def network_error(exc: requests.RequestException) -> TransientSendError:
    """Map a `requests` failure; say whether the request may have reached Twilio."""
    if isinstance(exc, requests.ConnectTimeout) or _never_connected(exc):
        return TransientSendError("network", "could not connect to Twilio")
    if isinstance(exc, requests.Timeout):
        return TransientSendError("timeout", "no answer from Twilio in time", maybe_sent=True)
    return TransientSendError(
        "network", f"connection to Twilio failed ({type(exc).__name__})", maybe_sent=True
    )


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the connection was refused or the name did not resolve: nothing was sent."""
    reason: object = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, NewConnectionError)


def retry_after_seconds(headers: Mapping[str, str], *, now: datetime | None) -> float | None:
    """Read Retry-After: delay-seconds or an HTTP date, counted from the answer's own Date
    (Twilio's clock, so no skew between the two), else from `now`."""
    value = headers.get("Retry-After") if headers else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    since = _http_date(headers.get("Date")) or now
    if when is None or since is None:
        return None
    return max((when - since).total_seconds(), 0.0)


def _http_date(value: str | None) -> datetime | None:
    """An HTTP date with its zone, else None."""
    try:
        when = parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None
    return when if when is not None and when.tzinfo is not None else None
