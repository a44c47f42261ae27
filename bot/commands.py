"""The slash command's subcommands: parsed into typed commands, checked against roles, run.

The adapter hands over the text with Slack's markup already read (a mention is ``@U123``, a
channel ``#name``, a link plain), and the same typed commands serve the buttons, the shortcut's
modal and the App Home. Every refusal and error comes back as an ``Answer`` that says why;
nothing changes then.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import timedelta

from bot.blocks import (
    BlockDraft,
    draft_of,
    find_block,
    list_blocks,
    remove_block,
    save_block,
)
from bot.errors import ActionRefused
from bot.lookups import (
    ConversationRef,
    CustomerView,
    LogView,
    Lookups,
    QueueView,
    SkillsView,
    find_conversation,
    reference_of,
    suggestion,
)
from bot.people import People
from bot.reports import Report, Reports, is_period
from bot.roles import Actor, Role, Roles
from bot.routing import skill_names
from bot.rules import describe
from bot.shapes import Priority
from bot.similar import Similar
from bot.spikes import Spikes
from bot.whatsapp import Templates
from bot.workflow import Workflow
from models import TextBlock

_SKILL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_USER = re.compile(r"^@?([UW][A-Z0-9]{2,})$")
_DURATION_PART = re.compile(r"(\d+)\s*(w|d|h|m|min|mins|minutes?|hours?|days?|weeks?)")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Reassign:
    conversation: ConversationRef
    skill: str


@dataclass(frozen=True, slots=True)
class Assign:
    conversation: ConversationRef
    user_id: str


@dataclass(frozen=True, slots=True)
class SetPriority:
    conversation: ConversationRef
    priority: Priority


@dataclass(frozen=True, slots=True)
class Close:
    conversation: ConversationRef


@dataclass(frozen=True, slots=True)
class Reopen:
    conversation: ConversationRef


@dataclass(frozen=True, slots=True)
class Snooze:
    conversation: ConversationRef
    duration: timedelta | None  # None ends the snooze


@dataclass(frozen=True, slots=True)
class ShowLog:
    conversation: ConversationRef


@dataclass(frozen=True, slots=True)
class ListSkills:
    pass


@dataclass(frozen=True, slots=True)
class MapSkill:
    skill: str
    channel: str


@dataclass(frozen=True, slots=True)
class AddSkill:
    skill: str
    description: str


@dataclass(frozen=True, slots=True)
class AddExample:
    skill: str
    text: str


@dataclass(frozen=True, slots=True)
class RemoveSkill:
    skill: str


@dataclass(frozen=True, slots=True)
class ShowQueue:
    skill: str = ""


@dataclass(frozen=True, slots=True)
class ShowReport:
    """``report [period] [skill]``: the team's figures, with charts."""

    period: str = "week"
    skill: str = ""


@dataclass(frozen=True, slots=True)
class FindCustomer:
    query: str


@dataclass(frozen=True, slots=True)
class ListRules:
    pass


@dataclass(frozen=True, slots=True)
class NameAgent:
    user_id: str
    name: str  # "" goes back to the Slack profile name


@dataclass(frozen=True, slots=True)
class LinkCustomers:
    first: str
    second: str


@dataclass(frozen=True, slots=True)
class UnlinkCustomer:
    address: str


@dataclass(frozen=True, slots=True)
class ConfirmDetail:
    key: str


@dataclass(frozen=True, slots=True)
class CustomerOf:
    """The card of the customer of a conversation (the button on its root message)."""

    conversation: ConversationRef


@dataclass(frozen=True, slots=True)
class ListTemplates:
    pass


@dataclass(frozen=True, slots=True)
class SendTemplate:
    conversation: ConversationRef
    name: str


@dataclass(frozen=True, slots=True)
class ListBlocks:
    skill: str = ""


@dataclass(frozen=True, slots=True)
class EditBlock:
    """Open the text block editor (a modal): a new block, or the one called ``name``."""

    name: str = ""


@dataclass(frozen=True, slots=True)
class SaveBlock:
    draft: BlockDraft
    replace: int | None = None


