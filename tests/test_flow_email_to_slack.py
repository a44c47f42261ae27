"""A customer e-mails the SMTP endpoint; the conversation appears as a Slack thread."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest

from bot.privacy import parse_address
from models import Conversation, Job, JobState, Message
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import Harness, SettingsFactory, running

SHARED_EMAILS = Path(__file__).resolve().parents[2] / "shared" / "data" / "emails"


def mail(
    text: str,
    *,
    subject: str = "Rechnung doppelt abgebucht",
    sender: str = "Anna Kunde <anna@kunde.example>",
    message_id: str | None = None,
    in_reply_to: str = "",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "support@shop.example"
    message["Subject"] = subject
    message["Message-ID"] = message_id or make_msgid(domain="kunde.example")
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message.set_content(text)
    return message


def thread_texts(harness: Harness, channel: str) -> list[list[str]]:
    """Each root in ``channel`` with the texts of its thread replies."""
    threads = []
    for root in harness.slack.channel_messages(channel):
        replies = harness.slack.thread(channel, root["ts"])[1:]
        threads.append([str(m.get("text", "")) for m in replies])
    return threads


def all_text(message: dict[str, Any]) -> str:
    """Everything Slack would render for a message: fallback text and every block."""
    return str(message.get("text", "")) + repr(message.get("blocks", []))


async def test_a_new_mail_becomes_a_root_message_and_a_thread(harness: Harness) -> None:
    await harness.send_mail(mail("Hallo, meine Rechnung wurde doppelt abgebucht."))
    await harness.settled()

    roots = harness.slack.channel_messages("support")
    assert len(roots) == 1
    root = all_text(roots[0])
    assert "Rechnung doppelt abgebucht" in root
    assert "anna@kunde.example" in root
    assert "general" in root
    thread = harness.slack.thread("support", roots[0]["ts"])
    assert len(thread) == 2
    assert "meine Rechnung wurde doppelt abgebucht" in all_text(thread[1])

    conversation = await Conversation.get()
    assert conversation.chat_thread_ts == roots[0]["ts"]
    assert conversation.chat_channel == harness.slack.channel_id("support")


async def test_a_follow_up_lands_in_the_same_thread(harness: Harness) -> None:
    first = mail("Erste Nachricht", message_id="<first@kunde.example>")
    await harness.send_mail(first)
    await harness.settled()
    reply = mail(
        "Noch eine Frage dazu.\n\nAm Montag schrieb Support:\n> Alte Antwort",
        subject="AW: Rechnung doppelt abgebucht",
        in_reply_to="<first@kunde.example>",
    )
    await harness.send_mail(reply)
    await harness.settled()

    (thread,) = thread_texts(harness, "support")
    assert len(thread) == 2
    assert "Noch eine Frage dazu." in thread[1]
    # The quoted history is cut in Slack but kept in the database.
    assert "Alte Antwort" not in thread[1]
    stored = await Message.filter(text__contains="Noch eine Frage").get()
    assert "Alte Antwort" in stored.full_text


async def test_each_post_is_handed_over_by_its_threading_job_not_claimed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = harness.service.runner
    claimed: list[str] = []
    claim = runner.claim

    async def counted(limit: int, *, all_due: bool = True) -> list[Job]:
        jobs = await claim(limit, all_due=all_due)
        claimed.extend(job.kind for job in jobs)
        return jobs

    monkeypatch.setattr(runner, "claim", counted)
    await harness.send_mail(mail("Erste Nachricht", message_id="<one@kunde.example>"))
    await harness.settled()
    await harness.send_mail(
        mail("Zweite Nachricht", subject="AW: Rechnung", in_reply_to="<one@kunde.example>")
    )
    await harness.settled()

    (thread,) = thread_texts(harness, "support")
    assert len(thread) == 2
    assert claimed.count("thread_inbound") == 2
    assert "post_inbound" not in claimed  # each ran on the worker that threaded its message
    posts = await Job.filter(kind="post_inbound").order_by("id")
    assert [(job.state, job.attempts) for job in posts] == [(JobState.DONE, 1)] * 2


async def test_same_sender_and_subject_without_headers_joins_the_conversation(
    harness: Harness,
) -> None:
    await harness.send_mail(mail("Paket nicht angekommen", subject="Lieferung 4711"))
    await harness.send_mail(mail("Immer noch nichts da", subject="WG: Re: Lieferung 4711"))
    await harness.send_mail(mail("Anderes Thema", subject="Neue Frage"))
    await harness.settled()

    assert await Conversation.all().count() == 2
    # The second thread holds its message and a link to the customer's first thread.
    first, second = thread_texts(harness, "support")
    assert len(first) == 2
    assert len(second) == 2
    assert second[0].startswith("This customer wrote before: ")


async def test_the_same_message_delivered_twice_is_shown_once(harness: Harness) -> None:
    message = mail("Bitte nur einmal zeigen", message_id="<once@kunde.example>")
    await harness.send_mail(message)
    await harness.send_mail(message)
    await harness.settled()

    assert await Message.all().count() == 1
    (thread,) = thread_texts(harness, "support")
    assert len(thread) == 1


async def test_another_message_reusing_a_message_id_is_shown_and_its_redelivery_is_not(
    harness: Harness,
) -> None:
    reused = "<reused@broken-mailer.example>"
    first = mail("Meine Rechnung", message_id=reused)
    other = mail(
        "Mein Paket fehlt",
        subject="Paket",
        sender="Ben Kunde <ben@kunde.example>",
        message_id=reused,
    )
    for message in (first, other, other, first):
        await harness.send_mail(message)
    await harness.settled()

    assert await Message.all().count() == 2
    texts = [text for thread in thread_texts(harness, "support") for text in thread]
    assert sum("Meine Rechnung" in text for text in texts) == 1
    assert sum("Mein Paket fehlt" in text for text in texts) == 1


async def test_a_reused_message_id_redelivered_after_its_first_owner_was_forgotten_is_not_new(
    harness: Harness,
) -> None:
    reused = "<reused@broken-mailer.example>"
    other = mail(
        "Mein Paket fehlt",
        subject="Paket",
        sender="Ben Kunde <ben@kunde.example>",
        message_id=reused,
    )
    for message in (mail("Meine Rechnung", message_id=reused), other):
        await harness.send_mail(message)
    await harness.settled()
    await harness.service.privacy.forget(parse_address("anna@kunde.example"))

    await harness.send_mail(other)
    await harness.settled()

    assert await Message.all().count() == 1
    texts = [text for thread in thread_texts(harness, "support") for text in thread]
    assert sum("Mein Paket fehlt" in text for text in texts) == 1


async def test_mentions_and_disguised_links_in_a_mail_ping_nobody(harness: Harness) -> None:
    hostile = "<!channel> <!here> <@U0AGENT1> <https://evil.example|https://bank.example> & more"
    await harness.send_mail(mail(hostile, subject="<!everyone> urgent"))
    await harness.settled()

    (root,) = harness.slack.channel_messages("support")
    posted = harness.slack.thread("support", root["ts"])[1]
    for message in (root, posted):
        rendered = all_text(message)
        for command in ("<!channel>", "<!here>", "<!everyone>", "<@U0AGENT1>", "<https://evil"):
            assert command not in rendered
    assert "&lt;!channel&gt;" in all_text(posted)
    assert "&lt;https://evil.example|https://bank.example&gt;" in all_text(posted)
    assert "&amp; more" in all_text(posted)


async def test_attachments_are_uploaded_into_the_thread(harness: Harness) -> None:
    message = mail("Anbei die Rechnung.")
    message.add_attachment(
        b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="Rechnung März.pdf"
    )
    await harness.send_mail(message)
    await harness.settled()

    (root,) = harness.slack.channel_messages("support")
    files = [f for m in harness.slack.thread("support", root["ts"]) for f in m.get("files", [])]
    assert [f["name"] for f in files] == ["Rechnung März.pdf"]
    assert harness.slack.file_content(files[0]["id"]) == b"%PDF-1.4 invoice"


async def test_an_attachments_name_pings_nobody(harness: Harness) -> None:
    message = mail("Siehe Anhang.")
    message.add_attachment(
        b"%PDF-1.4", maintype="application", subtype="pdf", filename="<!channel> & <@U0AGENT1>.pdf"
    )
    await harness.send_mail(message)
    await harness.settled()

    (root,) = harness.slack.channel_messages("support")
    thread = harness.slack.thread("support", root["ts"])
    (shared,) = [f for m in thread for f in m.get("files", [])]
    escaped = "&lt;!channel&gt; &amp; &lt;@U0AGENT1&gt;.pdf"
    assert (shared["name"], shared["title"]) == (escaped, escaped)
    assert not any("<!channel>" in all_text(m) for m in thread)


async def test_an_auto_reply_is_shown_as_automatic(harness: Harness) -> None:
    message = mail("Ich bin bis Montag nicht im Büro.", subject="Abwesenheitsnotiz")
    message["Auto-Submitted"] = "auto-replied"
    await harness.send_mail(message)
    await harness.settled()

    (root,) = harness.slack.channel_messages("support")
    assert "Automatic mail" in all_text(harness.slack.thread("support", root["ts"])[1])
    assert (await Message.get()).is_automated


async def test_mail_for_other_domains_is_refused_at_rcpt(harness: Harness) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await harness.send_mail(mail("spam"), to="victim@elsewhere.example")
    code, reason = refused.value.recipients["victim@elsewhere.example"]
    assert code == 550
    assert b"relay access denied" in reason
    assert await Message.all().count() == 0


async def test_plus_addresses_and_accepted_domains_are_taken(harness: Harness) -> None:
    await harness.send_mail(mail("one"), to="support+abc@shop.example")
    await harness.send_mail(mail("two", subject="other"), to="anyone@help.shop.example")
    assert await Message.all().count() == 2


async def test_a_message_over_the_size_limit_gets_552(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay, email_extra="max_message_bytes = 20000") as h:
        big = mail("x" * 10)
        big.add_attachment(b"0" * 30000, maintype="application", subtype="zip")
        with pytest.raises(smtplib.SMTPException) as refused:
            await h.send_mail(big)
        assert "552" in str(refused.value)
        await h.send_mail(mail("small enough"))
        assert await Message.all().count() == 1


@pytest.mark.skipif(not SHARED_EMAILS.is_dir(), reason="shared sample e-mails not present")
async def test_every_shared_sample_mail_goes_through_intake(harness: Harness) -> None:
    # The .eml files go as they are; the HTML bodies go wrapped in an HTML-only mail.
    emls = sorted(SHARED_EMAILS.rglob("*.eml"))
    htmls = sorted(SHARED_EMAILS.rglob("*.html"))
    assert emls
    assert htmls
    for sample in emls:
        await harness.send_mail(sample.read_bytes())
    for sample in htmls:
        message = mail("", subject=f"HTML sample {sample.stem}")
        message.set_content(sample.read_text(errors="replace"), subtype="html", cte="base64")
        await harness.send_mail(message)
    await harness.settled(timeout=30)

    assert await Message.all().count() == len(emls) + len(htmls)
    assert not await Message.filter(chat_ts=None).exists()
    for stored in await Message.all():
        assert stored.text.strip(), f"nothing readable shown for {stored.subject!r}"
        assert "<div" not in stored.text
        assert "<p>" not in stored.text.lower()
