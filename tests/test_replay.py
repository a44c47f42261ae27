"""``switchboard replay``: stored mail through the real parser, threading and triage, unposted."""

from __future__ import annotations

import io
import json
import mailbox
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from adapters.cli import main
from adapters.cli.replay import replay, replay_settings
from adapters.email.parse import MAX_MIME_DEPTH
from bot.errors import ConfigError
from bot.settings import Settings
from bot.triage.encoder import SentenceEncoder
from tests.test_flow_email_to_slack import SHARED_EMAILS, mail

SECRETS = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SWITCHBOARD_CONFIG", "DATABASE_URL")
SETTINGS_FILE = """
[email]
support_address = "support@shop.example"

[triage.priority]
vip_domains = ["bigcorp.example"]

[[skills]]
name = "general"
channel = "support"

[[skills]]
name = "billing"
channel = "support-billing"

[[skills]]
name = "shipping"
channel = "support-shipping"
"""


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    """The bundled encoder, loaded once for the module (as the service loads it)."""
    return SentenceEncoder.load(backend="onnx")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The replay's settings from a file, with no secret in the environment."""
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "switchboard.toml"
    path.write_text(SETTINGS_FILE)
    found, origin = replay_settings(str(path))
    assert origin == str(path)
    return found


def email(
    text: str, *, subject: str, date: str = "Mon, 02 Sep 2024 09:00:00 +0200", **headers: str
) -> EmailMessage:
    """A customer's mail (``tests.test_flow_email_to_slack.mail``) sent at ``date``."""
    message = mail(text, subject=subject, **headers)
    message["Date"] = date
    return message


async def replayed(
    paths: list[Path],
    settings: Settings,
    encoder: SentenceEncoder,
    database_url: str,
    **options: Any,
) -> tuple[list[dict[str, Any]], int, str]:
    """The JSON lines a replay prints, its error count and what it said on stderr."""
    out, err = io.StringIO(), io.StringIO()
    errors = await replay(
        paths,
        settings,
        json_lines=True,
        out=out,
        err=err,
        encoder=encoder,
        database_url=database_url,
        **options,
    )
    return [json.loads(line) for line in out.getvalue().splitlines()], errors, err.getvalue()


async def test_a_reply_in_an_mbox_joins_the_conversation_it_answers(
    tmp_path: Path, settings: Settings, encoder: SentenceEncoder, database_url: str
) -> None:
    path = tmp_path / "inbox.mbox"
    box = mailbox.mbox(path)
    box.add(
        email(
            "Mir wurde die Rechnung 4711 doppelt abgebucht.",
            subject="Rechnung doppelt abgebucht",
            message_id="<first@kunde.example>",
        )
    )
    box.add(
        email(
            "Where is my parcel? It was due on Friday.",
            subject="Parcel missing",
            sender="ben@other.example",
            message_id="<parcel@other.example>",
        )
    )
    box.add(
        email(
            "Ich warte immer noch auf die Erstattung.",
            subject="Noch eine Frage",
            message_id="<second@kunde.example>",
            date="Fri, 06 Sep 2024 09:00:00 +0200",
            in_reply_to="<first@kunde.example>",
        )
    )
    box.close()

    lines, errors, said = await replayed([path], settings, encoder, database_url, progress_every=2)

    assert errors == 0
    assert [line["file"] for line in lines] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    first, parcel, reply = lines
    assert reply["conversation"] == first["conversation"] != parcel["conversation"]
    for line in lines:
        assert line["error"] is None
        assert line["skill"] in {"general", "billing", "shipping", "triage"}
        assert line["priority"] in {"urgent", "high", "normal", "low"}
        assert 0 <= line["confidence"] <= 1
    assert (first["language"], parcel["language"]) == ("de", "en")
    # The follow-up came four days (96 h) after the first mail, unanswered: past 72 h is urgent.
    assert reply["priority"] == "urgent"
    assert "waiting 96 h" in reply["priority_reason"]
    assert "3/3 messages" in said


async def test_a_maildir_is_replayed_in_delivery_order(
    tmp_path: Path, settings: Settings, encoder: SentenceEncoder, database_url: str
) -> None:
    folder = tmp_path / "Maildir"
    box = mailbox.Maildir(folder)
    first = box.add(
        email("Mein Paket ist nicht angekommen.", subject="Paket", message_id="<p1@kunde.example>")
    )
    follow_up = box.add(
        email(
            "Gibt es schon Neuigkeiten zu meinem Paket?",
            subject="Re: Paket",
            message_id="<p2@kunde.example>",
            in_reply_to="<p1@kunde.example>",
        )
    )

    lines, errors, _ = await replayed([folder], settings, encoder, database_url)

    assert errors == 0
    assert [line["file"] for line in lines] == [f"{folder}:{first}", f"{folder}:{follow_up}"]
    assert lines[0]["conversation"] == lines[1]["conversation"]
    assert all(line["language"] == "de" for line in lines)