@dataclass(frozen=True, slots=True)
class RemoveBlock:
    name: str


@dataclass(frozen=True, slots=True)
class LinkProblem:
    conversation: ConversationRef
    title: str


@dataclass(frozen=True, slots=True)
class ListProblems:
    pass


@dataclass(frozen=True, slots=True)
class LinkSpike:
    """Link every conversation of a spike to a known problem (the alert's button)."""

    spike_id: int
    title: str


BlockCommand = ListBlocks | EditBlock | SaveBlock | RemoveBlock | LinkProblem | ListProblems


Command = (
    BlockCommand
    | Help
    | Reassign
    | Assign
    | SetPriority
    | Close
    | Reopen
    | Snooze
    | ShowLog
    | ListSkills
    | MapSkill
    | AddSkill
    | AddExample
    | RemoveSkill
    | ShowQueue
    | ShowReport
    | FindCustomer
    | NameAgent
    | ListTemplates
    | SendTemplate
    | LinkCustomers
    | UnlinkCustomer
    | ConfirmDetail
    | CustomerOf
    | ListRules
    | LinkSpike
)


ConversationCommand = Reassign | Assign | SetPriority | Close | Reopen | Snooze | ShowLog


@dataclass(frozen=True, slots=True)
class Answer:
    """A text for the person who asked; ``ask`` names who can do what they may not."""

    text: str
    ask: tuple[str, ...] = ()
    refused: bool = False


@dataclass(frozen=True, slots=True)
class ReportReply:
    """A report to post with its charts (the chat adapter draws and uploads them)."""

    report: Report


@dataclass(frozen=True, slots=True)
class OpenBlockEditor:
    """Show the text block editor, empty (``block_id`` None) or holding ``draft``."""

    draft: BlockDraft
    block_id: int | None = None


Reply = Answer | QueueView | CustomerView | SkillsView | LogView | OpenBlockEditor | ReportReply

REPORT_USAGE = "report [today | week | month | YYYY-MM-DD..YYYY-MM-DD] [skill]"

#: (usage, who, what) for ``help`` and the README's table.
REFERENCE: tuple[tuple[str, Role, str], ...] = (
    ("help", Role.AGENT, "this list"),
    ("queue [skill]", Role.AGENT, "open conversations by priority and age"),
    (REPORT_USAGE, Role.LEAD, "the team's figures and charts for a period"),
    ("customer <e-mail | @telegram | id>", Role.AGENT, "a customer's history across channels"),
    ("log <conversation>", Role.AGENT, "who changed what, and when"),
    ("assign <conversation> me", Role.AGENT, "take a conversation"),
    ("assign <conversation> @user | nobody", Role.LEAD, "give it to someone (or no one)"),
    ("reassign <conversation> <skill>", Role.LEAD, "another skill; moves it to that channel"),
    ("priority <conversation> urgent|high|normal|low", Role.LEAD, "change the priority"),
    ("close <conversation> / reopen <conversation>", Role.LEAD, "close or reopen"),
    ("snooze <conversation> 2h|1d|30m|off", Role.LEAD, "hide until then or the customer writes"),
    ("skills", Role.AGENT, "skills with channels and example counts"),
    ("skills map <skill> #channel", Role.ADMIN, "new conversations of a skill go there"),
    ('skills add <skill> "<description>"', Role.ADMIN, "a new skill"),
    ('skills example <skill> "<text>"', Role.ADMIN, "teach triage an example"),
    ("skills remove <skill>", Role.ADMIN, "remove a skill without open conversations"),
    ('agent @user "<name>" | reset', Role.ADMIN, "the name an agent's replies go out under"),
    ("templates", Role.AGENT, "the WhatsApp templates for when the 24-hour window closed"),
    ("template <conversation> <name>", Role.AGENT, "send a WhatsApp template to the customer"),
    ("customer link <customer> <customer>", Role.LEAD, "one person: join two customers"),
    ("customer unlink <address>", Role.LEAD, "undo the link that joined that address"),
    ("customer confirm <suggestion>", Role.AGENT, "store contact data suggested on the card"),
    ("rules", Role.AGENT, "the event rules: when they fire and what they do"),
    ("blocks [skill]", Role.AGENT, "the team's text blocks"),
    ("blocks add / blocks edit <title>", Role.LEAD, "write or change a text block (a form)"),
    ('blocks add "<title>" "<English>" ["<German>"]', Role.LEAD, "a short text block at once"),
    ("blocks remove <title>", Role.LEAD, "remove a text block"),
    ('problem <conversation> "<known problem>"', Role.LEAD, "link it to a known problem"),
    ("problems", Role.AGENT, "the known problems"),
)


