"""``switchboard demo``: the real service against a local Slack sandbox, no account needed.

It starts Switchboard on a fresh SQLite file with the bundled triage model, a loopback Slack
(the sandbox the tests use) and a loopback mail relay; sends sample customer e-mails in German
and English through the SMTP port with a real SMTP client; prints the channels and threads that
result; then plays an agent's reply in a thread and prints the e-mail the customer receives.
Then a Telegram customer writes and is answered, and Anna, who wrote by e-mail, writes again on
WhatsApp: a lead links the two, her WhatsApp thread links to her e-mail thread, the customer
card shows both, and the reply in the WhatsApp thread goes out over WhatsApp.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import sys
import tempfile
from email.message import EmailMessage
from pathlib import Path

from adapters.service import Service
from adapters.telegram.webhook import WEBHOOK_PATH
from bot.jobs import queue_depth
from bot.logs import configure_logging
from bot.settings import Settings, settings_from_toml
from bot.shapes import ChannelKind
from models import Conversation
from standins.mail import SmtpSink
from standins.slack import SlackEvents, SlackSandbox
from standins.telegram import TelegramSandbox
from standins.whatsapp import WhatsAppSandbox

SIGNING_SECRET = "demo-signing-secret"
BOT_TOKEN = "xoxb-demo"
AGENT = "U0DEMOAGENT"
TELEGRAM_SECRET = "demo-telegram-webhook-secret"
DEMO_CHANNELS = (
    "support",
    "support-billing",
    "support-technical",
    "support-shipping",
    "support-returns",
    "support-triage",
)

DEMO_TOML = """
[service]
http_port = 0
log_format = "text"
log_level = "warning"

[email]
listen_port = 0
support_address = "support@shop.example"
support_name = "Example Shop Support"

[email.relay]
host = "127.0.0.1"
port = {relay_port}

[slack]
api_url = "{api_url}"
triage_channel = "support-triage"

[telegram]
enabled = true
api_url = "{telegram_url}"

{whatsapp}

[roles]
leads = ["{agent}"]

[triage]
default_skill = "general"

[replies]
undo_seconds = 2

[jobs]
poll_seconds = 0.1

# Deadlines in business time: each card shows what is due ("first reply due in 3 h 20 min").
[sla]
timezone = "Europe/Berlin"
week = "mon-fri 09:00-12:30,13:30-18:00"
holidays = "DE/BY"

[[skills]]
name = "billing"
channel = "support-billing"

[[skills]]
name = "technical"
channel = "support-technical"

[[skills]]
name = "shipping"
channel = "support-shipping"

[[skills]]
name = "returns"
channel = "support-returns"

[[skills]]
name = "general"
channel = "support"
"""


def sample_mails() -> list[EmailMessage]:
    """A few customers writing in, in German and English; one tries to ping the channel."""
    samples = [
        (
            "Anna Schmidt <anna.schmidt@kunde.example>",
            "Rechnung doppelt abgebucht",
            "Hallo,\n\nmeine Rechnung RE-2211 wurde zweimal von meinem Konto abgebucht. "
            "Bitte erstatten Sie mir den doppelten Betrag.\n\nViele Grüße\nAnna Schmidt",
            "<demo-anna-1@kunde.example>",
        ),
        (
            "Tom Baker <tom@customer.example>",
            "App crashes when I log in",
            "Hi,\n\nsince this morning the app crashes right after I enter my password. "
            "Error code 500. This is blocking my whole team!\n\n-- \nTom Baker\nCTO, Example Ltd",
            "<demo-tom-1@customer.example>",
        ),
        (
            "Jens Müller <jens@kunde.example>",
            "Wo bleibt mein Paket?",
            "Guten Tag,\n\nich habe vor einer Woche bestellt (Bestellung 4711) und das Paket "
            "ist immer noch nicht angekommen. Die Sendungsverfolgung zeigt nichts an.\n\n"
            "Von meinem iPhone gesendet",
            "<demo-jens-1@kunde.example>",
        ),
        (
            "Mallory <mallory@evil.example>",
            "<!channel> please read",
            "<!channel> <@U0DEMOAGENT> urgent: log in at <https://evil.example|https://shop.example>",
            "<demo-mallory-1@evil.example>",
        ),
    ]
    mails = []
    for sender, subject, body, message_id in samples:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = "support@shop.example"
        message["Subject"] = subject
        message["Message-ID"] = message_id
        message.set_content(body)
        mails.append(message)
    follow_up = EmailMessage()
    follow_up["From"] = "Anna Schmidt <anna.schmidt@kunde.example>"
    follow_up["To"] = "support@shop.example"
    follow_up["Subject"] = "AW: Rechnung doppelt abgebucht"
    follow_up["Message-ID"] = "<demo-anna-2@kunde.example>"
    follow_up["In-Reply-To"] = "<demo-anna-1@kunde.example>"
    follow_up["References"] = "<demo-anna-1@kunde.example>"
    follow_up.set_content(
        "Anbei noch der Kontoauszug.\n\nAm 20.11. schrieb ich:\n> meine Rechnung RE-2211 wurde "
        "zweimal abgebucht"
    )
    follow_up.add_attachment(
        b"%PDF-1.4 Kontoauszug (demo)",
        maintype="application",
        subtype="pdf",
        filename="Kontoauszug.pdf",
    )
    mails.append(follow_up)
    return mails


def send(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.send_message(message)


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"=== {text} " + "=" * max(0, 70 - len(text)))


async def settle(timeout: float = 60.0) -> None:
    """Wait until every job is done."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await queue_depth() > 0:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("jobs still running after the demo waited a minute")
        await asyncio.sleep(0.1)


