"""deploy/: the systemd units run commands that exist, the example settings parse, and every
metric the alert rules and the README name is one /metrics serves."""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from followup.cli import cli
from followup.errors import ConfigurationError
from followup.settings import settings_from_mapping

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
FOLLOWUP_BIN = "/opt/followup/.venv/bin/followup"


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file's sections and keys (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def parse_followup(args: list[str]) -> click.Command:
    """Parse a followup command line as the CLI would (options, types); return the command."""
    command: click.Command = cli
    context = click.Context(cli)
    name = "followup"
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        found = command.get_command(context, name)
        assert found is not None, f"no command {name!r}"
        command = found
    command.make_context(name, list(args))  # raises on an unknown option or a bad value
    return command


UNITS = sorted(DEPLOY.glob("*.service"))


@pytest.mark.parametrize("path", UNITS, ids=[p.name for p in UNITS])
def test_each_unit_runs_commands_that_exist(path: Path) -> None:
    sections = unit(path)
    service = sections["Service"]
    commands = service.get("ExecStart", []) + service.get("ExecStartPost", [])
    assert commands
    for line in commands:
        words = shlex.split(line.replace("%i", "8001"))
        if words[0] == FOLLOWUP_BIN:
            parse_followup(words[1:])
            assert service["User"] == ["followup"]
            assert service["EnvironmentFile"] == ["/etc/followup/followup.env"]
        else:
            assert Path(words[0]).is_absolute()
    if "Install" in sections:
        assert sections["Install"]["WantedBy"]


def test_web_units_leave_the_scheduler_to_the_workers() -> None:
    web = unit(DEPLOY / "followup-web@.service")["Service"]["ExecStart"][0]
    worker = unit(DEPLOY / "followup-worker@.service")["Service"]["ExecStart"][0]
    assert "serve" in web and "--no-scheduler" in web
    assert "worker" in worker and "--metrics-port %i" in worker


def test_the_example_settings_are_a_valid_production_configuration() -> None:
    known = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    } | {"FOLLOWUP_ENV"}
    values = dict(
        line.split("=", 1)
        for line in (DEPLOY / "followup.env.example").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    assert set(values) <= known
    # The placeholders are refused as they stand; the values an operator generates pass.
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        settings_from_mapping(values)
    for name, value in values.items():
        if value.startswith("replace-with-the-output-of-openssl-rand-hex-32"):
            values[name] = secrets.token_hex(32)
    settings = settings_from_mapping(values)
    assert settings.is_production and settings.sms_transport == "twilio"
    assert settings.metrics_token is not None and settings.log_format == "json"


def test_every_metric_named_in_the_docs_is_served(
    scrape: Callable[..., str], enroll: Callable[..., object]
) -> None:
    enroll()
    exposition = scrape()
    served: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE):
        served.add(name)
        if kind == "histogram":
            served |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    documents = [DEPLOY / "prometheus-alerts.yml", ROOT / "README.md", ROOT / "SECURITY.md"]
    named = {
        (doc.name, metric)
        for doc in documents
        for metric in re.findall(r"\bfollowup_[a-z_]+[a-z]\b", doc.read_text(encoding="utf-8"))
    }
    assert {m for d, m in named if d == "prometheus-alerts.yml"} >= {
        "followup_texts_overdue_oldest_seconds",
        "followup_attention_urgent_oldest_seconds",
        "followup_provider_errors_total",
    }
    missing = sorted(f"{doc}: {metric}" for doc, metric in named if metric not in served)
    assert not missing, missing