class UsageError(ActionRefused):
    """The command could not be read; ``reason`` shows the right form."""


def parse(text: str) -> Command:
    """The typed command in ``text`` (the words after the slash command)."""
    try:
        words = shlex.split(text.translate(_QUOTES))
    except ValueError as exc:
        raise UsageError(f"Could not read that: {exc} (close your quotes).") from exc
    if not words or words[0].lower() in ("help", "?"):
        return Help()
    name, args = words[0].lower(), words[1:]
    if name in ("blocks", "block", "problem", "problems"):
        return _parse_blocks(name, args)
    if name == "skills":
        return _parse_skills(args)
    if name == "queue":
        _count(args, 0, 1, "queue [skill]")
        return ShowQueue(args[0].lower() if args else "")
    if name == "report":
        _count(args, 0, 2, REPORT_USAGE)
        period = args[0] if args and is_period(args[0]) else "week"
        rest = args[1:] if args and is_period(args[0]) else args
        if len(rest) > 1:
            raise UsageError(f"`report {' '.join(args)}`? Use {REPORT_USAGE}.")
        return ShowReport(period.lower(), rest[0].lower() if rest else "")
    if name == "customer" and args and args[0].lower() in ("link", "unlink", "confirm"):
        return _parse_customer(args)
    if name == "customer":
        _count(args, 1, 1, "customer <e-mail | @telegram | id>")
        return FindCustomer(args[0])
    if name == "agent":
        return _parse_agent(args)
    if name in ("templates", "template"):
        return _parse_templates(name, args)
    if name == "rules":
        _count(args, 0, 0, "rules")
        return ListRules()
    conversation_commands = {
        "reassign": "reassign <conversation> <skill>",
        "assign": "assign <conversation> @user",
        "priority": "priority <conversation> urgent|high|normal|low",
        "close": "close <conversation>",
        "reopen": "reopen <conversation>",
        "snooze": "snooze <conversation> 2h|1d|30m|off",
        "log": "log <conversation>",
    }
    usage = conversation_commands.get(name)
    if usage is None:
        raise UsageError(f"There is no `{words[0]}` command. Try `help`.")
    wants = len(usage.split()) - 1
    _count(args, wants, wants, usage)
    ref = reference_of(args[0])
    if name == "reassign":
        return Reassign(ref, _skill_name(args[1]))
    if name == "assign":
        return Assign(ref, _user(args[1]))
    if name == "priority":
        try:
            return SetPriority(ref, Priority(args[1].lower()))
        except ValueError:
            raise UsageError(
                f"Priority is one of urgent, high, normal, low; not `{args[1]}`."
            ) from None
    if name == "snooze":
        return Snooze(ref, parse_duration(args[1]))
    if name == "close":
        return Close(ref)
    if name == "reopen":
        return Reopen(ref)
    return ShowLog(ref)


def _count(args: list[str], least: int, most: int, usage: str) -> None:
    if not least <= len(args) <= most:
        raise UsageError(f"Usage: `{usage}`")


def _skill_name(text: str) -> str:
    name = text.lower()
    if not _SKILL_NAME.match(name):
        raise UsageError(
            f"`{text}` is not a skill name: lower-case letters, digits, - and _, like `billing`."
        )
    return name


def _user(text: str) -> str:
    """A user id from ``@U123`` (a mention), ``me`` or ``nobody``; ``me`` stays ``me``."""
    if text.lower() in ("me", "nobody", "none"):
        return text.lower().replace("none", "nobody")
    match = _USER.match(text)
    if match is None:
        raise UsageError(f"Name the person with an @-mention (like @anna), not `{text}`.")
    return match.group(1)