def demo_settings(
    folder: Path,
    api_url: str,
    relay_port: int,
    telegram: TelegramSandbox,
    whatsapp: WhatsAppSandbox,
) -> Settings:
    text = DEMO_TOML.format(
        api_url=api_url,
        relay_port=relay_port,
        telegram_url=telegram.url,
        whatsapp=whatsapp.settings_toml(),
        agent=AGENT,
    )
    env = {
        **whatsapp.env(),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "DATABASE_URL": f"sqlite://{folder / 'demo.sqlite3'}",
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
    }
    return settings_from_toml(text, env)


async def run_demo(*, keep_running: bool = False) -> int:
    """Play the demo; returns the exit status."""
    configure_logging("WARNING", "text")
    logging.getLogger("bot.jobs").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="switchboard-demo-") as folder:
        async with (
            SlackSandbox(bot_token=BOT_TOKEN) as slack,
            SmtpSink() as relay,
            TelegramSandbox() as telegram,
            WhatsAppSandbox() as whatsapp,
        ):
            for channel in DEMO_CHANNELS:
                slack.add_channel(channel)
            slack.add_user(AGENT, "lena", real_name="Lena Berger", display_name="Lena")
            settings = demo_settings(Path(folder), slack.api_url, relay.port, telegram, whatsapp)
            heading("Starting Switchboard")
            say("SQLite in a temporary folder, the bundled triage model, a local Slack sandbox.")
            say("Loading the triage model (the first run builds an optimised copy: ~15 s)...")
            async with Service(settings) as service:
                say(
                    f"SMTP endpoint on 127.0.0.1:{service.smtp_port}, "
                    f"HTTP (Slack events, /healthz, /metrics) on 127.0.0.1:{service.http_port}"
                )
                await play(service, slack, relay)
                await play_suggestion(service, slack, relay)
                await play_telegram(service, slack, telegram)
                await play_whatsapp(service, slack, whatsapp)
                say()
                say(
                    "Done. `make test` runs the test suite; README.md explains the set-up for a "
                    "real Slack, Telegram and WhatsApp."
                )
                if keep_running:
                    say()
                    say(
                        f"Still running: send mail to 127.0.0.1:{service.smtp_port} "
                        f"(to support@shop.example). Ctrl-C stops."
                    )
                    await asyncio.Event().wait()
    return 0


async def play(service: Service, slack: SlackSandbox, relay: SmtpSink) -> None:
    heading("Customers write in (real SMTP client -> Switchboard's SMTP port)")
    for message in sample_mails():
        await asyncio.to_thread(send, service.smtp_port, message)
        say(f'  250 accepted: {message["From"]}  "{message["Subject"]}"')
    await settle()

    heading("What the support team sees in Slack")
    say(slack.render_text())

    conversation = await Conversation.filter(subject="Rechnung doppelt abgebucht").first()
    if conversation is None or conversation.chat_channel is None:
        say(
            "The billing conversation did not reach Slack; see the log above.",
        )
        raise SystemExit(1)
    assert conversation.chat_thread_ts is not None
    channel = next(
        name
        for name in ("support-billing", "support", "support-triage")
        if slack.channel_id(name) == conversation.chat_channel
    )
    heading(f"Lena answers in the thread in #{channel}")
    events = SlackEvents(
        slack,
        events_url=f"http://127.0.0.1:{service.http_port}/slack/events",
        signing_secret=SIGNING_SECRET,
    )
    await events.post_agent_reply(
        channel,
        conversation.chat_thread_ts,
        AGENT,
        "note: Buchhaltung hat die Doppelbuchung bestätigt",
    )
    say("  Lena: note: Buchhaltung hat die Doppelbuchung bestätigt   (a note: never sent)")
    reply_text = (
        "Hallo Frau Schmidt,\n\nSie haben recht, der Betrag wurde doppelt abgebucht. "
        "Wir haben die Erstattung veranlasst; sie ist in 3-5 Werktagen auf Ihrem Konto.\n\n"
        "Viele Grüße\nLena"
    )
    await events.post_agent_reply(channel, conversation.chat_thread_ts, AGENT, reply_text)
    say("  Lena: Hallo Frau Schmidt, ... (a reply: goes out after the 2 s undo window)")
    (received,) = await relay.wait_for(1, timeout=30)
    await settle()

    heading("The e-mail the customer receives (captured by the local relay)")
    message = received.message
    for header in ("From", "To", "Reply-To", "Subject", "Message-ID", "In-Reply-To", "References"):
        say(f"{header}: {message[header]}")
    body = message.get_body(("plain",))
    say()
    say(body.get_content() if body is not None else "(no text part)")

    heading("The thread afterwards")
    for reply in slack.thread(channel, conversation.chat_thread_ts)[-2:]:
        names = ", ".join(f":{r['name']}:" for r in reply.get("reactions", []))
        say(f"  {reply.get('text', '')[:70]!r}  {names}")


