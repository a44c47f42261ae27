"""What Switchboard stores: customers, conversations, messages, skills and jobs.

Schema changes go through migrations in models/migrations (``switchboard migrate`` applies
them; ``tortoise makemigrations`` writes new ones from these classes).
"""

from __future__ import annotations

import enum

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model

from bot.shapes import ChannelKind, DeliveryState, Priority


class Direction(enum.StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


class ConversationStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class JobState(enum.StrEnum):
    """Where a job is; see bot/jobs.py for how it moves."""

    #: The oldest unfinished job of its serial key: claimed once ``run_at`` is due.
    PENDING = "pending"
    #: Behind an unfinished job with the same serial key; pending once that one ends.
    QUEUED = "queued"
    RUNNING = "running"
    #: Waiting on something a person fixes or that passes (a token, a channel, an outage);
    #: tried again every ``park_retry_seconds`` and at once when the cause is gone.
    PARKED = "parked"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: States of a job that is not finished: it holds up the later jobs of its serial key.
UNFINISHED = (JobState.PENDING, JobState.QUEUED, JobState.RUNNING, JobState.PARKED)


class Customer(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=255, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    #: The customer asked not to get satisfaction surveys (the link on the survey page).
    # db_default: the column is added to existing rows without rewriting the table.
    survey_opt_out = fields.BooleanField(default=False, db_default=False)
    #: When they were last asked for a rating (asked at most once in ``ask_again_after_days``).
    surveyed_at = fields.DatetimeField(null=True)

    identities: fields.ReverseRelation[Identity]
    conversations: fields.ReverseRelation[Conversation]

    class Meta:
        table = "customers"


class Identity(Model):
    """One way to reach a customer: an e-mail address, a Telegram user, a webhook sender."""

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="identities", on_delete=fields.CASCADE
    )
    channel = fields.CharEnumField(ChannelKind, max_length=16)
    address = fields.CharField(max_length=320)
    display_name = fields.CharField(max_length=255, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "identities"
        unique_together = (("channel", "address"),)
        indexes = (
            Index(fields=("customer_id",), name="idx_identities_customer"),
            Index(fields=("address",), name="idx_identities_address"),
        )


class Skill(Model):
    """A kind of request (billing, technical, ...) and the Slack channel that answers it."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    chat_channel = fields.CharField(max_length=128)
    description = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "skills"


class SkillExample(Model):
    """A labelled example for triage: from the config, a reassignment or a confirmation."""

    id = fields.IntField(primary_key=True)
    skill = fields.CharField(max_length=64, db_index=True)
    text = fields.TextField()
    source = fields.CharField(max_length=32, default="config")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "skill_examples"


class Conversation(Model):
    id = fields.IntField(primary_key=True)
    token = fields.CharField(max_length=16, unique=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="conversations", on_delete=fields.CASCADE
    )
    identity: fields.ForeignKeyRelation[Identity] = fields.ForeignKeyField(
        "models.Identity", related_name="conversations", on_delete=fields.CASCADE
    )
    channel = fields.CharEnumField(ChannelKind, max_length=16)
    thread_key = fields.CharField(max_length=255, null=True, db_index=True)
    subject = fields.CharField(max_length=998, default="")
    normalised_subject = fields.CharField(max_length=998, default="", db_index=True)
    skill = fields.CharField(max_length=64, default="")
    priority = fields.CharEnumField(Priority, max_length=16, default=Priority.NORMAL)
    priority_reason = fields.CharField(max_length=255, default="")
    language = fields.CharField(max_length=16, default="")
    sentiment = fields.CharField(max_length=16, default="")
    #: Which of the customer's messages ``sentiment`` was read from: 2 for the first follow-up
    #: (0 or 1: the opening message). A follow-up read with confidence replaces the reading.
    sentiment_message = fields.IntField(default=0, db_default=0)
    confidence = fields.FloatField(default=0.0)
    status = fields.CharEnumField(ConversationStatus, max_length=16, default="open")
    owner = fields.CharField(max_length=64, default="")
    chat_channel = fields.CharField(max_length=128, null=True)
    chat_thread_ts = fields.CharField(max_length=32, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    last_inbound_at = fields.DatetimeField(null=True)
    snoozed_until = fields.DatetimeField(null=True)
    #: Tags a rule added, comma-separated.
    # db_default: the column is added to existing rows without rewriting the table.
    tags = fields.CharField(max_length=255, default="", db_default="")
    # Facts the reports read (bot/reports.py), stored when they happen. Times are working time
    # of the conversation's team (its business hours once [sla] has them, else wall time).
    #: When the first agent reply reached the customer, and how long after the first message.
    first_reply_at = fields.DatetimeField(null=True)
    first_reply_seconds = fields.IntField(null=True)
    #: When it was last closed, and how long after the customer's first message.
    closed_at = fields.DatetimeField(null=True)
    resolution_seconds = fields.IntField(null=True)

    messages: fields.ReverseRelation[Message]

    class Meta:
        table = "conversations"
        indexes = (
            ("chat_channel", "chat_thread_ts"),
            Index(fields=("customer_id", "id"), name="idx_conversations_customer"),
            Index(fields=("identity_id", "id"), name="idx_conversations_identity"),
            Index(fields=("status", "skill"), name="idx_conversations_status_skill"),
            Index(fields=("status", "updated_at"), name="idx_conversations_status_updated"),
            Index(fields=("created_at",), name="idx_conversations_created"),
            Index(fields=("first_reply_at",), name="idx_conversations_first_reply"),
            Index(fields=("closed_at",), name="idx_conversations_closed"),
        )


class Message(Model):
    """One message in a conversation, either way.

    An inbound message is stored before it is threaded (``conversation`` is None until its
    thread job has run); ``thread_key`` and ``conversation_token`` are what threading reads.
    ``dedup_key`` makes intake idempotent (``email:<Message-ID>``, ``slack:<channel>:<ts>``).
    ``external_id`` is the id the outside system gave the message (our outbound e-mail's
    Message-ID); ``chat_ts`` is where it is shown in Slack.
    """

    id = fields.IntField(primary_key=True)
    conversation: fields.ForeignKeyNullableRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="messages", on_delete=fields.CASCADE, null=True
    )
    thread_key = fields.CharField(max_length=255, null=True)
    conversation_token = fields.CharField(max_length=16, null=True)
    direction = fields.CharEnumField(Direction, max_length=8)
    channel = fields.CharEnumField(ChannelKind, max_length=16)
    dedup_key = fields.CharField(max_length=512, unique=True, null=True)
    external_id = fields.CharField(max_length=998, null=True, db_index=True)
    sender_name = fields.CharField(max_length=255, default="")
    sender_address = fields.CharField(max_length=320, default="")
    author_id = fields.CharField(max_length=64, default="")
    subject = fields.CharField(max_length=998, default="")
    text = fields.TextField(default="")
    full_text = fields.TextField(default="")
    replies_to = fields.JSONField[list[str]](default=list)
    raw_source = fields.BinaryField(null=True)
    is_automated = fields.BooleanField(default=False)
    automated_reason = fields.CharField(max_length=255, default="")
    chat_ts = fields.CharField(max_length=32, null=True)
    chat_files_posted = fields.BooleanField(default=False)
    delivery_state = fields.CharEnumField(DeliveryState, max_length=16, null=True)
    delivery_error = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    #: An outbound template message (WhatsApp): ``{"name", "language", "parameters"}``.
    template = fields.JSONField[dict[str, object]](null=True)
    #: What the sender says is theirs (``[["phone", "+49..."], ["email", "a@b.example"]]``).
    claims = fields.JSONField[list[list[str]]](null=True)
    #: An agent's reply: how long (working time) the customer had waited when it was sent;
    #: None for a reply that followed another one (nobody was waiting).
    response_seconds = fields.IntField(null=True)

    attachments: fields.ReverseRelation[StoredAttachment]

    class Meta:
        table = "messages"
        indexes = (
            Index(fields=("conversation_id", "id"), name="idx_messages_conversation"),
            Index(fields=("chat_ts",), name="idx_messages_chat_ts"),
            Index(fields=("created_at",), name="idx_messages_created"),
        )


class StoredAttachment(Model):
    id = fields.IntField(primary_key=True)
    message: fields.ForeignKeyRelation[Message] = fields.ForeignKeyField(
        "models.Message", related_name="attachments", on_delete=fields.CASCADE
    )
    filename = fields.CharField(max_length=255)
    content_type = fields.CharField(max_length=255)
    size = fields.IntField()
    data = fields.BinaryField()

    class Meta:
        table = "attachments"
        indexes = (Index(fields=("message_id",), name="idx_attachments_message"),)


class Job(Model):
    """A step of work after intake, retried with backoff until done (kinds: bot/jobkinds.py).

    Jobs with the same ``serial_key`` run one at a time, oldest first, so the messages of one
    conversation reach Slack (and the customer) in order. ``locked_by`` is the claim token of
    the worker running it; ``conversation_id`` is the conversation it is about, if any.
    """

    id = fields.BigIntField(primary_key=True)
    kind = fields.CharField(max_length=32)
    payload = fields.JSONField[dict[str, object]](default=dict)
    serial_key = fields.CharField(max_length=64, db_index=True)
    conversation_id = fields.IntField(null=True, db_index=True)
    state = fields.CharEnumField(JobState, max_length=16, default=JobState.PENDING)
    run_at = fields.DatetimeField()
    attempts = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)
    locked_by = fields.CharField(max_length=64, default="")
    last_error = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "jobs"
        indexes = (
            ("state", "run_at"),
            ("serial_key", "state"),
            ("state", "updated_at"),
            # The claim's order (run_at, then id) read straight off the index, however many
            # jobs came due at the same moment.
            Index(fields=("state", "run_at", "id"), name="idx_jobs_claim"),
        )


class FormerThread(Model):
    """A Slack thread a conversation was shown in before a lead moved it elsewhere.

    Links to its messages still name the conversation, and an agent who writes there is told
    where the conversation went.
    """

    id = fields.IntField(primary_key=True)
    conversation: fields.ForeignKeyRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="former_threads", on_delete=fields.CASCADE
    )
    chat_channel = fields.CharField(max_length=128)
    chat_thread_ts = fields.CharField(max_length=32)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "former_threads"
        unique_together = (("chat_channel", "chat_thread_ts"),)
        indexes = (Index(fields=("conversation_id",), name="idx_former_threads_conversation"),)


class AuditEntry(Model):
    """One change a person made (who, what, when), shown in the thread of its conversation.

    ``action`` is a word like ``assign`` or ``reassign``; ``detail`` its arguments, and
    ``summary`` the sentence people read ("Anna moved this to #billing").
    """

    id = fields.IntField(primary_key=True)
    conversation: fields.ForeignKeyNullableRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="audit_entries", on_delete=fields.CASCADE, null=True
    )
    actor_id = fields.CharField(max_length=64)
    actor_name = fields.CharField(max_length=255, default="")
    action = fields.CharField(max_length=32)
    detail = fields.JSONField[dict[str, object]](default=dict)
    summary = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "audit_entries"
        indexes = (Index(fields=("conversation_id", "id"), name="idx_audit_entries_conversation"),)


class AgentName(Model):
    """The name the replies of an agent go out under, set by an admin over the Slack profile."""

    id = fields.IntField(primary_key=True)
    user_id = fields.CharField(max_length=64, unique=True)
    display_name = fields.CharField(max_length=255)
    set_by = fields.CharField(max_length=64, default="")
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "agent_names"


class SentPart(Model):
    """One message a channel reported back on: a part of an agent's reply, with its own id.

    A reply split into several WhatsApp messages has one row per message id (``wamid``), so a
    delivery status names the reply it belongs to. ``state`` is the furthest status heard.
    """

    id = fields.IntField(primary_key=True)
    message: fields.ForeignKeyRelation[Message] = fields.ForeignKeyField(
        "models.Message", related_name="sent_parts", on_delete=fields.CASCADE
    )
    channel = fields.CharEnumField(ChannelKind, max_length=16)
    external_id = fields.CharField(max_length=255)
    state = fields.CharEnumField(DeliveryState, max_length=16, default=DeliveryState.SENT)
    error = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "sent_parts"
        unique_together = (("channel", "external_id"),)
        indexes = (Index(fields=("message_id",), name="idx_sent_parts_message"),)


class CustomerDetail(Model):
    """A fact about a customer beyond the ways they wrote: a phone number, a company, ...

    ``evidence`` facts came from the customer themselves (their own Telegram contact, the
    e-mail a widget sent): they link identities. Others were confirmed by an agent from a
    suggestion (an e-mail signature); ``source`` says where each came from.
    """

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="details", on_delete=fields.CASCADE
    )
    kind = fields.CharField(max_length=32)
    value = fields.CharField(max_length=512)
    source = fields.CharField(max_length=255, default="")
    evidence = fields.BooleanField(default=False)
    confirmed_by = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "customer_details"
        indexes = (
            Index(fields=("customer_id",), name="idx_customer_details_customer"),
            Index(fields=("kind", "value"), name="idx_customer_details_value"),
        )


class CustomerLink(Model):
    """Two customers joined into one person, by evidence or by a lead, undone by ``unlink``.

    ``identity_ids`` and ``conversation_ids`` are what moved into ``customer``, from the
    customer that was called ``former_name``.
    """

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="links", on_delete=fields.CASCADE
    )
    identity_ids = fields.JSONField[list[int]](default=list)
    conversation_ids = fields.JSONField[list[int]](default=list)
    former_name = fields.CharField(max_length=255, default="")
    reason = fields.CharField(max_length=255, default="")
    actor_id = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    undone_at = fields.DatetimeField(null=True)

    class Meta:
        table = "customer_links"
        indexes = (Index(fields=("customer_id",), name="idx_customer_links_customer"),)


class SlaClock(Model):
    """A deadline running for an open conversation: its first reply, next reply or resolution.

    Times are working time of the conversation's team (bot/businesstime.py). While the clock
    runs, ``remaining_seconds`` is what was left at ``running_since`` and ``due_at`` when it
    runs out; while it is paused (snoozed, or waiting on the customer) ``running_since`` and
    ``due_at`` are empty. A clock is deleted when it is met or its conversation closes, so the
    table holds at most three rows per open conversation.
    """

    id = fields.IntField(primary_key=True)
    conversation: fields.ForeignKeyRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="sla_clocks", on_delete=fields.CASCADE
    )
    target = fields.CharField(max_length=16)
    target_seconds = fields.IntField()
    remaining_seconds = fields.IntField()
    running_since = fields.DatetimeField(null=True)
    due_at = fields.DatetimeField(null=True)
    #: "" until the warning went out, then "warned", then "breached".
    stage = fields.CharField(max_length=8, default="")
    #: The audit entry that recorded the breach: its overrun is filled in when the clock ends.
    breach_audit_id = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "sla_clocks"
        unique_together = (("conversation_id", "target"),)
        indexes = (Index(fields=("due_at",), name="idx_sla_clocks_due"),)


class MessageVector(Model):
    """A customer message's embedding (float32 bytes), stored once by the triage job.

    ``id`` orders the rows as they were added: each replica's index reads what is newer than
    its high-water mark. The other columns are what a search filters on. The key to the
    message makes a vector stored while its message is being forgotten go with it.
    """

    id = fields.BigIntField(primary_key=True)
    message: fields.OneToOneRelation[Message] = fields.OneToOneField(
        "models.Message", related_name="vector", on_delete=fields.CASCADE
    )
    message_id: int
    conversation_id = fields.IntField()
    skill = fields.CharField(max_length=64, default="")
    language = fields.CharField(max_length=16, default="")
    vector = fields.BinaryField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "message_vectors"
        indexes = (Index(fields=("conversation_id",), name="idx_message_vectors_conversation"),)


class VectorRemoval(Model):
    """A vector that was deleted (forget, retention): every replica drops it from its index."""

    id = fields.BigIntField(primary_key=True)
    message_id = fields.IntField()
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "vector_removals"


class TextBlock(Model):
    """A canned answer of the team, in German and English, for one skill or for all."""

    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=128, unique=True)
    skill = fields.CharField(max_length=64, default="")
    text_de = fields.TextField(default="")
    text_en = fields.TextField(default="")
    updated_by = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "text_blocks"


class SuggestionEvent(Model):
    """A suggestion offered to an agent, or used by one (``used_message_id``: the reply sent).

    ``source`` is ``block:<id>`` or ``reply:<message id>``.
    """

    id = fields.IntField(primary_key=True)
    conversation_id = fields.IntField(db_index=True)
    agent_id = fields.CharField(max_length=64)
    source = fields.CharField(max_length=64)
    action = fields.CharField(max_length=16)
    used_message_id = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "suggestion_events"


class KnownProblem(Model):
    """A problem many customers write about ("payment provider outage"), named by a lead."""

    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=128, unique=True)
    link = fields.CharField(max_length=512, default="")
    created_by = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    links: fields.ReverseRelation[ProblemLink]

    class Meta:
        table = "known_problems"


class ProblemLink(Model):
    """A conversation a lead linked to a known problem."""

    id = fields.IntField(primary_key=True)
    conversation_id = fields.IntField(unique=True)
    problem: fields.ForeignKeyRelation[KnownProblem] = fields.ForeignKeyField(
        "models.KnownProblem", related_name="links", on_delete=fields.CASCADE
    )
    created_by = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "problem_links"
        indexes = (Index(fields=("problem_id",), name="idx_problem_links_problem"),)


class SurveyAnswer(Model):
    """A customer's rating (1 to 5) of a closed conversation, with an optional comment.

    One per conversation: answering again changes it, it never counts twice.
    """

    id = fields.IntField(primary_key=True)
    conversation: fields.ForeignKeyRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="survey_answers", on_delete=fields.CASCADE
    )
    rating = fields.IntField()
    comment = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "survey_answers"
        unique_together = (("conversation_id",),)
        indexes = (Index(fields=("created_at",), name="idx_survey_answers_created"),)


class Spike(Model):
    """Messages about one thing arriving far above their usual rate: one alert while it lasts.

    ``centroid_id`` is the message whose check found the spike, ``example_ids`` the messages
    the alert shows (the centroid first), ``member_ids`` every message found to be about it. A
    later message alike to one of its members joins it. The spike is open (``ended_at`` None)
    until no message of it came at spike pace for a whole window. Only message ids are kept:
    what the messages say stays with them, and goes when a customer is forgotten.
    """

    id = fields.IntField(primary_key=True)
    centroid_id = fields.IntField(unique=True)
    example_ids = fields.JSONField[list[int]](default=list)
    #: The messages found to be about it (a lead links their conversations with one button).
    member_ids = fields.JSONField[list[int]](default=list)
    #: How many conversations of the topic the window held when the spike was found, then its
    #: peak, and how many it would have held at the topic's usual share of the traffic.
    count = fields.IntField(default=0)
    usual = fields.FloatField(default=0.0)
    started_at = fields.DatetimeField()
    last_seen_at = fields.DatetimeField()
    ended_at = fields.DatetimeField(null=True)
    #: Where the alert was posted, once it was.
    chat_channel = fields.CharField(max_length=32, default="")
    chat_ts = fields.CharField(max_length=32, default="")
    #: The known problem a lead linked the spike's conversations to.
    problem_id = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "spikes"
        indexes = (Index(fields=("ended_at",), name="idx_spikes_ended"),)
