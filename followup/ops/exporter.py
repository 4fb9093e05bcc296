"""`followup worker --metrics-port`: the worker's own /metrics, with the web app's token.

A worker runs the scheduler (dispatch, reap, ...) but no web app, so its provider and job
metrics would have nowhere to go: it serves them on a port of its own, to Prometheus
only, behind the same METRICS_TOKEN. A small threaded WSGI server, as prometheus-client's
own `start_http_server` is, with the bearer-token check in front.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry

from followup.ops.metrics import exposition, token_matches

StartResponse = Callable[..., Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # one line per scrape is noise


def metrics_app(
    registry: CollectorRegistry, token: str
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """A WSGI app answering GET /metrics for a bearer token, 404 for anything else."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") != "GET":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not token_matches(environ.get("HTTP_AUTHORIZATION"), token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
            return [b"a bearer token is required\n"]
        body, content_type = exposition(registry, environ.get("HTTP_ACCEPT"))
        start_response("200 OK", [("Content-Type", content_type)])
        return [body]

    return app


class MetricsServer:
    """The exporter, serving from a daemon thread until `stop()`."""

    def __init__(self, *, registry: CollectorRegistry, token: str, host: str, port: int) -> None:
        self._server = make_server(
            host,
            port,
            metrics_app(registry, token),
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-exporter", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