async def play_telegram(service: Service, slack: SlackSandbox, telegram: TelegramSandbox) -> None:
    """A Telegram customer writes through the webhook; an agent answers from Slack."""
    heading("A customer writes on Telegram (Bot API webhook, with the secret token)")
    update = telegram.text_update(
        "Hallo! Mein Paket 4711 kam beschädigt an. <!channel> Was kann ich tun?",
        user_id=5550002222,
        first_name="Jonas",
        last_name="Weber",
        username="jonas_w",
    )
    url = f"http://127.0.0.1:{service.http_port}{WEBHOOK_PATH}"
    forged = await telegram.deliver(url, update, secret="wrong")
    say(f"  {forged} for an update without the right secret (nothing stored)")
    status = await telegram.deliver(url, update, secret=TELEGRAM_SECRET)
    say(f"  {status} for the real update from Jonas Weber (@jonas_w)")
    await settle()

    conversation = await Conversation.filter(channel=ChannelKind.TELEGRAM).first()
    if conversation is None or conversation.chat_thread_ts is None:
        say("The Telegram conversation did not reach Slack; see the log above.")
        raise SystemExit(1)
    thread_ts = conversation.chat_thread_ts
    channel = next(
        name for name in DEMO_CHANNELS if slack.channel_id(name) == conversation.chat_channel
    )
    heading(f"The Telegram thread in #{channel} (<!channel> shown, pinging nobody)")
    for message in slack.thread(channel, thread_ts):
        say(f"  {message.get('text', '')[:100]}")

    events = SlackEvents(
        slack,
        events_url=f"http://127.0.0.1:{service.http_port}/slack/events",
        signing_secret=SIGNING_SECRET,
    )
    await events.post_agent_reply(
        channel,
        thread_ts,
        AGENT,
        "Hallo Jonas, das tut uns leid! Schicken Sie uns bitte ein Foto, dann kommt Ersatz.",
    )
    say("  Lena answers in the thread (after the 2 s undo window it goes out)")
    (sent,) = await telegram.wait_for_sent(1, timeout=30)
    await settle()
    heading("What the Telegram Bot API sandbox received (sendMessage)")
    say(f"  chat {sent.chat_id}, plain text (no parse_mode): {sent.text}")