async def test_a_broken_file_gets_an_error_line_and_the_rest_go_on(
    tmp_path: Path, settings: Settings, encoder: SentenceEncoder, database_url: str
) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "a-good.eml").write_bytes(
        email(
            "Bitte senden Sie mir die Rechnung.", subject="Rechnung", message_id="<g@k.example>"
        ).as_bytes()
    )
    (folder / "b-binary.eml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe" * 40)
    (folder / "c-empty.eml").write_bytes(b"")
    (folder / "notes.txt").write_text("not mail")
    missing = tmp_path / "missing.mbox"

    lines, errors, said = await replayed([folder, missing], settings, encoder, database_url)

    assert [Path(line["file"]).name for line in lines] == [
        "a-good.eml",
        "b-binary.eml",
        "c-empty.eml",
        "missing.mbox",
    ]
    good, binary, empty, absent = lines
    assert good["error"] is None
    assert good["skill"] is not None
    assert "not an e-mail message" in binary["error"]
    assert "empty" in empty["error"]
    assert absent["error"] == "no such file or folder"
    assert all(line["conversation"] is None for line in (binary, empty, absent))
    assert errors == 3
    assert "skipped 1 files" in said


async def test_mail_the_smtp_endpoint_refuses_is_an_error_line(
    tmp_path: Path, settings: Settings, encoder: SentenceEncoder, database_url: str
) -> None:
    body = b"Content-Type: text/plain\r\n\r\nhello\r\n"
    for level in range(MAX_MIME_DEPTH + 5):
        part = b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n%s\r\n--b%d--\r\n'
        body = part % (level, level, body, level)
    (tmp_path / "1-nested.eml").write_bytes(b"From: x@y.example\r\nSubject: deep\r\n" + body)
    (tmp_path / "2-fine.eml").write_bytes(
        email("Wo ist mein Paket?", subject="Paket", message_id="<f@k.example>").as_bytes()
    )

    lines, errors, _ = await replayed([tmp_path], settings, encoder, database_url)

    nested, fine = lines
    assert nested["error"].startswith("refused, as the SMTP endpoint would: MIME parts")
    assert fine["error"] is None
    assert errors == 1


async def test_the_same_message_twice_is_a_duplicate_of_its_conversation(
    tmp_path: Path, settings: Settings, encoder: SentenceEncoder, database_url: str
) -> None:
    message = email("Wo bleibt meine Gutschrift?", subject="Gutschrift", message_id="<d@k.example>")
    for name in ("one.eml", "two.eml"):
        (tmp_path / name).write_bytes(message.as_bytes())

    lines, errors, _ = await replayed(
        [tmp_path / "one.eml", tmp_path / "two.eml"], settings, encoder, database_url
    )

    assert errors == 0
    assert [line["duplicate"] for line in lines] == [False, True]
    assert lines[0]["conversation"] == lines[1]["conversation"]
    assert lines[1]["skill"] is None


@pytest.mark.skipif(not SHARED_EMAILS.is_dir(), reason="shared sample e-mails not present")
async def test_every_shared_sample_mail_gets_a_line(
    settings: Settings, encoder: SentenceEncoder, database_url: str
) -> None:
    samples = sorted(SHARED_EMAILS.rglob("*.eml"))

    lines, errors, said = await replayed([SHARED_EMAILS], settings, encoder, database_url)

    assert [line["file"] for line in lines] == [str(path) for path in samples]
    assert errors == 0
    assert all(line["priority"] and line["language"] is not None for line in lines)
    assert "files that are not .eml or .mbox" in said


def test_the_command_prints_an_aligned_line_per_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "switchboard.toml"
    config.write_text(SETTINGS_FILE)
    folder = tmp_path / "mail"
    folder.mkdir()
    vip = email(
        "Can I get a copy of my invoice?",
        subject="Invoice copy",
        sender="it@bigcorp.example",
        message_id="<vip@bigcorp.example>",
    )
    (folder / "1-vip.eml").write_bytes(vip.as_bytes())
    (folder / "2-broken.eml").write_bytes(b"\x00\x01\x02 binary")

    status = main(["--config", str(config), "replay", str(folder)])

    out, err = capsys.readouterr()
    header, vip_line, broken_line = out.splitlines()
    assert status == 1  # a message failed
    assert header.split() == ["FILE", "CONV", "SKILL", "PRIORITY", "LANG", "CONF", "REASON"]
    assert vip_line.startswith(str(folder / "1-vip.eml"))
    assert vip_line.index("#1") == header.index("CONV")
    assert vip_line.index("high") == header.index("PRIORITY")
    assert vip_line.endswith("high: VIP domain")
    assert broken_line.index("error: not an e-mail message") == header.index("CONV")
    assert f"settings from {config}" in err
    assert "loading the triage model (bundled)" in err
    assert "replayed 2 messages: 1 conversations, 1 errors" in err


def test_without_a_settings_file_the_shipped_skills_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    settings, origin = replay_settings(None)

    assert "no settings file" in origin
    assert {"billing", "shipping", "technical", "general"} <= {s.name for s in settings.skills}
    assert settings.triage.default_skill == "general"


def test_a_settings_file_needs_none_of_its_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*SECRETS, "TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET", "WIDGET_SECRET"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "production.toml"
    config.write_text(
        SETTINGS_FILE
        + '[telegram]\nenabled = true\n[email.relay]\nusername = "relay"\n'
        + '[[webhooks]]\nname = "widget"\ncallback_url = "https://chat.example/replies"\n'
        + 'secret_env = "WIDGET_SECRET"\n'
    )

    settings, _ = replay_settings(str(config))

    assert settings.telegram.enabled
    assert settings.triage.priority.vip_domains == ("bigcorp.example",)
    with pytest.raises(ConfigError, match="does not exist"):
        replay_settings(str(tmp_path / "missing.toml"))