def parse_duration(text: str) -> timedelta | None:
    """``2h``, ``1d12h``, ``90m``, ``1w``; ``off`` (or ``wake``) is None."""
    compact = text.lower().replace(" ", "")
    if compact in ("off", "wake", "now"):
        return None
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise UsageError(f"`{text}` is not a duration: say 30m, 2h, 1d or 1w (or off).")
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit[0]]: int(number)})
    return total


def _parse_skills(args: list[str]) -> Command:
    if not args:
        return ListSkills()
    action, rest = args[0].lower(), args[1:]
    if action == "map":
        _count(rest, 2, 2, "skills map <skill> #channel")
        channel = rest[1]
        if not channel.startswith("#") or len(channel) < 2:
            raise UsageError(f"Name the channel with #, like #support-billing; not `{channel}`.")
        return MapSkill(_skill_name(rest[0]), channel[1:])
    if action == "add":
        _count(rest, 1, 2, 'skills add <skill> "<description>"')
        return AddSkill(_skill_name(rest[0]), rest[1] if len(rest) > 1 else "")
    if action == "example":
        _count(rest, 2, 2, 'skills example <skill> "<text>" (the text in quotes)')
        return AddExample(_skill_name(rest[0]), rest[1])
    if action == "remove":
        _count(rest, 1, 1, "skills remove <skill>")
        return RemoveSkill(_skill_name(rest[0]))
    raise UsageError(f"`skills {args[0]}`? Use `skills`, `skills map`, `add`, `example`, `remove`.")


def _parse_agent(args: list[str]) -> Command:
    _count(args, 2, 2, 'agent @user "<name>"  or  agent @user reset')
    user = _user(args[0])
    if user in ("me", "nobody"):
        raise UsageError("Name the agent with an @-mention, like @anna.")
    name = "" if args[1].lower() == "reset" else args[1].strip()
    return NameAgent(user, name[:255])


def _parse_customer(args: list[str]) -> Command:
    action, rest = args[0].lower(), args[1:]
    if action == "link":
        _count(rest, 2, 2, "customer link <customer> <customer>  (addresses, ids or conversations)")
        return LinkCustomers(rest[0], rest[1])
    if action == "unlink":
        _count(rest, 1, 1, "customer unlink <address>")
        return UnlinkCustomer(rest[0])
    _count(rest, 1, 1, "customer confirm <suggestion>  (as the customer card shows it)")
    return ConfirmDetail(rest[0])


def _parse_templates(name: str, args: list[str]) -> Command:
    if name == "templates":
        _count(args, 0, 0, "templates")
        return ListTemplates()
    _count(args, 2, 2, "template <conversation> <name>  (`templates` lists them)")
    return SendTemplate(reference_of(args[0]), args[1])


def _parse_blocks(name: str, args: list[str]) -> Command:
    """``blocks ...``, ``problem ...`` and ``problems``."""
    if name == "problems":
        _count(args, 0, 0, "problems")
        return ListProblems()
    if name == "problem":
        _count(args, 2, 2, 'problem <conversation> "<known problem>" (the name in quotes)')
        return LinkProblem(reference_of(args[0]), args[1])
    action, rest = (args[0].lower(), args[1:]) if args else ("list", [])
    if action == "list":
        _count(rest, 0, 1, "blocks list [skill]")
        return ListBlocks(rest[0].lower() if rest else "")
    if action == "add":
        if not rest:
            return EditBlock()
        _count(rest, 2, 3, 'blocks add "<title>" "<English text>" ["<German text>"]')
        return SaveBlock(BlockDraft(rest[0], "", rest[1], rest[2] if len(rest) > 2 else ""))
    if action == "edit":
        _count(rest, 1, 1, "blocks edit <title> (in quotes if it has spaces)")
        return EditBlock(rest[0])
    if action == "remove":
        _count(rest, 1, 1, "blocks remove <title> (in quotes if it has spaces)")
        return RemoveBlock(rest[0])
    if len(args) == 1:
        return ListBlocks(action)
    raise UsageError(f"`blocks {args[0]}`? Use `blocks`, `blocks add`, `edit` or `remove`.")


