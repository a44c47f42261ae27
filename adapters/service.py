"""The running service: every edge wired to the core, started and stopped as one.

``async with Service(settings) as service:`` connects the database (migrating it), starts the
job runner, the HTTP app (Slack, the Telegram webhook, /webhooks/<source>, /healthz, /metrics),
the SMTP endpoint, Telegram polling if configured and, in Socket Mode, the Slack connection.
Leaving the block stops accepting new work first, lets running jobs finish for a grace period
and leaves the rest as jobs for the next start.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from tortoise.backends.base.client import BaseDBAsyncClient

from adapters.email.sender import SmtpReplySender
from adapters.email.server import IntakeHandler, start_smtp_server
from adapters.hnsw_index import HnswIndex
from adapters.slack.chat import SlackChat
from adapters.slack.commands import Background, UserGroups, register_team_workflow
from adapters.slack.directory import SlackTeamDirectory
from adapters.slack.events import AgentDirectory, build_bolt_app
from adapters.slack.spikes import register_spikes
from adapters.slack.suggest import register_suggestions
from adapters.survey_page import SurveyPage
from adapters.telegram.bot import build_bot, open_bot
from adapters.telegram.polling import TelegramPoller
from adapters.telegram.sender import TelegramReplySender
from adapters.telegram.updates import TelegramIntake
from adapters.telegram.webhook import TelegramWebhook
from adapters.web import HealthCheck, build_web_app
from adapters.webhook.events import SignedEventSender
from adapters.webhook.inbound import WebhookIntake
from adapters.webhook.sender import CallbackReplySender
from adapters.whatsapp.graph import GraphClient
from adapters.whatsapp.sender import WhatsAppReplySender
from adapters.whatsapp.webhook import WhatsAppWebhook
from bot.assignment import AssignFairly, FairAssignment
from bot.commands import Commands
from bot.database import is_postgres, open_database
from bot.deadlines import Deadlines, PostAlert, RedrawCard, SlaCheck
from bot.errors import ConfigError, DeliveryError
from bot.escalation import CheckWaiting, Escalation
from bot.intake import Intake, ThreadInbound
from bot.jobkinds import (
    ASK_SURVEY,
    ASSIGN_FAIRLY,
    CALL_WEBHOOK,
    CATALOGUE,
    CHECK_SPIKE,
    CHECK_WAITING,
    DELIVER_REPLY,
    ERASE_THREAD,
    MOVE_CONVERSATION,
    POST_ALERT,
    POST_INBOUND,
    POST_SPIKE,
    PURGE_CLOSED,
    REDRAW_CARD,
    RUN_RULES,
    SHOW_CHANGE,
    SHOW_OTHERS,
    SHOW_RATING,
    SHOW_STATUS,
    SLA_CHECK,
    THREAD_INBOUND,
    WAKE_SNOOZED,
)
from bot.jobs import Clock, JobHandler, JobKind, JobRunner, resume_parked, utcnow
from bot.learning import SharedLearning, newest_example_id
from bot.lookups import Lookups
from bot.metrics import count_job
from bot.people import People, ShowOthers
from bot.pipeline import DeliverReply, PostInbound, ReplyGate
from bot.ports import Classifier, Embedder, Learner, ReplySender
from bot.privacy import EraseThread, Privacy, PurgeClosed, schedule_purge
from bot.relay import Relay
from bot.reports import Facts, Reports
from bot.roles import Actor, Roles
from bot.routing import sync_skills
from bot.rules import CallWebhook, Rules, RunRules
from bot.settings import Settings
from bot.shapes import ChannelKind, Triage
from bot.similar import Similar
from bot.spikes import CheckSpike, PostSpike, Spikes
from bot.suggestions import Suggester
from bot.survey import AskSurvey, ShowRating, Surveys
from bot.vectors import MessageIndex, MessageVectors
from bot.whatsapp import ReplyWindow, ShowStatus, Templates
from bot.workflow import (
    MoveConversation,
    ShowChange,
    WakeSnoozed,
    Workflow,
    agent_name_override,
)
from models import Conversation, Job, JobState, Message, SkillExample

log = logging.getLogger(__name__)

# slack_sdk's own default for a Web API call.
_SLACK_TIMEOUT_SECONDS = 30
# How long start-up waits for Slack to answer the token check.
_TOKEN_CHECK_SECONDS = 5.0


class Service:
    """Switchboard, started by ``async with`` and stopped cleanly on exit.

    This is the one composition root: ``start`` opens the database, loads triage, then builds
    every part once, in dependency order, and hands each what it needs (``_wire``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        classifier: Classifier | None = None,
        clock: Clock = utcnow,
        run_jobs: bool = True,
        learning_sync_seconds: float = 30.0,
        vector_poll_seconds: float = 5.0,
    ) -> None:
        self.settings = settings
        self.learning_sync_seconds = learning_sync_seconds
        self.vector_poll_seconds = vector_poll_seconds
        self.clock = clock
        self.run_jobs = run_jobs
        self._given_classifier = classifier
        self.telegram_bot = build_bot(settings.telegram) if settings.telegram.enabled else None
        self.http_port = 0
        self.smtp_port = 0
        self._stack = AsyncExitStack()
        self.whatsapp_graph: GraphClient | None = None

    def _wire(self, classifier: Classifier, slack_session: aiohttp.ClientSession) -> None:
        """Build the core and its edges around ``classifier``."""
        settings, clock = self.settings, self.clock
        # One connection pool for every Slack call: without a session, slack_sdk opens a new
        # one (and a new connection) per call.
        self.client = AsyncWebClient(
            token=settings.slack.bot_token,
            base_url=settings.slack.api_url or AsyncWebClient.BASE_URL,
            session=slack_session,
        )
        self.chat = chat = SlackChat(self.client)
        self.classifier = classifier
        # Rung by whoever adds a job, so the runner looks for work at once.
        self._jobs_added = jobs_added = asyncio.Event()
        senders: dict[ChannelKind, ReplySender] = {}
        if settings.email.enabled:
            senders[ChannelKind.EMAIL] = SmtpReplySender(settings.email)
        if self.telegram_bot is not None:
            senders[ChannelKind.TELEGRAM] = TelegramReplySender(self.telegram_bot)
        if settings.webhooks:
            senders[ChannelKind.WEBHOOK] = CallbackReplySender(settings.webhooks)
        gates: dict[ChannelKind, ReplyGate] = {}
        self.reply_window = ReplyWindow(settings.whatsapp, settings.slack.command, clock=clock)
        if self.whatsapp_graph is not None:
            senders[ChannelKind.WHATSAPP] = WhatsAppReplySender(self.whatsapp_graph)
            gates[ChannelKind.WHATSAPP] = self.reply_window
        self.templates = Templates(settings.whatsapp, clock=clock, on_queued=jobs_added.set)
        embedder = classifier if isinstance(classifier, Embedder) else None
        self.vectors = MessageVectors(self.index, embedder)
        self.similar = Similar(self.index, clock=clock)
        self.spikes = Spikes(
            self.index, settings.spikes, self.similar, clock=clock, on_queued=jobs_added.set
        )
        self.suggester = Suggester(self.index, embedder)
        self.facts = Facts(settings, clock=clock)
        self.surveys = Surveys(settings, chat, senders, clock=clock)
        self.reports = Reports(settings, clock=clock)
        self.deadlines = Deadlines(chat, settings, clock=clock, on_queued=jobs_added.set)
        self.workflow = Workflow(
            chat,
            settings,
            classifier,
            clock=clock,
            on_queued=jobs_added.set,
            deadlines_of=self.deadlines.views,
            after_change=self._conversation_changed,
            similar=self.similar,
        )
        self.rules = Rules(self.workflow, settings, clock=clock, on_queued=jobs_added.set)
        self.assignment = FairAssignment(
            self.workflow,
            SlackTeamDirectory(self.client),
            settings,
            clock=clock,
            on_queued=jobs_added.set,
        )
        self.lookups = Lookups(settings, clock=clock)
        self.roles = Roles(settings.roles)
        self.commands = Commands(
            self.workflow,
            self.lookups,
            self.roles,
            settings.slack.command,
            templates=self.templates,
            people=People(clock=clock, on_queued=jobs_added.set),
            similar=self.similar,
            reports=self.reports,
            spikes=self.spikes,
        )
        self.directory = AgentDirectory(self.client, stored_override=agent_name_override)
        self.background = Background()
        self.escalation = Escalation(self.workflow, settings.triage.priority, clock=clock)
        self.privacy = Privacy(settings.retention, clock=clock)
        handlers: dict[JobKind[Any], JobHandler] = {
            THREAD_INBOUND: ThreadInbound(
                settings.threading,
                reopen_closed=(
                    ()
                    if settings.telegram.new_conversation_after_close
                    else (ChannelKind.TELEGRAM,)
                ),
                clock=clock,
            ),
            POST_INBOUND: PostInbound(
                chat,
                classifier,
                settings,
                after_post=self._customer_wrote,
                vectors=self.vectors,
                similar=self.similar,
            ),
            DELIVER_REPLY: DeliverReply(
                chat,
                senders,
                gates=gates,
                reporting=frozenset({ChannelKind.WHATSAPP}),
                after_send=self._reply_sent,
            ),
            SHOW_CHANGE: ShowChange(self.workflow),
            MOVE_CONVERSATION: MoveConversation(self.workflow),
            WAKE_SNOOZED: WakeSnoozed(self.workflow),
            CHECK_WAITING: CheckWaiting(self.escalation),
            ERASE_THREAD: EraseThread(chat),
            PURGE_CLOSED: PurgeClosed(self.privacy),
            SHOW_STATUS: ShowStatus(chat, self.reply_window),
            SHOW_OTHERS: ShowOthers(chat),
            REDRAW_CARD: RedrawCard(chat, self.workflow.card),
            SLA_CHECK: SlaCheck(self.deadlines),
            POST_ALERT: PostAlert(chat),
            RUN_RULES: RunRules(self.rules),
            CALL_WEBHOOK: CallWebhook(SignedEventSender(), settings),
            ASSIGN_FAIRLY: AssignFairly(self.assignment),
            ASK_SURVEY: AskSurvey(self.surveys),
            SHOW_RATING: ShowRating(self.surveys),
            CHECK_SPIKE: CheckSpike(self.spikes),
            POST_SPIKE: PostSpike(chat, self.spikes),
        }
        missing = set(CATALOGUE) - {kind.name for kind in handlers}
        assert not missing, f"job kinds without a handler: {sorted(missing)}"
        self.runner = JobRunner(
            handlers,
            settings.jobs,
            clock=clock,
            on_outcome=count_job,
            probe=self._slack_answers,
            wake=jobs_added,
        )
        self.intake = Intake(clock=clock, on_stored=lambda _: jobs_added.set())
        self.relay = Relay(chat, settings.replies, clock=clock, on_queued=jobs_added.set)
        groups = UserGroups(self.client)

        async def actor_of(user_id: str) -> Actor:
            return Actor(
                user_id,
                await self.directory.name_of(user_id),
                await groups.groups_of(user_id, self.roles.groups),
            )

        def extend(app: AsyncApp) -> None:
            register_team_workflow(
                app,
                commands=self.commands,
                lookups=self.lookups,
                roles=self.roles,
                groups=groups,
                name_of=self.directory.name_of,
                background=self.background,
                command_name=settings.slack.command,
                clock=clock,
                reports=self.reports,
            )
            register_suggestions(
                app,
                suggester=self.suggester,
                similar=self.similar,
                relay=self.relay,
                commands=self.commands,
                actor_of=actor_of,
                name_of=self.directory.name_of,
                background=self.background,
            )
            register_spikes(
                app,
                commands=self.commands,
                roles=self.roles,
                actor_of=actor_of,
                background=self.background,
                clock=clock,
            )

        self.bolt = build_bolt_app(
            client=self.client,
            signing_secret=settings.slack.signing_secret,
            relay=self.relay,
            chat=chat,
            directory=self.directory,
            extend=extend,
        )

    async def _slack_answers(self) -> bool:
        """Whether Slack accepts the token now (parked jobs may go on)."""
        try:
            await self.chat.check()
        except DeliveryError:
            return False
        return True

    async def _customer_wrote(
        self, conversation: Conversation, message: Message, opened: bool, reading: Triage | None
    ) -> None:
        if message.is_automated:
            return
        if opened:
            # A new thread: nothing to wake or reopen, and the customer's streak is this message.
            await self.escalation.thread_opened(conversation.id, message.id)
        else:
            await conversation.refresh_from_db()
            await self.workflow.customer_wrote(conversation, message)
            await self.escalation.customer_wrote(conversation, message, reading)
        await self.deadlines.customer_wrote(conversation, message)
        await self.rules.customer_wrote(conversation, message, opened)
        await self.assignment.customer_wrote(conversation, message, opened)
        await self.spikes.customer_wrote(conversation, message)

    async def _reply_sent(self, conversation: Conversation, message: Message) -> None:
        await self.facts.reply_sent(conversation, message)
        await self.deadlines.reply_sent(conversation)

    async def _conversation_changed(
        self, conversation: Conversation, conn: BaseDBAsyncClient
    ) -> None:
        """In the transaction of a change: the deadlines follow it, the rules hear of it."""
        await self.deadlines.reconcile(conversation, conn)
        await self.rules.changed(conversation, conn)

    async def __aenter__(self) -> Service:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every part; on failure, ``__aenter__`` undoes what was started."""
        settings = self.settings
        # Closed last, after everything that calls Slack has stopped.
        slack_session = await self._stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_SLACK_TIMEOUT_SECONDS))
        )
        await self._stack.enter_async_context(open_database(settings.database_url))
        await sync_skills(settings)
        if settings.whatsapp.enabled:
            whatsapp_session = await self._stack.enter_async_context(
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_SLACK_TIMEOUT_SECONDS))
            )
            self.whatsapp_graph = GraphClient(settings.whatsapp, whatsapp_session)
        classifier = self._given_classifier
        if isinstance(classifier, Learner):
            await self._share_learning(classifier, await newest_example_id())
        if classifier is None:
            classifier = await self._load_triage()
        # Loaded before the job runner starts, so the first post already finds similar ones.
        self.index = MessageIndex(HnswIndex, poll_seconds=self.vector_poll_seconds)
        await self.index.start()
        self._stack.push_async_callback(self.index.stop)
        self._wire(classifier, slack_session)
        await schedule_purge(self.privacy)
        if settings.slack.mode == "http":
            await self._check_bot_token()
        if not is_postgres(settings.database_url):
            # One process owns a SQLite file: jobs marked running were cut off by a crash or a
            # stop, and can run again now instead of after their lease.
            await Job.filter(state=JobState.RUNNING).update(
                state=JobState.PENDING, locked_until=None
            )
        telegram: TelegramIntake | None = None
        if self.telegram_bot is not None:
            # Opened before the job runner starts, so it is shut down after the runner stops.
            await self._stack.enter_async_context(open_bot(self.telegram_bot))
            telegram = TelegramIntake(
                self.telegram_bot, self.intake, bot_id=settings.telegram.bot_id
            )
        if self.run_jobs:
            await self.runner.start()
            self._stack.push_async_callback(self.runner.stop)
        # Commands and clicks still being worked on finish before the runner and database stop.
        self._stack.push_async_callback(self.background.drain)

        routes: list[web.RouteDef] = []
        if telegram is not None and settings.telegram.mode == "webhook":
            routes += TelegramWebhook(settings.telegram.webhook_secret, telegram).routes()
        if settings.webhooks:
            routes += WebhookIntake(settings.webhooks, self.intake).routes()
        if settings.survey.enabled:
            routes += SurveyPage(self.surveys).routes()
        if self.whatsapp_graph is not None:
            routes += WhatsAppWebhook(
                phone_number_id=settings.whatsapp.phone_number_id,
                app_secret=settings.whatsapp.app_secret,
                verify_token=settings.whatsapp.verify_token,
                intake=self.intake,
                graph=self.whatsapp_graph,
                on_reports=self._jobs_added.set,
                clock=self.clock,
            ).routes()
        bolt = self.bolt if settings.slack.mode == "http" else None
        web_app = build_web_app(
            bolt,
            HealthCheck(
                self.chat.check,
                alert_after_seconds=settings.jobs.alert_after_seconds,
                clock=self.clock,
            ),
            routes,
            slack_signing_secret=settings.slack.signing_secret,
        )
        app_runner = web.AppRunner(web_app, access_log=None)
        await app_runner.setup()
        self._stack.push_async_callback(app_runner.cleanup)
        site = web.TCPSite(app_runner, settings.service.http_host, settings.service.http_port)
        await site.start()
        self.http_port = _bound_port(site)
        # Survey links point at the public address, else at where this replica listens.
        self.surveys.base_url = (
            settings.service.public_url or f"http://{settings.service.http_host}:{self.http_port}"
        )
        if settings.survey.enabled and not settings.service.public_url:
            log.warning(
                "[survey] is on without [service] public_url: survey links point at %s, which "
                "customers cannot open; set public_url to the address they reach this service at",
                self.surveys.base_url,
            )

        if settings.email.enabled:
            handler = IntakeHandler(settings.email, self.intake)
            server = await start_smtp_server(settings.email, handler)
            self._stack.push_async_callback(_close_server, server)
            self.smtp_port = server.sockets[0].getsockname()[1]

        if telegram is not None and settings.telegram.mode == "polling":
            assert self.telegram_bot is not None
            poller = TelegramPoller(self.telegram_bot, telegram)
            await poller.start()
            self._stack.push_async_callback(poller.stop)

        if settings.slack.mode == "socket":
            await self._check_app_token()
            socket = AsyncSocketModeHandler(self.bolt, settings.slack.app_token)
            await socket.connect_async()  # type: ignore[no-untyped-call]
            self._stack.push_async_callback(socket.close_async)
        log.info(
            "switchboard started",
            extra={"http_port": self.http_port, "smtp_port": self.smtp_port},
        )

    async def _check_bot_token(self) -> None:
        """Say plainly when Slack refuses the bot token; mail is still accepted, and parks."""
        try:
            # Briefly: a Slack that does not answer must not hold up intake.
            await asyncio.wait_for(self.chat.check(), _TOKEN_CHECK_SECONDS)
        except TimeoutError:
            log.warning(
                "Slack did not answer auth.test at start; messages are accepted and wait",
                extra={"seconds": _TOKEN_CHECK_SECONDS},
            )
        except DeliveryError as exc:
            log.error(
                "Slack refuses SLACK_BOT_TOKEN, or cannot be reached: messages are accepted "
                "and wait until it works (fix the token and restart, or they resume when Slack "
                "answers again); `switchboard check-config --online` says more",
                extra={"reason": exc.reason},
            )
        else:
            # Parked by a wrong token before this start: try them now.
            await resume_parked(self.clock())

    async def _check_app_token(self) -> None:
        # slack_sdk retries a refused Socket Mode connection forever and only logs it; asking
        # once first turns a wrong token into a start-up error that says what to fix.
        try:
            await self.client.apps_connections_open(app_token=self.settings.slack.app_token)
        except SlackApiError as exc:
            raise ConfigError(
                "SLACK_APP_TOKEN",
                f"Slack refused it ({exc.response.get('error')}): create an app-level token "
                "with the connections:write scope (Basic Information > App-Level Tokens) and "
                "turn Socket Mode on in the app's settings",
            ) from exc

    async def _load_triage(self) -> Classifier:
        """The transformer triage, trained from the config and what the team taught it."""
        from bot.triage import TriageEngine

        seen = await newest_example_id()
        learned = (
            await SkillExample.filter(id__lte=seen)
            .exclude(source="config")
            .values_list("skill", "text")
        )
        log.info(
            "loading the triage model", extra={"model": self.settings.triage.model or "bundled"}
        )
        engine = await TriageEngine.load(
            self.settings.triage,
            self.settings.skills,
            extra_examples=[(str(skill), str(text)) for skill, text in learned],
        )
        self._stack.push_async_callback(engine.aclose)
        await self._share_learning(engine, seen)
        return engine

    async def _share_learning(self, learner: Learner, seen_up_to: int) -> None:
        """Learn what the team teaches on other replicas, too."""
        sharing = SharedLearning(
            learner, seen_up_to=seen_up_to, every_seconds=self.learning_sync_seconds
        )
        await sharing.start()
        self._stack.push_async_callback(sharing.stop)

    async def stop(self) -> None:
        """Stop accepting work, let running jobs finish, close everything (idempotent)."""
        await self._stack.aclose()


def _bound_port(site: web.TCPSite) -> int:
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else 0


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()
