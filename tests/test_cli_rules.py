"""``switchboard rules test``: which rules a message would fire, and why, changing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.cli import main
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, toml_for
from tests.test_flow_email_to_slack import mail

RULES = """
[triage.priority]
vip_domains = ["kunde.example"]

[sla]
timezone = "Europe/Berlin"
week = "mon-fri 09:00-18:00"

[[rules]]
name = "VIP at night"
when = { event = "vip", business_hours = false }
then = { set_priority = "urgent", post_to = "support-leads" }

[[rules]]
name = "Refunds to billing"
when = { event = "keyword", keywords = ["refund", "erstattung"], skills = ["general"] }
then = { move_to = "billing" }
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "switchboard.toml"
    path.write_text(toml_for(extra=RULES))
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("DATABASE_URL", f"sqlite://{tmp_path / 'unused.sqlite3'}")
    return path


def test_a_text_shows_which_rules_fire_and_why(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "--config", str(config), "rules", "test",
            "--text", "Where is my refund?", "--sender", "ceo@kunde.example",
            "--skill", "general", "--priority", "normal",
            "--at", "2026-12-04T20:00:00+01:00",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert "outside business hours" in out
    assert (
        "FIRES  VIP at night: ✓ event message_in is a message, ✓ VIP sender, "
        "✓ outside business hours; would set priority urgent, post to #support-leads"
    ) in out
    assert "FIRES  Refunds to billing: " in out
    assert "✓ keywords ['refund']" in out
    assert not (config.parent / "unused.sqlite3").exists()  # it never touched a database


def test_an_email_file_in_business_hours_fires_only_the_keyword_rule(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eml = tmp_path / "message.eml"
    eml.write_bytes(bytes(mail("Bitte um Erstattung.")))
    status = main(
        [
            "--config", str(config), "rules", "test", str(eml),
            "--skill", "general", "--priority", "normal", "--at", "2026-12-04T10:00:00+01:00",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert "A message from anna@kunde.example (email)" in out
    assert (
        "no     VIP at night: ✓ event message_in is a message, ✓ VIP sender, ✗ in business" in out
    )
    assert "FIRES  Refunds to billing" in out


def test_a_message_must_be_given_once(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--config", str(config), "rules", "test", "--skill", "general"])
    assert status == 2
    assert "give an e-mail file or --text" in capsys.readouterr().err
