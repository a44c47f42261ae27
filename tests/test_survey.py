"""Customer satisfaction: the question after a close, the page in a real browser, the answer.

The page is opened in headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium) from a link in a real survey mail the relay received.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from adapters.webhook.signing import signed_headers
from bot.conversations import short_id
from bot.roles import Actor
from bot.survey import SurveyRefused, Tokens
from models import AuditEntry, Conversation, Customer, Job, SurveyAnswer
from standins.callbacks import CallbackReceiver
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from standins.telegram import TelegramSandbox
from tests.conftest import Harness, SettingsFactory, running
from tests.test_flow_commands import LEAD, FakeClock, ask, new_conversation, settle, team
from tests.test_flow_email_to_slack import mail
from tests.test_flow_webhook import event

SURVEY = """
[survey]
enabled = true
delay_minutes = {delay}
skip_skills = ["legal"]
ask_again_after_days = 30
"""
_LINK = re.compile(r"(http://127\.0\.0\.1:\d+/survey/[0-9a-f-]+)\?rating=(\d)")
TELEGRAM_SECRET = "tg-secret-0123456789abcdef"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@asynccontextmanager
async def surveyed(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    clock: FakeClock,
    delay_minutes: int = 0,
) -> AsyncIterator[Harness]:
    """The team of test_flow_commands (a lead, an agent) with surveys on."""
    original = make_settings

    def with_survey(**settings: Any) -> Any:
        settings["extra"] = str(settings.get("extra", "")) + SURVEY.format(delay=delay_minutes)
        return original(**settings)

    async with team(with_survey, slack, relay, clock) as h:
        yield h


async def survey_links(relay: SmtpSink, count: int) -> dict[int, str]:
    """The rating links of the ``count``-th mail the relay received."""
    received = await relay.wait_for(count)
    body = received[count - 1].message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    return {int(rating): f"{url}?rating={rating}" for url, rating in _LINK.findall(text)}


def rate_in_chromium(link: str, comment: str) -> dict[str, Any]:
    """Open ``link`` as a customer would on a phone, add ``comment`` and send the form."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    options = Options()
    assert CHROMIUM is not None
    assert CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=390,844")  # a phone's viewport
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    try:
        driver.get(link)
        seen: dict[str, Any] = {
            "notice": driver.find_element(By.ID, "notice").text,
            "rated": driver.find_element(By.ID, "rated").text,
            "scripts": len(driver.find_elements(By.TAG_NAME, "script")),
            "wider_than_phone": driver.execute_script(
                "return document.documentElement.scrollWidth > window.innerWidth"
            ),
        }
        driver.find_element(By.ID, "comment").send_keys(comment)
        button = driver.find_element(By.CSS_SELECTOR, "button[type=submit]")
        button.click()
        # The answer is a new page: wait until the old one is gone before reading it.
        WebDriverWait(driver, 20).until(expected_conditions.staleness_of(button))
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element(By.ID, "notice").text.startswith("Thank you, we have")
        )
        seen["after_send"] = driver.find_element(By.ID, "notice").text
        seen["comment_kept"] = driver.find_element(By.ID, "comment").get_attribute("value")
        return seen
    finally:
        driver.quit()


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (make test and .ci/run install them)",
)
async def test_a_customer_rates_from_the_mail_in_a_browser_and_the_thread_shows_it(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    began = clock.now
    async with surveyed(make_settings, slack, relay, clock) as h:
        conversation = await new_conversation(h)
        await ask(h, LEAD, f"close {short_id(conversation)}")
        await settle(h)
        links = await survey_links(relay, 1)
        assert sorted(links) == [1, 2, 3, 4, 5]
        survey_mail = (await relay.wait_for(1))[0].message
        assert survey_mail["In-Reply-To"] == "<first@kunde.example>"  # threads with the mail
        comment = "Schnell und freundlich, danke! <!channel> @here"

        seen = await asyncio.to_thread(rate_in_chromium, links[4], comment)
        await settle(h)

        assert seen["notice"] == "Thank you for your rating!"
        assert seen["rated"] == "You rated our answer ★★★★☆ (4 of 5)."
        assert seen["scripts"] == 0
        assert seen["wider_than_phone"] is False
        assert seen["after_send"] == "Thank you, we have your comment."
        assert seen["comment_kept"] == comment
        (answer,) = await SurveyAnswer.all()
        assert (answer.rating, answer.comment) == (4, comment)
        assert conversation.chat_channel is not None
        assert conversation.chat_thread_ts is not None
        thread = slack.thread(conversation.chat_channel, conversation.chat_thread_ts)
        ratings = [m for m in thread if "rated this conversation" in str(m.get("text", ""))]
        assert ratings
        shown = str(ratings[-1]["text"])
        assert "★★★★☆ (4 of 5)" in shown
        assert "Schnell und freundlich" in shown
        assert "<!channel>" not in shown  # customer text pings nobody
        assert "&lt;!channel&gt;" in shown

        # The same link again, or another rating: still one answer, changed, never two.
        async with aiohttp.ClientSession() as session:
            async with session.get(links[5]) as response:
                assert response.status == 200
            async with session.get(links[5]) as response:
                assert "You rated our answer ★★★★★ (5 of 5)." in await response.text()
        assert await SurveyAnswer.all().count() == 1
        assert (await SurveyAnswer.get()).rating == 5

        clock.advance(timedelta(minutes=1))
        # From the day the test began to the day it ends: "today" would miss the answer when
        # the test runs across midnight.
        zone = ZoneInfo(h.service.settings.sla.hours.timezone)
        days = f"{began.astimezone(zone):%Y-%m-%d}..{clock.now.astimezone(zone):%Y-%m-%d}"
        report = await h.service.reports.report(h.service.reports.period(days))
        assert report.satisfaction.answers == 1
        assert report.satisfaction.average == 5.0
        assert report.satisfaction.comments == ((5, comment),)


async def test_a_customer_is_asked_once_per_period_and_never_after_opting_out(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    async with surveyed(make_settings, slack, relay, clock) as h:
        first = await new_conversation(h)
        await ask(h, LEAD, f"close {short_id(first)}")
        await settle(h)
        links = await survey_links(relay, 1)

        # The customer writes again: a new conversation (the first is closed), closed too.
        await h.send_mail(mail("Noch etwas", subject="Neu", message_id="<second@kunde.example>"))
        await settle(h)
        second = await Conversation.exclude(id=first.id).get()
        await ask(h, LEAD, f"close {short_id(second)}")
        await settle(h)
        assert len(relay.received) == 1  # asked within 30 days: not again

        # The customer says "do not ask me again" on the page (a form post, no script).
        async with aiohttp.ClientSession() as session:
            url = links[3].split("?")[0]
            async with session.post(url, data={"rating": "3", "opt_out": "yes"}) as response:
                assert response.status == 200
                assert "We will not ask you again." in await response.text()
        customer = await Customer.get()
        assert customer.survey_opt_out

        clock.advance(timedelta(days=40))
        await ask(h, LEAD, f"reopen {short_id(second)}")
        await ask(h, LEAD, f"close {short_id(second)}")
        await settle(h)
        assert len(relay.received) == 1  # opted out: never asked again


async def test_skipped_skills_and_reopened_conversations_are_not_asked(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    # The question waits ten minutes, so the test can change the conversation before it is due.
    async with surveyed(make_settings, slack, relay, clock, delay_minutes=10) as h:
        conversation = await new_conversation(h)
        await Conversation.filter(id=conversation.id).update(skill="legal")
        await ask(h, LEAD, f"close {short_id(conversation)}")
        assert await Job.filter(kind="ask_survey").count() == 1
        clock.advance(timedelta(minutes=11))
        await settle(h)
        assert relay.received == []
        await Conversation.filter(id=conversation.id).update(skill="general")
        await ask(h, LEAD, f"reopen {short_id(conversation)}")
        await ask(h, LEAD, f"close {short_id(conversation)}")
        await Conversation.filter(id=conversation.id).update(status="open")  # a reopen races
        clock.advance(timedelta(minutes=11))
        await settle(h)
        assert await Job.filter(kind="ask_survey", state="done").count() == 2
        assert relay.received == []


async def test_bad_and_expired_links_change_nothing_and_say_so_in_the_page(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    clock = FakeClock()
    async with surveyed(make_settings, slack, relay, clock) as h:
        conversation = await new_conversation(h)
        await Conversation.filter(id=conversation.id).update(language="de")
        await ask(h, LEAD, f"close {short_id(conversation)}")
        await settle(h)
        links = await survey_links(relay, 1)
        text = (await relay.wait_for(1))[0].message.get_body(("plain",))
        assert text is not None
        assert "Wie zufrieden sind Sie mit unserer Antwort?" in text.get_content()
        url = links[2].split("?")[0]
        tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{tampered}?rating=1") as response:
                assert response.status == 410
            async with session.head(links[1]) as response:
                assert response.status == 200  # a link checker: nothing recorded
            async with session.get(links[2]) as response:
                assert "Vielen Dank für Ihre Bewertung!" in await response.text()
            clock.advance(timedelta(days=15))
            async with session.get(links[1]) as response:
                assert response.status == 410
                assert "expired" in await response.text()
        assert [a.rating for a in await SurveyAnswer.all()] == [2]
        assert await AuditEntry.filter(action="rating").count() == 1


def test_tokens_are_signed_and_expire() -> None:
    tokens = Tokens("secret")
    now = FakeClock().now
    token = tokens.make(42, now + timedelta(days=1))
    assert tokens.read(token, now) == 42
    with pytest.raises(SurveyRefused, match="expired"):
        tokens.read(token, now + timedelta(days=2))
    with pytest.raises(SurveyRefused, match="wrong signature"):
        Tokens("other").read(token, now)
    with pytest.raises(SurveyRefused, match="wrong signature"):
        tokens.read(token.replace("42-", "43-", 1), now)
    with pytest.raises(SurveyRefused, match="malformed"):
        tokens.read("nonsense", now)


async def test_telegram_customers_get_buttons_and_webhook_sources_an_event(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    secret = "widget-secret-0123456789"
    async with TelegramSandbox() as telegram, CallbackReceiver(secret) as receiver:
        extra = f"""
[telegram]
enabled = true
mode = "webhook"
api_url = "{telegram.url}"

[[webhooks]]
name = "widget"
callback_url = "{receiver.url}"
secret_env = "WEBHOOK_WIDGET_SECRET"
{SURVEY.format(delay=0)}"""
        env = {
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
            "WEBHOOK_WIDGET_SECRET": secret,
        }
        async with running(make_settings, slack, relay, extra=extra, env=env) as h:
            port = h.service.http_port
            update = telegram.text_update("Mein Paket fehlt", user_id=4711, first_name="Maria")
            webhook = f"http://127.0.0.1:{port}/telegram/webhook"
            assert await telegram.deliver(webhook, update, secret=TELEGRAM_SECRET) == 200
            await h.settled()
            raw = json.dumps(event()).encode()  # the widget's signed message
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{port}/webhooks/widget",
                    data=raw,
                    headers=signed_headers(secret, raw),
                ) as response,
            ):
                assert response.status == 200
            await h.settled()
            for conversation in await Conversation.all():
                await h.service.workflow.close(Actor(LEAD, "Lena"), conversation)
            await h.settled()

            (sent,) = [m for m in telegram.sent_to(4711) if m.buttons]
            assert sent.text.startswith("Your conversation with us is closed.")
            urls = [button["url"] for row in sent.buttons for button in row]
            assert [int(u.rsplit("=", 1)[1]) for u in urls] == [1, 2, 3, 4, 5]
            (survey,) = [e for e in await receiver.wait_for(1) if e["type"] == "survey"]
            assert [r["rating"] for r in survey["ratings"]] == [1, 2, 3, 4, 5]
            assert survey["conversation_id"] == "chat-42"
            async with aiohttp.ClientSession() as session, session.get(urls[4]) as response:
                assert response.status == 200
            await h.settled()
            assert [a.rating for a in await SurveyAnswer.all()] == [5]
