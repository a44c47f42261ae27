"""Event rules: a VIP's message, a conversation nobody took, a breach; each acts once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from bot.rules import Facts, Rules, evaluate
from bot.settings import RuleSettings
from bot.shapes import Priority
from models import AuditEntry, Job
from standins.callbacks import CallbackReceiver
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import AGENT, SettingsFactory, running
from tests.test_flow_commands import card_text, root_of, settle, thread_texts
from tests.test_flow_deadlines import LEADS, SLA, Crash, at, run_until_crash, wait, write

CRM_SECRET = "crm-secret-0123456789abcdef"


def rules_toml(crm_url: str) -> str:
    return f"""
[triage.priority]
vip_domains = ["kunde.example"]

[[outgoing_webhooks]]
name = "crm"
url = "{crm_url}"
secret_env = "CRM_SECRET"

[[rules]]
name = "VIP to the leads"
when = {{ event = "vip", channels = ["email"] }}
then = {{ set_priority = "urgent", post_to = "{LEADS}", add_tag = "vip", webhook = "crm" }}

[[rules]]
name = "Nobody took it"
when = {{ event = "unassigned", minutes = 30 }}
then = {{ assign = "{AGENT}" }}

[[rules]]
name = "Breach to billing"
when = {{ event = "sla_breach", business_hours = true }}
then = {{ move_to = "billing" }}