async def play_whatsapp(service: Service, slack: SlackSandbox, whatsapp: WhatsAppSandbox) -> None:
    """Anna, who wrote by e-mail, writes on WhatsApp; Lena links her; the reply goes by WhatsApp."""
    heading("Anna writes again, now on WhatsApp (Cloud API webhook, signed with the app secret)")
    url = f"http://127.0.0.1:{service.http_port}/whatsapp/webhook"
    body = whatsapp.text(
        "4915112345678", "Anna Schmidt", "Hallo, ist die Erstattung für RE-2211 schon unterwegs?"
    )
    forged, _ = await whatsapp.deliver(url, body, signature="sha256=" + "0" * 64)
    say(f"  {forged} for a webhook with a wrong X-Hub-Signature-256 (nothing stored)")
    status, _ = await whatsapp.deliver(url, body)
    say(f"  {status} for Meta's signed webhook")
    await settle()

    events = SlackEvents(
        slack,
        events_url=f"http://127.0.0.1:{service.http_port}/slack/events",
        signing_secret=SIGNING_SECRET,
    )
    heading("Lena links the two: /switchboard customer link <e-mail> whatsapp:+49...")
    for command in (
        "customer link anna.schmidt@kunde.example whatsapp:+4915112345678",
        "customer anna.schmidt@kunde.example",
    ):
        await _ask(slack, events, command)
        say(f"  /switchboard {command}")
        for line in str(slack.ephemeral_messages(AGENT)[-1]["text"]).splitlines():
            say(f"    {line}")
    await settle()

    conversation = await Conversation.filter(channel=ChannelKind.WHATSAPP).first()
    if conversation is None or conversation.chat_thread_ts is None:
        say("The WhatsApp conversation did not reach Slack; see the log above.")
        raise SystemExit(1)
    channel = next(
        name for name in DEMO_CHANNELS if slack.channel_id(name) == conversation.chat_channel
    )
    heading(f"The WhatsApp thread in #{channel}, linked to Anna's e-mail thread")
    for message in slack.thread(channel, conversation.chat_thread_ts):
        say(f"  {message.get('text', '')[:110]}")
    await events.post_agent_reply(
        channel,
        conversation.chat_thread_ts,
        AGENT,
        "Hallo Frau Schmidt, ja: die Erstattung ist seit heute unterwegs.",
    )
    say("  Lena answers in the WhatsApp thread (after the 2 s undo window it goes out)")
    # Sent, then shown as sent on Lena's message in Slack.
    await slack.wait_until(lambda: bool(whatsapp.sent), timeout=30)
    await settle()
    heading("What the WhatsApp Cloud API sandbox received (POST /{phone-number-id}/messages)")
    for sent in whatsapp.sent:
        say(f"  to {sent.to}, {sent.kind}: {sent.text}")


async def _ask(slack: SlackSandbox, events: SlackEvents, command: str) -> None:
    shown = len(slack.ephemeral_messages(AGENT))
    await events.send_slash_command("/switchboard", command, user=AGENT, channel="support")
    await slack.wait_until(lambda: len(slack.ephemeral_messages(AGENT)) > shown, timeout=30)


if __name__ == "__main__":
    sys.exit(asyncio.run(run_demo()))


async def play_suggestion(service: Service, slack: SlackSandbox, relay: SmtpSink) -> None:
    """A second customer writes about the same thing; Lena answers with a suggested reply."""
    heading("Another customer was charged twice: Lena asks for a suggested reply")
    message = EmailMessage()
    message["From"] = "Jan Becker <jan.becker@example.de>"
    message["To"] = "support@shop.example"
    message["Subject"] = "Doppelte Abbuchung"
    message["Message-ID"] = "<demo-double-charge-2@example.de>"
    message.set_content(
        "Guten Tag,\n\nder Betrag meiner Bestellung 20931 wurde zweimal von meinem Konto "
        "abgebucht. Bitte erstatten Sie die doppelte Abbuchung.\n\nJan Becker"
    )
    await asyncio.to_thread(send, service.smtp_port, message)
    await settle()
    conversation = await Conversation.get(messages__external_id=message["Message-ID"])
    assert conversation.chat_channel is not None
    assert conversation.chat_thread_ts is not None
    channel = next(n for n in DEMO_CHANNELS if slack.channel_id(n) == conversation.chat_channel)
    events = SlackEvents(
        slack,
        events_url=f"http://127.0.0.1:{service.http_port}/slack/events",
        signing_secret=SIGNING_SECRET,
    )
    shown = len(slack.ephemeral_messages(AGENT))
    await events.click_button(channel, conversation.chat_thread_ts, AGENT, "switchboard_suggest")
    await slack.wait_until(lambda: len(slack.ephemeral_messages(AGENT)) > shown, timeout=30)
    note = slack.ephemeral_messages(AGENT)[-1]
    say("  Lena clicks *Suggest reply* on the card; only she sees:")
    for block in note.get("blocks", [])[1:]:
        for line in str(block["text"]["text"]).splitlines():
            say(f"    {line}")
    if len(note.get("blocks", [])) < 2:
        say(f"    {note.get('text', '')}")
        return
    await events.click_button(channel, note["ts"], AGENT, "switchboard_use_suggestion_1")
    await slack.wait_until(lambda: bool(slack.views), timeout=30)
    _, view = slack.views[-1]
    drafted = str(view["blocks"][0]["element"]["initial_value"])
    say("  She clicks *Use*: a form opens with the draft filled in for Jan Becker, to edit.")
    edited = drafted.replace("3-5 Werktagen", "2-3 Werktagen")
    await events.submit_view(view["id"], AGENT, {"reply": edited})
    say("  She changes the days and presses *Send* (the same 2 s undo window as a typed reply).")
    received = (await relay.wait_for(2, timeout=30))[-1]
    await settle()
    heading("The e-mail Jan Becker receives")
    body = received.message.get_body(("plain",))
    say(f"To: {received.message['To']}")
    say()
    say(body.get_content() if body is not None else "(no text part)")
