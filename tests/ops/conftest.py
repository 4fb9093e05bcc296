"""Operations fixtures: the Twilio fixtures, and a runtime measured as production's is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from followup.app import create_app
from followup.messaging.transports.twilio import TwilioTransport
from followup.ops.metrics import Metrics, instrument_transport
from followup.runtime import Runtime
from tests.messaging.conftest import (  # noqa: F401 - fixtures used by these tests
    twilio_fake,
    twilio_runtime,
    twilio_settings,
    twilio_transport,
)

METRICS_TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
def measured_runtime(twilio_runtime: Runtime, twilio_transport: TwilioTransport) -> Runtime:  # noqa: F811
    """The Twilio runtime as build_runtime makes it: instrumented transport, a metrics token."""
    metrics = Metrics()
    return replace(
        twilio_runtime,
        settings=replace(twilio_runtime.settings, metrics_token=METRICS_TOKEN),
        transport=instrument_transport(twilio_transport, metrics),
        metrics=metrics,
    )


@pytest.fixture
def measured_app(measured_runtime: Runtime) -> Flask:
    app = create_app(measured_runtime.settings, runtime=measured_runtime)
    app.testing = True
    return app


@pytest.fixture
def scrape(measured_app: Flask) -> Callable[..., str]:
    """GET /metrics with the token; return the text exposition."""
    client: FlaskClient = measured_app.test_client()

    def _scrape(**headers: Any) -> str:
        response = client.get(
            "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}", **headers}
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_data(as_text=True)

    return _scrape
