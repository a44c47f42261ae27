"""Customer satisfaction: one question, on the customer's channel, after a conversation closes.

Closing a conversation queues an ``ask_survey`` job, due ``[survey] delay_minutes`` later. If
the conversation is still closed, its skill is not in ``skip_skills``, the customer has not
opted out and was not asked within ``ask_again_after_days``, the job sends the question the way
the customer wrote: an e-mail with five links, a Telegram message with five buttons, or a
``survey`` event to a webhook source's callback. Each link opens a small page served by the
service (adapters/survey_page.py) that records the rating at once and offers a comment field.

Links carry a signed token naming the conversation and when it expires; a conversation has one
answer (``SurveyAnswer``), which a later click or comment changes, so a rating never counts
twice. The answer is shown in the conversation's thread and counted in reports.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from bot.jobkinds import ASK_SURVEY, SHOW_RATING, RatingPayload
from bot.jobs import Clock, utcnow
from bot.ports import ChatPort, ReplySender
from bot.settings import Settings
from bot.shapes import ChannelKind, DeliveryState, OutboundReply, SurveyInvite
from models import (
    AuditEntry,
    Conversation,
    ConversationStatus,
    Customer,
    Direction,
    Job,
    Message,
    SurveyAnswer,
)

log = logging.getLogger(__name__)

RATINGS = (1, 2, 3, 4, 5)
#: The channels a survey goes out on (WhatsApp allows only templates outside its window).
CHANNELS = (ChannelKind.EMAIL, ChannelKind.TELEGRAM, ChannelKind.WEBHOOK)
MAX_COMMENT = 2000

#: What the customer reads, by language ("de", else English).
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "subject": "How did we do?",
        "ask": "Your conversation with us is closed. How happy are you with our answer?",
        "scale": "Pick one (1 = not at all, 5 = very):",
        "labels": "not at all|not really|okay|happy|very happy",
        "title": "How did we do?",
        "thanks": "Thank you for your rating!",
        "rated": "You rated our answer {stars} ({rating} of 5).",
        "change": "Changed your mind? Pick again:",
        "comment": "Anything you want to tell us? (optional)",
        "send": "Send",
        "sent": "Thank you, we have your comment.",
        "opt_out": "Do not ask me again",
        "opted_out": "We will not ask you again.",
        "expired": "This link has expired or is not valid. Thank you all the same!",
    },
    "de": {
        "subject": "Wie zufrieden sind Sie?",
        "ask": (
            "Ihre Anfrage bei uns ist abgeschlossen. Wie zufrieden sind Sie mit unserer Antwort?"
        ),
        "scale": "Bitte wählen Sie (1 = gar nicht, 5 = sehr):",
        "labels": "gar nicht|eher nicht|geht so|zufrieden|sehr zufrieden",
        "title": "Wie zufrieden sind Sie?",
        "thanks": "Vielen Dank für Ihre Bewertung!",
        "rated": "Sie haben unsere Antwort mit {stars} bewertet ({rating} von 5).",
        "change": "Doch anders? Wählen Sie neu:",
        "comment": "Möchten Sie uns noch etwas sagen? (freiwillig)",
        "send": "Senden",
        "sent": "Vielen Dank, wir haben Ihren Kommentar erhalten.",
        "opt_out": "Bitte nicht mehr fragen",
        "opted_out": "Wir fragen Sie nicht mehr.",
        "expired": "Dieser Link ist abgelaufen oder ungültig. Trotzdem vielen Dank!",
    },
}


def texts_for(language: str) -> dict[str, str]:
    return TEXTS["de" if language.lower().startswith("de") else "en"]


def stars(rating: int) -> str:
    return "★" * rating + "☆" * (5 - rating)


class SurveyRefused(Exception):
    """A link that is not valid (wrong signature, expired, unknown conversation)."""


@dataclass(frozen=True, slots=True)
class Tokens:
    """Signed links: ``<conversation>-<expires>-<signature>``."""

    secret: str

    def make(self, conversation_id: int, expires: datetime) -> str:
        body = f"{conversation_id}-{int(expires.timestamp())}"
        return f"{body}-{self._sign(body)}"

    def read(self, token: str, now: datetime) -> int:
        """The conversation a valid token names; raises ``SurveyRefused`` otherwise."""
        parts = token.split("-")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise SurveyRefused("malformed token")
        body = f"{parts[0]}-{parts[1]}"
        if not hmac.compare_digest(self._sign(body), parts[2]):
            raise SurveyRefused("wrong signature")
        if int(parts[1]) < now.timestamp():
            raise SurveyRefused("expired")
        return int(parts[0])

    def _sign(self, body: str) -> str:
        return hmac.new(self.secret.encode(), body.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class PageState:
    """What the survey page shows: the conversation's language and its answer so far."""

    conversation_id: int
    language: str
    rating: int | None
    comment: str
    opted_out: bool


