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


def test_priority_rules_come_from_the_triage_priority_table() -> None:
    text = MINIMAL + (
        "[triage.priority]\n"
        'vip_domains = ["@BigCorp.example"]\n'
        'vip_customers = ["CEO@smallshop.example"]\n'
        'urgent_keywords = ["Produktionsstillstand"]\n'
        "follow_ups_to_raise = 0\n"
        "waiting_hours_high = 8\n"
    )
    rules = settings_from_toml(text, ENV).triage.priority
    assert rules.vip_domains == ("bigcorp.example",)
    assert rules.vip_customers == ("ceo@smallshop.example",)
    assert rules.urgent_keywords == ("produktionsstillstand",)
    assert (rules.follow_ups_to_raise, rules.waiting_hours_high) == (0, 8.0)
    # What the table leaves out keeps its default.
    assert "anwalt" in rules.high_keywords
    assert rules.waiting_hours_urgent == 72.0


def test_without_a_priority_table_the_built_in_rules_apply() -> None:
    rules = settings_from_toml(MINIMAL, ENV).triage.priority
    assert rules.vip_domains == ()
    assert "server down" in rules.urgent_keywords


@pytest.mark.parametrize(
    ("table", "setting", "hint"),
    [
        ('vip_domains = ["big corp"]', "triage.priority.vip_domains", "like"),
        ('vip_domains = "bigcorp.example"', "triage.priority.vip_domains", "list of strings"),
        ('vip_customers = ["a b@x.example"]', "triage.priority.vip_customers", "addresses"),
        ('urgent_keywords = ["down", " "]', "triage.priority.urgent_keywords", "empty"),
        ("model_min_confidence = 2", "triage.priority.model_min_confidence", "between 0 and 1"),
        ("follow_ups_to_raise = -1", "triage.priority.follow_ups_to_raise", "0"),
        ("waiting_hours_urgent = 12", "triage.priority.waiting_hours_urgent", "(24)"),
        ('vip_domain = ["x.example"]', "triage.priority.vip_domain", "vip_domains"),
    ],
)
def test_a_wrong_priority_rule_is_named_with_its_fix(table: str, setting: str, hint: str) -> None:
    named, problem = problems_in(MINIMAL + f"[triage.priority]\n{table}\n")
    assert named == setting
    assert hint in problem


def test_the_encoder_uses_one_thread_unless_told_otherwise() -> None:
    assert settings_from_toml(MINIMAL, ENV).triage.encoder_threads == 1
    told = settings_from_toml(MINIMAL + "[triage]\nencoder_threads = 2\n", ENV)
    assert told.triage.encoder_threads == 2
    for wrong, hint in (("0", "between 1 and 64"), ('"two"', "must be")):
        named, problem = problems_in(MINIMAL + f"[triage]\nencoder_threads = {wrong}\n")
        assert named == "triage.encoder_threads"
        assert hint in problem


def test_an_idle_job_runner_waits_at_most_idle_poll_seconds() -> None:
    jobs = settings_from_toml(MINIMAL, ENV).jobs
    assert (jobs.poll_seconds, jobs.idle_poll_seconds) == (0.5, 2.0)
    told = settings_from_toml(MINIMAL + "[jobs]\npoll_seconds = 5\n", ENV).jobs
    assert told.idle_wait_limit == 5  # never below the first wait
    for table in ("idle_poll_seconds = 0", "idle_poll_seconds = 120", "poll_seconds = 0"):
        named, problem = problems_in(MINIMAL + f"[jobs]\n{table}\n")
        assert named == f"jobs.{table.split()[0]}"
        assert "more than 0" in problem


def test_a_skill_names_its_on_call_group_by_id() -> None:
    settings = settings_from_toml(MINIMAL + 'oncall = "S0123ABCD"\n', ENV)
    assert settings.skills[0].oncall == "S0123ABCD"
    assert settings_from_toml(MINIMAL, ENV).skills[0].oncall == ""
    for wrong in ('"@support-oncall"', '"<!subteam^S0123ABCD>"', '"U0123ABCD"', '"s0123abcd"'):
        named, problem = problems_in(MINIMAL + f"oncall = {wrong}\n")
        assert named == "skills[0].oncall"
        assert 'like "S0123ABCD"' in problem


@pytest.mark.parametrize(
    ("text", "setting", "hint"),
    [
        ("[replies]\nundo_second = 5\n", "replies.undo_second", "did you mean undo_seconds?"),
        ("[jobs]\nalert_after = 60\n", "jobs.alert_after", "did you mean alert_after_seconds?"),
        ("[job]\nworkers = 2\n", "job", "did you mean jobs?"),
        ('[email.relay]\nhots = "mx"\n', "email.relay.hots", "did you mean host?"),
        ('[slack]\napi_uri = "http://x/"\n', "slack.api_uri", "did you mean api_url?"),
        ('chanel = "x"\n', "skills[0].chanel", "did you mean channel?"),
        ("[roles]\nsupervisors = []\n", "roles.supervisors", "the settings here are admins, leads"),
    ],
)
def test_an_unknown_key_is_named_with_the_nearest_valid_one(
    text: str, setting: str, hint: str
) -> None:
    # A line before any table header lands in MINIMAL's [[skills]] entry, which reports its
    # keys like any other table.
    named, problem = problems_in(MINIMAL + text)
    assert named == setting
    assert problem == f"unknown setting; {hint}"


def test_check_config_lists_unknown_keys_and_serve_refuses_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "secret")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    config = tmp_path / "switchboard.toml"
    config.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace("undo_seconds =", "undo_second =")
    )
    assert main(["--config", str(config), "check-config"]) == 2
    assert "replies.undo_second: unknown setting; did you mean undo_seconds?" in (
        capsys.readouterr().err
    )
    # serve stops before it opens anything: a misspelt key ignored silently is the bug.
    assert main(["--config", str(config), "serve"]) == 2
    assert "replies.undo_second: unknown setting" in capsys.readouterr().err
