"""Event rules: when something happens to a conversation and the conditions hold, act.

``[[rules]]`` in the settings: ``when.event`` (``RULE_EVENTS``: a message in, a negative or VIP
one, a keyword, a deadline's warning or breach, a reopening, no owner after some minutes, a
move) with conditions (skills, channels, priorities, languages, customer domains, in business
hours or not); ``then`` one or more actions (set the priority, assign, move to a skill, page the
skill's on-call group, post to a channel, add a tag, call a signed outgoing webhook).

An event is a ``run_rules`` job, queued in the transaction that records what happened (the
message's post, the alert, the change). The job evaluates the rules and acts in one
transaction that holds its claim, and records each firing in the audit log with the rule's name
and the event's key; a rule fires once per event, across replicas and restarts. The actions'
posts and webhook calls are jobs of their own. Rules act inside the team only: nothing here
writes to the customer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot.conversations import short_id
from bot.errors import ActionRefused
from bot.jobkinds import (
    CALL_WEBHOOK,
    POST_ALERT,
    RUN_RULES,
    SHOW_CHANGE,
    AlertPayload,
    ChangePayload,
    RulesPayload,
    WebhookCallPayload,
)
from bot.jobs import Clock, hold_claim, utcnow
from bot.ports import EventSender
from bot.roles import Actor
from bot.settings import RULE_EVENTS, RuleSettings, Settings
from bot.shapes import InboundMessage, Priority, Triage
from bot.workflow import Workflow
from models import AuditEntry, Conversation, ConversationStatus, Job, Message

log = logging.getLogger(__name__)

#: Events a customer's message raises; a rule on one of the narrower ones checks its property.
MESSAGE_EVENTS = ("message_in", "negative", "vip", "keyword")
NEGATIVE = ("negative", "angry")


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules read about an event and its conversation."""

    event: str
    skill: str
    channel: str
    priority: str
    language: str = ""
    sentiment: str = ""
    sender: str = ""
    text: str = ""
    vip: bool = False
    in_business_hours: bool = True
    reopened: int = 0
    rule: str = ""  # set for a rule's own timer: only that rule


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a rule fires for some facts, and each reason, passed (✓) or failed (✗)."""

    rule: RuleSettings
    fires: bool
    reasons: tuple[str, ...] = field(default=())

    @property
    def why(self) -> str:
        return ", ".join(self.reasons)


def _check(reasons: list[str], ok: bool, text: str) -> bool:
    reasons.append(f"{'✓' if ok else '✗'} {text}")
    return ok


def evaluate(rule: RuleSettings, facts: Facts) -> Verdict:
    """Whether ``rule`` fires for ``facts``, with every condition it checked."""
    reasons: list[str] = []
    ok = True
    if facts.rule and facts.rule != rule.name:
        return Verdict(rule, False, ("✗ another rule's timer",))
    if rule.event in MESSAGE_EVENTS:
        ok &= _check(reasons, facts.event == "message_in", f"event {facts.event} is a message")
        if rule.event == "negative":
            ok &= _check(
                reasons, facts.sentiment in NEGATIVE, f"sentiment {facts.sentiment or 'unknown'}"
            )
        elif rule.event == "vip":
            ok &= _check(reasons, facts.vip, "VIP sender" if facts.vip else "not a VIP sender")
        elif rule.event == "keyword":
            text = facts.text.lower()
            found = [k for k in rule.keywords if k in text]
            ok &= _check(reasons, bool(found), f"keywords {found or list(rule.keywords)}")
    else:
        ok &= _check(reasons, facts.event == rule.event, f"event {facts.event} is {rule.event}")
        if rule.event == "reopened":
            ok &= _check(
                reasons, facts.reopened >= rule.times, f"reopened {facts.reopened} of {rule.times}"
            )
    for name, allowed, value in (
        ("skill", rule.skills, facts.skill),
        ("channel", rule.channels, facts.channel),
        ("priority", rule.priorities, facts.priority),
        ("language", rule.languages, facts.language),
    ):
        if allowed:
            ok &= _check(reasons, value in allowed, f"{name} {value or '?'} in {list(allowed)}")
    if rule.customer_domains:
        domain = facts.sender.rpartition("@")[2].lower()
        ok &= _check(
            reasons,
            domain in rule.customer_domains,
            f"customer domain {domain or '?'} in {list(rule.customer_domains)}",
        )
    if rule.business_hours is not None:
        inside = facts.in_business_hours
        ok &= _check(
            reasons,
            inside == rule.business_hours,
            "in business hours" if inside else "outside business hours",
        )
    return Verdict(rule, ok, tuple(reasons))


class Rules:
    """Queues the events of conversations for the rules, and runs them."""

    def __init__(
        self,
        workflow: Workflow,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.workflow = workflow
        self.settings = settings
        self.rules = settings.rules
        self.clock = clock
        self.on_queued = on_queued

    async def customer_wrote(
        self, conversation: Conversation, message: Message, opened: bool
    ) -> None:
        """A customer's message is in its thread (``opened``: it opened the thread): the
        message events, and for a new conversation the timers of "unassigned" rules."""
        if not self.rules or message.is_automated:
            return
        now = self.clock()
        async with in_transaction() as conn:
            await RUN_RULES.enqueue(
                RulesPayload(conversation.id, "message_in", f"message-{message.id}"),
                now=now,
                conn=conn,
            )
            for rule in self.rules:
                if rule.event == "unassigned" and opened:
                    await RUN_RULES.enqueue(
                        RulesPayload(
                            conversation.id, "unassigned", f"unassigned-{rule.name}", rule.name
                        ),
                        run_at=now + timedelta(minutes=rule.minutes),
                        conn=conn,
                    )
        if self.on_queued is not None:
            self.on_queued()

    async def changed(self, conversation: Conversation, conn: BaseDBAsyncClient) -> None:
        """A change was recorded (in ``conn``'s transaction): a reopening or a move is an event."""
        if not self.rules:
            return
        entry = (
            await AuditEntry.filter(conversation_id=conversation.id)
            .using_db(conn)
            .order_by("-id")
            .first()
        )
        events = {"reopen": "reopened", "reassign": "moved"}
        if entry is None or entry.action not in events or entry.actor_name.startswith("Rule "):
            return  # what rules do themselves raises no event: no rule loops
        await RUN_RULES.enqueue(
            RulesPayload(conversation.id, events[entry.action], f"audit-{entry.id}"),
            now=self.clock(),
            conn=conn,
        )

    async def facts(self, conversation: Conversation, payload: RulesPayload) -> Facts:
        """The facts of an event of ``conversation``."""
        await conversation.fetch_related("identity")
        text = ""
        if payload.key.startswith("message-"):
            found = await Message.get_or_none(id=int(payload.key.removeprefix("message-")))
            text = f"{found.subject}\n{found.text}" if found is not None else ""
        reopened = await AuditEntry.filter(conversation_id=conversation.id, action="reopen").count()
        return facts_of(
            conversation,
            self.settings,
            payload.event,
            self.clock(),
            text=text,
            reopened=reopened,
            rule=payload.rule,
        )

    async def run(self, job: Job) -> None:
        payload = RUN_RULES.payload_of(job)
        conversation = await Conversation.get_or_none(id=payload.conversation_id)
        if conversation is None:
            return  # forgotten or purged meanwhile
        if payload.event == "unassigned" and (
            conversation.owner or conversation.status is ConversationStatus.CLOSED
        ):
            return
        facts = await self.facts(conversation, payload)
        async with in_transaction() as conn:
            await hold_claim(job, conn)
            recorded = await AuditEntry.filter(
                conversation_id=conversation.id, action="rule"
            ).using_db(conn)
            fired = {
                str(e.detail.get("rule")) for e in recorded if e.detail.get("event") == payload.key
            }
            for rule in self.rules:
                verdict = evaluate(rule, facts)
                if verdict.fires and rule.name not in fired:
                    await self._act(verdict, conversation, payload, conn)
        if self.on_queued is not None:
            self.on_queued()

    async def _act(
        self,
        verdict: Verdict,
        conversation: Conversation,
        payload: RulesPayload,
        conn: BaseDBAsyncClient,
    ) -> None:
        """Do what the rule says, record it with the rule's name, in ``conn``'s transaction."""
        rule = verdict.rule
        actor = Actor("", f"Rule “{rule.name}”")
        done: list[str] = []
        workflow = self.workflow
        if rule.set_priority:
            done += await _try(
                workflow.set_priority(actor, conversation, Priority(rule.set_priority)),
                f"priority {rule.set_priority}",
            )
        if rule.assign:
            done += await _try(
                workflow.assign(actor, conversation, rule.assign), f"assigned to {rule.assign}"
            )
        if rule.move_to:
            done += await _try(
                workflow.reassign(actor, conversation, rule.move_to), f"moved to {rule.move_to}"
            )
        if rule.add_tag:
            tags = [t for t in conversation.tags.split(",") if t]
            if rule.add_tag not in tags:
                conversation.tags = ",".join([*tags, rule.add_tag])[:255]
                await conversation.save(using_db=conn, update_fields=["tags"])
            done.append(f"tagged {rule.add_tag}")
        summary = f":robot_face: Rule “{rule.name}” ({payload.event})"
        skill = self.settings.skill(conversation.skill)
        if rule.page_oncall and skill is not None and skill.oncall:
            done.append(f"paging {workflow.chat.mention(skill.oncall)}")
        if rule.post_to:
            done.append(f"posted to #{rule.post_to}")
        if rule.webhook:
            done.append(f"called {rule.webhook}")
        summary += ": " + ("; ".join(done) if done else "nothing to change") + "."
        now = self.clock()
        entry = await AuditEntry.create(
            conversation=conversation,
            actor_id="",
            actor_name=actor.label,
            action="rule",
            detail={"rule": rule.name, "event": payload.key, "actions": done},
            summary=summary,
            using_db=conn,
        )
        await SHOW_CHANGE.enqueue(ChangePayload(entry.id, conversation.id), now=now, conn=conn)
        if rule.post_to:
            text = (
                f":robot_face: Rule “{rule.name}” ({payload.event}) on conversation "
                f"`{short_id(conversation)}`."
            )
            await POST_ALERT.enqueue(
                AlertPayload(conversation.id, rule.post_to, text, f"rule-{entry.id}"),
                now=now,
                conn=conn,
            )
        if rule.webhook:
            await CALL_WEBHOOK.enqueue(
                WebhookCallPayload(
                    conversation.id, rule.webhook, event_body(entry.id, rule, payload, conversation)
                ),
                now=now,
                conn=conn,
            )

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not run the rules", extra={"job": job.id, "reason": reason})


async def _try(change: Awaitable[str], done: str) -> list[str]:
    """Run a workflow change; one that is moot already (same priority, same owner) is skipped."""
    try:
        await change
    except ActionRefused:
        return []
    return [done]


def facts_of(
    conversation: Conversation,
    settings: Settings,
    event: str,
    now: datetime,
    *,
    text: str = "",
    reopened: int = 0,
    rule: str = "",
) -> Facts:
    """The facts of ``conversation`` (its identity fetched) for ``event`` at ``now``."""
    sender = conversation.identity.address.lower()
    return Facts(
        event=event,
        skill=conversation.skill,
        channel=conversation.channel.value,
        priority=conversation.priority.value,
        language=conversation.language,
        sentiment=conversation.sentiment,
        sender=sender,
        text=text,
        vip=is_vip(sender, settings),
        in_business_hours=settings.sla.hours_for(conversation.skill).is_working(now),
        reopened=reopened,
        rule=rule,
    )


def is_vip(sender: str, settings: Settings) -> bool:
    """Whether the sender is a VIP by ``[triage.priority]`` vip_customers or vip_domains."""
    rules = settings.triage.priority
    return sender in rules.vip_customers or sender.rpartition("@")[2] in rules.vip_domains


def event_body(
    audit_id: int, rule: RuleSettings, payload: RulesPayload, conversation: Conversation
) -> dict[str, object]:
    """What an outgoing webhook receives; ``event_id`` is the same on every try."""
    return {
        "event_id": f"rule-{audit_id}",
        "type": "rule",
        "rule": rule.name,
        "event": payload.event,
        "conversation": {
            "id": short_id(conversation),
            "skill": conversation.skill,
            "priority": conversation.priority.value,
            "status": conversation.status.value,
            "channel": conversation.channel.value,
            "customer": conversation.identity.address,
        },
    }


def describe(rules: tuple[RuleSettings, ...]) -> str:
    """The rules in words, for ``/switchboard rules``."""
    if not rules:
        return "No rules are configured ([[rules]] in the settings)."
    lines = ["*Rules*"]
    for rule in rules:
        conditions = [
            f"{name} {', '.join(values)}"
            for name, values in (
                ("skill", rule.skills),
                ("channel", rule.channels),
                ("priority", rule.priorities),
                ("language", rule.languages),
                ("customer domain", rule.customer_domains),
                ("keywords", rule.keywords),
            )
            if values
        ]
        if rule.business_hours is not None:
            conditions.append("in business hours" if rule.business_hours else "outside hours")
        if rule.event == "unassigned":
            conditions.append(f"after {rule.minutes} min")
        if rule.event == "reopened":
            conditions.append(f"{rule.times} times")
        when = RULE_EVENTS[rule.event] + (f" ({'; '.join(conditions)})" if conditions else "")
        lines.append(f"• *{rule.name}*: when {when}, then {', '.join(rule.actions)}")
    return "\n".join(lines)


class RunRules:
    """Job: evaluate the rules for one event of a conversation, and act."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    async def run(self, job: Job) -> None:
        await self.rules.run(job)

    async def give_up(self, job: Job, reason: str) -> None:
        await self.rules.give_up(job, reason)


class CallWebhook:
    """Job: a rule's signed POST to an outgoing webhook (a CRM, an ERP)."""

    def __init__(self, sender: EventSender, settings: Settings) -> None:
        self.sender = sender
        self.settings = settings

    async def run(self, job: Job) -> None:
        payload = CALL_WEBHOOK.payload_of(job)
        hook = next((w for w in self.settings.outgoing_webhooks if w.name == payload.webhook), None)
        if hook is None:
            log.error("an outgoing webhook is no longer configured", extra={"job": job.id})
            return
        await self.sender.send_event(hook.url, hook.secret, payload.body)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("an outgoing webhook failed", extra={"job": job.id, "reason": reason})


def message_facts(
    message: InboundMessage, triage: Triage, settings: Settings, now: datetime
) -> Facts:
    """The facts of a new message as its conversation would start (``rules test``)."""
    sender = message.sender_address.lower()
    return Facts(
        event="message_in",
        skill=triage.skill,
        channel=message.channel.value,
        priority=triage.priority.value,
        language=triage.language,
        sentiment=triage.sentiment,
        sender=sender,
        text=f"{message.subject}\n{message.text}",
        vip=is_vip(sender, settings),
        in_business_hours=settings.sla.hours_for(triage.skill).is_working(now),
    )
