"""The web fixtures, for the purged patient's page."""

from tests.web.conftest import app, signed_in, staff  # noqa: F401 - fixtures