class Surveys:
    """Asks after a close, and records what customers answer on the page."""

    def __init__(
        self,
        settings: Settings,
        chat: ChatPort,
        senders: dict[ChannelKind, ReplySender],
        *,
        base_url: str = "",
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.survey = settings.survey
        self.chat = chat
        self.senders = senders
        self.base_url = base_url
        self.clock = clock
        self.tokens = Tokens(settings.survey.secret)

    def link(self, token: str, rating: int | None = None) -> str:
        base = f"{self.base_url.rstrip('/')}/survey/{token}"
        return base if rating is None else f"{base}?rating={rating}"

    def invite_text(self, language: str, token: str) -> str:
        t = texts_for(language)
        labels = t["labels"].split("|")
        lines = [t["ask"], "", t["scale"], ""]
        lines += [f"{stars(r)} {labels[r - 1]}: {self.link(token, r)}" for r in RATINGS]
        return "\n".join(lines)

    async def ask(self, job: Job) -> None:
        """Job ``ask_survey``: send the question, if the customer should get it."""
        conversation_id = ASK_SURVEY.payload_of(job).conversation_id
        conversation = await Conversation.get_or_none(id=conversation_id).prefetch_related(
            "identity", "customer"
        )
        if conversation is None:
            return
        why_not = self._why_not(conversation, conversation.customer)
        if (
            not why_not
            and not await Message.filter(
                conversation_id=conversation.id, direction=Direction.INBOUND, is_automated=False
            ).exists()
        ):
            why_not = "only automatic mail in it"  # answering that could start a mail loop
        existing = await Message.get_or_none(dedup_key=f"survey:{job.id}")
        if why_not and existing is None:
            log.info("no survey", extra={"conversation": conversation_id, "reason": why_not})
            return
        sender = self.senders.get(conversation.channel)
        if sender is None:
            return
        now = self.clock()
        # A retry signs anew (a later expiry): links of either try work.
        token = self.tokens.make(conversation.id, now + timedelta(days=self.survey.valid_days))
        if existing is None:
            async with in_transaction() as conn:
                existing = await Message.create(
                    conversation=conversation,
                    direction=Direction.OUTBOUND,
                    channel=conversation.channel,
                    dedup_key=f"survey:{job.id}",
                    sender_name=self.settings.email.support_name or "Switchboard",
                    text=self.invite_text(conversation.language, token),
                    subject=texts_for(conversation.language)["subject"],
                    delivery_state=DeliveryState.PENDING,
                    using_db=conn,
                )
                await (
                    Customer.filter(id=conversation.customer.id)
                    .using_db(conn)
                    .update(surveyed_at=now)
                )
        if existing.delivery_state is DeliveryState.SENT:
            return
        invite = SurveyInvite(
            intro=texts_for(conversation.language)["ask"],
            links=tuple((r, self.link(token, r)) for r in RATINGS),
        )
        reply = await survey_reply(existing, conversation, invite)
        existing.external_id = await sender.send(reply)
        existing.delivery_state = DeliveryState.SENT
        await existing.save(update_fields=["external_id", "delivery_state"])

    def _why_not(self, conversation: Conversation, customer: Customer) -> str:
        if not self.survey.enabled:
            return "surveys are off"
        if conversation.status is not ConversationStatus.CLOSED:
            return "reopened"
        if conversation.channel not in CHANNELS:
            return f"no surveys over {conversation.channel.value}"
        if conversation.skill in self.survey.skip_skills:
            return f"skill {conversation.skill} is not surveyed"
        if customer.survey_opt_out:
            return "the customer opted out"
        recent = self.clock() - timedelta(days=self.survey.ask_again_after_days)
        if customer.surveyed_at is not None and customer.surveyed_at > recent:
            return "asked recently"
        return ""

    async def page(self, token: str) -> PageState:
        """What the page shows for ``token``; raises ``SurveyRefused`` for a bad link."""
        conversation = await self._conversation(token)
        answer = await SurveyAnswer.get_or_none(conversation_id=conversation.id)
        return PageState(
            conversation.id,
            conversation.language,
            answer.rating if answer else None,
            answer.comment if answer else "",
            conversation.customer.survey_opt_out,
        )

    async def answer(
        self, token: str, rating: int | None, comment: str | None = None, opt_out: bool = False
    ) -> PageState:
        """Record a rating (a click) and/or a comment; the thread hears of a change once."""
        conversation = await self._conversation(token)
        if rating is not None and rating not in RATINGS:
            raise SurveyRefused("rating out of range")
        comment = None if comment is None else comment.strip()[:MAX_COMMENT]
        async with in_transaction() as conn:
            answer = (
                await SurveyAnswer.filter(conversation_id=conversation.id)
                .select_for_update()
                .using_db(conn)
                .first()
            )
            changed = False
            if answer is None and rating is not None:
                answer = await SurveyAnswer.create(
                    conversation=conversation, rating=rating, comment=comment or "", using_db=conn
                )
                changed = True
            elif answer is not None:
                if rating is not None and rating != answer.rating:
                    answer.rating, changed = rating, True
                if comment is not None and comment != answer.comment:
                    answer.comment, changed = comment, True
                if changed:
                    await answer.save(
                        using_db=conn, update_fields=["rating", "comment", "updated_at"]
                    )
            if opt_out and not conversation.customer.survey_opt_out:
                await (
                    Customer.filter(id=conversation.customer.id)
                    .using_db(conn)
                    .update(survey_opt_out=True)
                )
                conversation.customer.survey_opt_out = True
            if changed and answer is not None:
                entry = await AuditEntry.create(
                    conversation=conversation,
                    actor_id="",
                    actor_name="Customer",
                    action="rating",
                    detail={"rating": answer.rating, "commented": bool(answer.comment)},
                    summary=f"The customer rated this conversation {answer.rating} of 5.",
                    using_db=conn,
                )
                await SHOW_RATING.enqueue(
                    RatingPayload(entry.id, conversation.id), now=self.clock(), conn=conn
                )
        return PageState(
            conversation.id,
            conversation.language,
            answer.rating if answer else None,
            answer.comment if answer else "",
            conversation.customer.survey_opt_out,
        )

    async def show(self, job: Job) -> None:
        """Job ``show_rating``: the answer in the conversation's thread, as it is now."""
        payload = SHOW_RATING.payload_of(job)
        conversation = await Conversation.get_or_none(id=payload.conversation_id)
        answer = await SurveyAnswer.get_or_none(conversation_id=payload.conversation_id)
        if conversation is None or answer is None:
            return
        if not (conversation.chat_channel and conversation.chat_thread_ts):
            return
        marker = f"audit-{payload.audit_id}"
        channel, thread = conversation.chat_channel, conversation.chat_thread_ts
        if job.attempts > 1 and await self.chat.find_post(channel, thread, marker) is not None:
            return
        await self.chat.post_rating(channel, thread, answer.rating, answer.comment, marker=marker)

    async def _conversation(self, token: str) -> Conversation:
        conversation_id = self.tokens.read(token, self.clock())
        conversation = await Conversation.get_or_none(id=conversation_id).prefetch_related(
            "customer"
        )
        if conversation is None:
            raise SurveyRefused("the conversation is gone")
        return conversation


async def survey_reply(
    message: Message, conversation: Conversation, invite: SurveyInvite
) -> OutboundReply:
    """The survey as a reply on the conversation's channel (threaded like the team's replies)."""
    from bot.pipeline import outbound_reply

    return replace(await outbound_reply(message, conversation), survey=invite)


class AskSurvey:
    """Job handler for ``ask_survey``."""

    def __init__(self, surveys: Surveys) -> None:
        self.surveys = surveys

    async def run(self, job: Job) -> None:
        await self.surveys.ask(job)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not send a survey", extra={"job": job.id, "reason": reason})


class ShowRating:
    """Job handler for ``show_rating``."""

    def __init__(self, surveys: Surveys) -> None:
        self.surveys = surveys

    async def run(self, job: Job) -> None:
        await self.surveys.show(job)

    async def give_up(self, job: Job, reason: str) -> None:
        log.error("could not show a rating", extra={"job": job.id, "reason": reason})
