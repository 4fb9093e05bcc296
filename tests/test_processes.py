"""`followup serve` and `followup worker` as real processes: start, answer, stop on a signal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

FOLLOWUP = str(Path(sys.executable).with_name("followup"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], folder: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_"))}
    env["DATABASE_URL"] = f"sqlite:///{folder / 'followup.db'}"
    subprocess.run(
        [FOLLOWUP, "db", "upgrade"], cwd=folder, env=env, check=True, capture_output=True
    )
    return subprocess.Popen(
        [FOLLOWUP, *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str], signum: int) -> str:
    process.send_signal(signum)
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:  # pragma: no cover - the failure being tested
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"did not stop on {signal.Signals(signum).name}:\n{output}")
    return output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_healthz_then_stops_cleanly_on_a_signal(tmp_path: Path, signum: int) -> None:
    port = free_port()
    process = start(["serve", "--port", str(port)], tmp_path)
    body = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and body is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:  # noqa: S310
                assert response.status == 200
                body = json.loads(response.read())
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"serve exited early:\n{process.communicate()[0]}")
            time.sleep(0.2)  # waiting for a server socket, not for the scheduler
    assert body == {"status": "ok", "database": "ok", "transport": "console"}
    output = stop(process, signum)
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/" in output
    assert "followup stopped" in output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_worker_stops_cleanly_on_a_signal(tmp_path: Path, signum: int) -> None:
    process = start(["worker"], tmp_path)
    try:
        assert process.stdout is not None
        banner = ""
        for _ in range(50):  # the banner comes after APScheduler's own start-up lines
            banner = process.stdout.readline()
            if banner.startswith("worker ") or not banner:
                break
        assert banner.startswith("worker ") and "transport console" in banner
        output = stop(process, signum)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "worker stopped" in output