def required_role(command: Command, actor: Actor) -> Role:
    """The role ``command`` needs from ``actor``."""
    if isinstance(command, EditBlock | SaveBlock | RemoveBlock | LinkProblem | LinkSpike):
        return Role.LEAD
    if isinstance(command, Assign) and command.user_id in ("me", actor.user_id):
        return Role.AGENT
    if isinstance(command, ConversationCommand) and not isinstance(command, ShowLog):
        return Role.LEAD
    if isinstance(command, MapSkill | AddSkill | AddExample | RemoveSkill | NameAgent):
        return Role.ADMIN
    if isinstance(command, LinkCustomers | UnlinkCustomer | ShowReport):
        return Role.LEAD
    return Role.AGENT


def help_text(command_name: str) -> str:
    """The command reference, as ``help`` shows it."""
    lines = [f"*{command_name}*: a conversation is its short id or a link to one of its messages."]
    lines += [f"`{usage}`: {what} ({role.title})" for usage, role, what in REFERENCE]
    return "\n".join(lines)


class Commands:
    """Runs typed commands for a person, if their role allows it."""

    def __init__(
        self,
        workflow: Workflow,
        lookups: Lookups,
        roles: Roles,
        command_name: str,
        *,
        templates: Templates | None = None,
        people: People | None = None,
        similar: Similar | None = None,
        spikes: Spikes | None = None,
        reports: Reports | None = None,
    ) -> None:
        self.people = people or People()
        self.reports = reports
        self.workflow = workflow
        self.lookups = lookups
        self.roles = roles
        self.command_name = command_name
        self.templates = templates
        self.similar = similar
        self.spikes = spikes

    async def _report(self, period_text: str, skill: str) -> Reply:
        if self.reports is None:
            return Answer("Reports are not set up on this service.", refused=True)
        if skill and skill not in await skill_names():
            known = ", ".join(f"`{name}`" for name in await skill_names())
            raise ActionRefused(
                f"`{skill}` is neither a period nor a skill. Use `{REPORT_USAGE}`; skills: {known}."
            )
        period = self.reports.period(period_text)
        return ReportReply(await self.reports.report(period, skill))

    async def run_text(self, text: str, actor: Actor) -> Reply:
        """Parse and run what someone typed after the slash command."""
        try:
            command = parse(text)
        except ActionRefused as exc:
            return Answer(exc.reason, refused=True)
        return await self.run(command, actor)

    async def run(self, command: Command, actor: Actor) -> Reply:
        needed = required_role(command, actor)
        if not self.roles.allows(actor, needed):
            ask = self.roles.who_to_ask(needed)
            text = f"Not allowed: that is for {needed.title}, and nothing was changed."
            if not ask:
                text += f" No one is named among the {needed.title} yet ([roles] in the config)."
            return Answer(text, ask=ask, refused=True)
        try:
            return await self._run(command, actor)
        except ActionRefused as exc:
            return Answer(exc.reason, refused=True)

    async def _run(self, command: Command, actor: Actor) -> Reply:
        workflow, lookups = self.workflow, self.lookups
        if isinstance(command, BlockCommand):
            return await self._run_blocks(command, actor)
        match command:
            case Help():
                return Answer(help_text(self.command_name))
            case ShowQueue(skill):
                return await lookups.queue(skill)
            case ShowReport(period, skill):
                return await self._report(period, skill)
            case FindCustomer(query):
                return await lookups.customer(query)
            case ListSkills():
                return await lookups.skills()
            case MapSkill(skill, channel):
                return Answer(await workflow.map_skill(actor, skill, channel))
            case AddSkill(skill, description):
                return Answer(await workflow.add_skill(actor, skill, description))
            case AddExample(skill, text):
                return Answer(await workflow.add_example(actor, skill, text))
            case RemoveSkill(skill):
                return Answer(await workflow.remove_skill(actor, skill))
            case NameAgent(user_id, name):
                return Answer(await workflow.name_agent(actor, user_id, name))
            case ListTemplates() | SendTemplate():
                return await self._templates(command, actor)
            case LinkCustomers(first, second):
                return Answer(
                    await self.people.link(
                        actor,
                        await lookups.find_customer(first),
                        await lookups.find_customer(second),
                    )
                )
            case UnlinkCustomer(address):
                return Answer(await self.people.unlink(actor, await lookups.identity(address)))
            case ConfirmDetail(key):
                customer_id, found = await suggestion(key)
                return Answer(await self.people.confirm(actor, customer_id, found))
            case CustomerOf(ref):
                conversation = await find_conversation(ref)
                customer_id = conversation.customer_id  # type: ignore[attr-defined]
                return await lookups.customer(str(customer_id))
            case ListRules():
                return Answer(describe(workflow.settings.rules))
            case LinkSpike(spike_id, title):
                if self.spikes is None:
                    return Answer("Spike alerts are not set up on this service.", refused=True)
                return Answer(await self.spikes.link_problem(actor, spike_id, title))
        assert isinstance(command, ConversationCommand)
        conversation = await find_conversation(command.conversation)
        match command:
            case Reassign(_, skill):
                return Answer(await workflow.reassign(actor, conversation, skill))
            case Assign(_, user_id):
                owner = {"me": actor.user_id, "nobody": ""}.get(user_id, user_id)
                return Answer(await workflow.assign(actor, conversation, owner))
            case SetPriority(_, priority):
                return Answer(await workflow.set_priority(actor, conversation, priority))
            case Close():
                return Answer(await workflow.close(actor, conversation))
            case Reopen():
                return Answer(await workflow.reopen(actor, conversation))
            case Snooze(_, duration):
                return Answer(await workflow.snooze(actor, conversation, duration))
            case ShowLog():
                return await lookups.log(conversation)
        raise AssertionError(f"unhandled command {command!r}")

    async def _templates(self, command: ListTemplates | SendTemplate, actor: Actor) -> Reply:
        if self.templates is None:
            return Answer("WhatsApp is not set up on this service.", refused=True)
        if isinstance(command, ListTemplates):
            return Answer(self.templates.listing())
        conversation = await find_conversation(command.conversation)
        return Answer(await self.templates.send(actor, conversation, command.name))

    async def _run_blocks(self, command: BlockCommand, actor: Actor) -> Reply:
        match command:
            case ListBlocks(skill):
                return Answer(blocks_text(await list_blocks(skill), skill))
            case EditBlock(""):
                return OpenBlockEditor(BlockDraft(""))
            case EditBlock(name):
                block = await find_block(name)
                return OpenBlockEditor(draft_of(block), block.id)
            case SaveBlock(draft, replace):
                return Answer(await save_block(actor, draft, replace=replace))
            case RemoveBlock(name):
                return Answer(await remove_block(actor, name))
        if self.similar is None:
            return Answer("Similar conversations are not set up on this service.", refused=True)
        match command:
            case LinkProblem(ref, title):
                conversation = await find_conversation(ref)
                return Answer(await self.similar.link_problem(actor, conversation, title))
            case ListProblems():
                problems = await self.similar.problems()
                if not problems:
                    return Answer('No known problems yet: `problem <conversation> "<name>"`.')
                lines = ["*Known problems*"]
                lines += [f"• {title}: {count} conversations" for title, count in problems]
                return Answer("\n".join(lines))
        raise AssertionError(f"unhandled command {command!r}")


def blocks_text(blocks: list[TextBlock], skill: str = "") -> str:
    """The list of text blocks, as ``blocks`` shows it."""
    where = f" for {skill}" if skill else ""
    if not blocks:
        return f"No text blocks{where} yet. Leads add them with `blocks add`."
    lines = [f"*{len(blocks)} text blocks{where}*"]
    for block in blocks[:50]:
        languages = "/".join(
            name for name, text in (("en", block.text_en), ("de", block.text_de)) if text
        )
        first = (block.text_en or block.text_de).splitlines()[0][:80]
        skill_name = block.skill or "all skills"
        lines.append(f"• `#{block.id}` *{block.title}* · {skill_name} · {languages}: {first}")
    return "\n".join(lines)
