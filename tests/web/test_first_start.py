"""`followup serve` on an empty database creates an admin and prints its password once."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_processes import free_port, start, stop

PASSWORD_RE = re.compile(r"as (\S+@\S+) with the one-time password (once-\S+)")


def serve_once(folder: Path) -> str:
    """Start `followup serve`, wait until it answers, stop it; return what it printed."""
    port = free_port()
    process = start(["serve", "--port", str(port)], folder)
    deadline = time.monotonic() + 30
    ready = False
    while time.monotonic() < deadline and not ready:
        try:
            url = f"http://127.0.0.1:{port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                ready = json.loads(response.read())["status"] == "ok"
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"serve exited early:\n{process.communicate()[0]}")
            time.sleep(0.2)  # waiting for a server socket, not for the scheduler
    try:
        assert ready, "serve did not answer /healthz"
    finally:
        output = stop(process, signal.SIGTERM)
    assert process.returncode == 0, output
    return output


@pytest.mark.slow
def test_serve_prints_the_first_admin_password_only_once(tmp_path: Path) -> None:
    first = serve_once(tmp_path)
    match = PASSWORD_RE.search(first)
    assert match, first
    assert match.group(1) == "admin@followup.local"
    assert len(match.group(2)) >= 20
    second = serve_once(tmp_path)
    assert "one-time password" not in second
    assert match.group(2) not in second
