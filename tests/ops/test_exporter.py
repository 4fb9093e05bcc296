"""The worker's own /metrics (`followup worker --metrics-port`), and `serve --no-scheduler`."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from followup.ops.exporter import MetricsServer
from tests.ops.conftest import METRICS_TOKEN
from tests.ops.test_checks import FOLLOWUP, clean_env, followup
from tests.test_processes import free_port


def get(url: str, token: str | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url)  # noqa: S310 - loopback only
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_the_exporter_needs_the_token() -> None:
    registry = CollectorRegistry()
    Counter("followup_example", "An example.", registry=registry).inc(3)
    server = MetricsServer(registry=registry, token=METRICS_TOKEN, host="127.0.0.1", port=0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, body, headers = get(base + "/metrics")
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="metrics"')
        assert "followup_example" not in body
        assert get(base + "/metrics", "wrong-token-0123456789")[0] == 401
        status, body, headers = get(base + "/metrics", METRICS_TOKEN)
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "followup_example_total 3.0" in body
        assert get(base + "/", METRICS_TOKEN)[0] == 404
    finally:
        server.stop()


def wait_for(url: str, token: str | None, process: subprocess.Popen[str]) -> tuple[int, str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited early:\n{process.communicate()[0]}")
        try:
            status, body, _ = get(url, token)
            return status, body
        except OSError:
            time.sleep(0.2)  # waiting for the server socket, not for the scheduler
    pytest.fail(f"{url} did not answer")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    return output


@pytest.mark.slow
def test_worker_serves_its_metrics_with_the_token(tmp_path: Path) -> None:
    assert followup(tmp_path, "db", "upgrade").returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [FOLLOWUP, "worker", "--metrics-port", str(port)],
        cwd=tmp_path,
        env=clean_env(tmp_path, METRICS_TOKEN=METRICS_TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        status, body = wait_for(url, METRICS_TOKEN, process)
        assert status == 200
        assert "followup_database_up 1.0" in body
        assert "# TYPE followup_job_runs_total counter" in body
        assert "process_resident_memory_bytes" in body
        assert get(url)[0] == 401
    finally:
        output = stop(process)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in output
    assert "worker stopped" in output and process.returncode == 0


@pytest.mark.slow
def test_worker_metrics_port_needs_a_token(tmp_path: Path) -> None:
    assert followup(tmp_path, "db", "upgrade").returncode == 0
    done = followup(tmp_path, "worker", "--metrics-port", str(free_port()))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: Invalid value for --metrics-port: needs METRICS_TOKEN to be set "
        "(followup worker --help)"
    )


@pytest.mark.slow
def test_worker_metrics_port_already_taken(tmp_path: Path) -> None:
    import socket

    assert followup(tmp_path, "db", "upgrade").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = followup(
            tmp_path, "worker", "--metrics-port", str(port), METRICS_TOKEN=METRICS_TOKEN
        )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: Invalid value for --metrics-port: cannot listen on 127.0.0.1:{port}: "
        "Address already in use (followup worker --help)"
    )


@pytest.mark.slow
def test_serve_without_the_scheduler(tmp_path: Path) -> None:
    assert followup(tmp_path, "db", "upgrade").returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [FOLLOWUP, "serve", "--port", str(port), "--no-scheduler"],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status, body = wait_for(f"http://127.0.0.1:{port}/healthz", None, process)
        assert (status, json.loads(body)["status"]) == (200, "ok")
    finally:
        output = stop(process)
    assert "(transport console; no scheduler)" in output
    assert process.returncode == 0, output