[[rules]]
name = "Telegram only"
when = {{ event = "message_in", channels = ["telegram"] }}
then = {{ add_tag = "telegram" }}
"""


@pytest.fixture
async def crm() -> AsyncIterator[CallbackReceiver]:
    receiver = CallbackReceiver(CRM_SECRET)
    await receiver.start()
    yield receiver
    await receiver.stop()


def settings_of(crm: CallbackReceiver) -> dict[str, Any]:
    return {"extra": SLA + rules_toml(crm.url), "env": {"CRM_SECRET": CRM_SECRET}}


async def test_a_vips_message_fires_its_rule_once_with_every_action(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, crm: CallbackReceiver
) -> None:
    slack.add_channel(LEADS)
    clock = at(2026, 12, 7, 9, 0)
    async with running(make_settings, slack, relay, clock=clock, **settings_of(crm)) as h:
        conversation = await write(h, "Die Rechnung ist falsch.", first=True)
        card = card_text(root_of(h, conversation))
        texts = thread_texts(h, conversation)
        calls = await crm.wait_for(1)
        fired = await AuditEntry.filter(action="rule")
        changes = [e.summary for e in await AuditEntry.filter(action="priority")]

    assert conversation.priority is Priority.URGENT
    assert conversation.tags == "vip"
    assert "`vip`" in card
    assert [(e.detail["rule"], e.actor_name) for e in fired] == [
        ("VIP to the leads", "Rule “VIP to the leads”")
    ]
    assert changes == ["Rule “VIP to the leads” changed the priority from normal to urgent."]
    assert (
        ":robot_face: Rule “VIP to the leads” (message_in): priority urgent; tagged vip; "
        f"posted to #{LEADS}; called crm."
    ) in texts
    leads = slack.channel_messages(LEADS)
    assert len(leads) == 1
    assert "VIP to the leads" in leads[0]["text"]
    assert [c["rule"] for c in calls] == ["VIP to the leads"]
    assert calls[0]["conversation"]["customer"] == "anna@kunde.example"
    # Nothing of it reached the customer.
    assert relay.received == []


async def test_a_conversation_nobody_took_is_assigned_after_its_minutes(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, crm: CallbackReceiver
) -> None:
    slack.add_channel(LEADS)
    clock = at(2026, 12, 7, 9, 0)
    async with running(make_settings, slack, relay, clock=clock, **settings_of(crm)) as h:
        await write(h, "Die Rechnung ist falsch.", first=True)
        await wait(h, clock, minutes=5)
        # The rule's timer, due in 25 minutes, holds up none of the conversation's events.
        await write(h, "Und die Mahnung auch.")
        vip_fired = await AuditEntry.filter(action="rule").count()
        early = await wait(h, clock, minutes=24)
        assigned = await wait(h, clock, minutes=1)
        card = card_text(root_of(h, assigned))

    assert vip_fired == 2  # once per message: the VIP rule fires on each
    assert early.owner == ""
    assert assigned.owner == AGENT
    assert f"owner <@{AGENT}>" in card


async def test_a_breach_in_business_hours_moves_the_conversation(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, crm: CallbackReceiver
) -> None:
    slack.add_channel(LEADS)
    clock = at(2026, 12, 7, 9, 0)
    async with running(make_settings, slack, relay, clock=clock, **settings_of(crm)) as h:
        await write(h, "Die Rechnung ist falsch.", first=True)
        # The first reply's 4 h run out at 13:00, in business hours: the breach moves it.
        await wait(h, clock, hours=3, minutes=59)
        moved = await wait(h, clock, minutes=1)
        moves = [e.actor_name for e in await AuditEntry.filter(action="reassign")]

    assert moved.skill == "billing"
    assert moves == ["Rule “Breach to billing”"]


async def test_a_rule_acts_once_when_the_process_dies_mid_way(
    make_settings: SettingsFactory,
    slack: SlackSandbox,
    relay: SmtpSink,
    crm: CallbackReceiver,
    monkeypatch: Any,
) -> None:
    slack.add_channel(LEADS)
    clock = at(2026, 12, 7, 9, 0)
    original_act = Rules._act

    async def act_then_die(self: Rules, *args: Any) -> None:
        await original_act(self, *args)
        raise Crash

    monkeypatch.setattr(Rules, "_act", act_then_die)
    async with running(
        make_settings, slack, relay, clock=clock, run_jobs=False, **settings_of(crm)
    ) as h:
        await h.send_mail(mail_from_vip())
        await run_until_crash(h)
        assert not await AuditEntry.filter(action__in=("rule", "priority")).exists()
    monkeypatch.setattr(Rules, "_act", original_act)

    clock.advance(timedelta(minutes=2))  # the dead worker's lease runs out
    async with running(make_settings, slack, relay, clock=clock, **settings_of(crm)) as h:
        conversation = await wait(h, clock, seconds=1)
        await crm.wait_for(1)
        actions = [e.action for e in await AuditEntry.filter(action__in=("rule", "priority"))]
        webhook_calls = await Job.filter(kind="call_webhook").count()
        texts = thread_texts(h, conversation)

    assert sorted(actions) == ["priority", "rule"]
    assert webhook_calls == 1
    assert len(slack.channel_messages(LEADS)) == 1
    assert len([t for t in texts if "Rule “VIP to the leads” (message_in)" in t]) == 1


def mail_from_vip() -> Any:
    from tests.test_flow_email_to_slack import mail

    return mail("Die Rechnung ist falsch.", message_id="<first@kunde.example>")


async def test_slash_rules_lists_them(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink, crm: CallbackReceiver
) -> None:
    from tests.test_flow_commands import ask

    async with running(make_settings, slack, relay, **settings_of(crm)) as h:
        answer = await ask(h, AGENT, "rules")
        await settle(h)

    assert "• *VIP to the leads*: when a message from a VIP" in answer
    assert f"then set priority urgent, post to #{LEADS}, tag vip, call webhook crm" in answer
    assert "• *Nobody took it*: when a new conversation still without an owner" in answer


def test_a_rule_says_why_it_fires_or_not() -> None:
    rule = RuleSettings(
        "German VIPs", "vip", languages=("de",), business_hours=False, post_to="leads"
    )
    facts = Facts("message_in", "billing", "email", "normal", language="de", vip=True)
    verdict = evaluate(rule, facts)
    assert not verdict.fires
    assert verdict.reasons == (
        "✓ event message_in is a message",
        "✓ VIP sender",
        "✓ language de in ['de']",
        "✗ in business hours",
    )
    night = Facts(
        "message_in", "billing", "email", "normal", language="de", vip=True, in_business_hours=False
    )
    assert evaluate(rule, night).fires
    assert not evaluate(rule, Facts("sla_breach", "billing", "email", "normal")).fires


def on(event: str, **conditions: Any) -> RuleSettings:
    return RuleSettings("r", event, add_tag="x", **conditions)


def at_event(event: str, priority: str = "normal", **facts: Any) -> Facts:
    return Facts(event, facts.pop("skill", "general"), "email", priority, **facts)


@pytest.mark.parametrize(
    ("rule", "facts", "fires"),
    [
        (on("negative"), at_event("message_in", sentiment="angry"), True),
        (on("negative"), at_event("message_in", sentiment="neutral"), False),
        (on("keyword", keywords=("refund",)), at_event("message_in", text="my refund?"), True),
        (on("reopened", times=2), at_event("reopened", reopened=1), False),
        (on("reopened", times=2), at_event("reopened", reopened=2), True),
        (on("moved", skills=("billing",)), at_event("moved", skill="billing"), True),
        (on("sla_warning", priorities=("urgent",)), at_event("sla_warning", "high"), False),
        (
            on("message_in", customer_domains=("kunde.example",)),
            at_event("message_in", sender="a@kunde.example"),
            True,
        ),
        (on("unassigned", minutes=5), at_event("unassigned", rule="another"), False),
    ],
)
def test_each_event_and_condition(rule: RuleSettings, facts: Facts, fires: bool) -> None:
    assert evaluate(rule, facts).fires is fires
