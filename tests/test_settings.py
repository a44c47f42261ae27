"""Settings: a wrong or missing setting stops start-up with a message that says how to fix it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters.cli import main
from bot.errors import ConfigError
from bot.settings import check_settings, load_settings, settings_from_toml

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "switchboard.example.toml"
ENV = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "secret"}
MINIMAL = '[[skills]]\nname = "general"\nchannel = "support"\n'


def problems_in(text: str, env: dict[str, str] | None = None) -> list[str]:
    try:
        settings_from_toml(text, ENV if env is None else env)
    except ConfigError as exc:
        return [exc.setting, exc.problem]
    return []


def test_the_example_file_is_valid() -> None:
    settings = load_settings(EXAMPLE, ENV)
    assert settings.email.support_address == "support@example.com"
    assert [s.name for s in settings.skills] == ["general", "billing", "technical"]
    assert settings.replies.undo_seconds == 10
    assert settings.replies.note_prefixes == ("note:", "//")
    assert settings.database_url.startswith("sqlite://")


def test_secrets_come_from_the_environment() -> None:
    env = {**ENV, "DATABASE_URL": "postgres://u@db:5432/sb", "SMTP_RELAY_PASSWORD": "pw"}
    text = MINIMAL + '[email.relay]\nusername = "relay-user"\n'
    settings = settings_from_toml(text, env)
    assert settings.database_url == "postgres://u@db:5432/sb"
    assert settings.slack.bot_token == "xoxb-1"
    assert settings.email.relay.password == "pw"


@pytest.mark.parametrize(
    ("text", "env", "setting", "hint"),
    [
        (MINIMAL, {"SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN", "OAuth & Permissions"),
        (MINIMAL, {"SLACK_BOT_TOKEN": "x"}, "SLACK_SIGNING_SECRET", "Signing Secret"),
        (MINIMAL + '[slack]\nmode = "socket"\n', ENV, "SLACK_APP_TOKEN", "xapp-"),
        ("", ENV, "skills", "[[skills]]"),
        (MINIMAL + '[email]\nsupport_address = "nope"\n', ENV, "email.support_address", "like"),
        (MINIMAL + '[email]\nlisten_port = "25"\n', ENV, "email.listen_port", "whole number"),
        (MINIMAL + "[replies]\nundo_seconds = -1\n", ENV, "replies.undo_seconds", "between"),
        (MINIMAL + '[triage]\ndefault_skill = "sales"\n', ENV, "triage.default_skill", "general"),
        (MINIMAL + '[email.relay]\nusername = "u"\n', ENV, "email.relay.username", "PASSWORD"),
        (MINIMAL + '[slack]\nmode = "rtm"\n', ENV, "slack.mode", '"socket"'),
        (MINIMAL * 2, ENV, "skills[1].name", "twice"),
        (MINIMAL, {**ENV, "DATABASE_URL": "mysql://x"}, "DATABASE_URL", "postgres://"),
    ],
)
def test_a_wrong_setting_is_named_with_its_fix(
    text: str, env: dict[str, str], setting: str, hint: str
) -> None:
    named, problem = problems_in(text, env)
    assert named == setting
    assert hint in problem


def test_check_collects_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.toml"
    path.write_text('[email]\nsupport_address = "x"\n[replies]\nundo_seconds = 1000\n')
    settings, problems = check_settings(path, {})
    assert settings is None
    named = {p.setting for p in problems}
    assert {"email.support_address", "replies.undo_seconds", "SLACK_BOT_TOKEN", "skills"} <= named


def test_check_config_command_says_what_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    missing = tmp_path / "missing.toml"
    assert main(["--config", str(missing), "check-config"]) == 2
    assert "copy config/switchboard.example.toml" in capsys.readouterr().err

    config = tmp_path / "switchboard.toml"
    shutil.copy(EXAMPLE, config)
    assert main(["--config", str(config), "check-config"]) == 2
    assert "SLACK_BOT_TOKEN: is not set" in capsys.readouterr().err

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "secret")
    assert main(["--config", str(config), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert "billing -> #support-billing" in out


def test_invalid_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[email\n")
    _, problems = check_settings(path, ENV)
    assert "not valid TOML" in str(problems[0])
