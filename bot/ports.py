"""The interfaces between the core and the edges.

Each is a small structural ``Protocol``: an adapter (or a test fake) satisfies it without
inheriting anything, and mypy checks that it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bot.shapes import (
    Attachment,
    ConversationCard,
    CustomerPost,
    DeliveryState,
    InboundMessage,
    OutboundReply,
    SpikeAlert,
    ThreadErasure,
    Triage,
)


class ChatPort(Protocol):
    """Where conversations are shown and answered (Slack).

    Every post carries ``marker`` (our own id for it) so that a retry after a crash can find an
    earlier post with ``find_post`` instead of posting twice.
    """

    async def channel_id(self, name: str) -> str:
        """The id of the channel called ``name`` (events name channels by id)."""
        ...

    async def post_root(self, chat_channel: str, card: ConversationCard, *, marker: str) -> str:
        """Post the root message of a conversation; returns its ts."""
        ...

    async def update_root(self, chat_channel: str, ts: str, card: ConversationCard) -> None:
        """Redraw a root message in place."""
        ...

    async def post_in_thread(
        self, chat_channel: str, thread_ts: str, post: CustomerPost, *, marker: str
    ) -> str:
        """Post a customer's message in a thread; returns its ts."""
        ...

    async def upload_files(
        self, chat_channel: str, thread_ts: str, attachments: Sequence[Attachment]
    ) -> None:
        """Upload files into a thread."""
        ...

    async def post_notice(
        self, chat_channel: str, thread_ts: str, text: str, *, marker: str = ""
    ) -> str:
        """Post a short notice of ours in a thread (a failure reason, a pointer).

        With ``marker``, a retry can find the notice with ``find_post``.
        """
        ...

    async def post_rating(
        self, chat_channel: str, thread_ts: str, rating: int, comment: str, *, marker: str
    ) -> str:
        """Post a customer's rating (1 to 5) and comment in the thread, escaped."""
        ...

    async def permalink(self, chat_channel: str, ts: str) -> str:
        """A link people can open to the message ``ts``."""
        ...

    def mention(self, user_id: str) -> str:
        """How a post names a person so that they are notified."""
        ...

    async def find_post(self, chat_channel: str, thread_ts: str | None, marker: str) -> str | None:
        """The ts of an earlier post of ours carrying ``marker``, if there is one."""
        ...

    async def show_delivery(self, chat_channel: str, ts: str, state: DeliveryState) -> None:
        """Show the delivery state of an agent's reply on their message."""
        ...

    async def offer_undo(
        self, chat_channel: str, thread_ts: str, user_id: str, undo_token: str, seconds: float
    ) -> None:
        """Tell the agent (only them) the reply goes out in ``seconds``, with an Undo button.

        Pressing it hands ``undo_token`` back to ``Relay.undo``.
        """
        ...

    async def erase_thread(self, chat_channel: str, thread_ts: str, note: str) -> ThreadErasure:
        """Replace each of our posts in a thread (the root included) by ``note``.

        Files we uploaded there are deleted; messages people wrote are counted and left. Safe
        to repeat: posts already showing ``note`` are not changed again, and a thread that no
        longer exists has nothing to erase.
        """
        ...

    async def check(self) -> None:
        """Raise ``DeliveryError`` if the chat service is not reachable."""
        ...

    async def direct_channel(self, user_id: str) -> str:
        """The id of the app's direct-message channel with ``user_id`` (opened if need be)."""
        ...

    async def post_message(self, chat_channel: str, text: str, *, marker: str) -> str:
        """Post our own text at the top of a channel (an alert); returns its ts.

        A retry can find it with ``find_post(chat_channel, None, marker)``.
        """
        ...

    async def post_spike(self, chat_channel: str, alert: SpikeAlert, *, marker: str) -> str:
        """Post a spike's alert at the top of a channel, with its "link all" button; its ts.

        A retry can find it with ``find_post(chat_channel, None, marker)``.
        """
        ...

    async def post_agent_copy(
        self, chat_channel: str, thread_ts: str, author_name: str, text: str
    ) -> str:
        """Post, in a thread, a reply an agent wrote outside it (a modal); returns its ts.

        The text is shown as written, escaped: it may carry a customer's name.
        """
        ...


class ReplySender(Protocol):
    """Sends an agent's reply to a customer over one channel.

    ``send`` returns the channel's id for what it sent (an e-mail Message-ID, a Telegram message
    id). It is called again with the same reply after a crash, so it must derive everything it
    sends from ``reply`` (an e-mail keeps the same Message-ID). Raises
    ``TransientDeliveryError`` (retried with backoff) or ``PermanentDeliveryError``.
    """

    async def send(self, reply: OutboundReply) -> str: ...


class EventSender(Protocol):
    """Posts an event (a rule's call) to an outside system as signed JSON.

    Raises ``TransientDeliveryError`` (retried with backoff) or ``PermanentDeliveryError``.
    """

    async def send_event(self, url: str, secret: str, body: dict[str, object]) -> None: ...


class TeamDirectory(Protocol):
    """Who is in a team and whether they can take a conversation now (Slack)."""

    async def group_members(self, usergroup: str) -> tuple[str, ...]:
        """The user ids of a user group (``S…``), in the group's order."""
        ...

    async def is_away(self, user_id: str) -> bool:
        """Whether the person's presence is away."""
        ...

    async def status(self, user_id: str) -> tuple[str, str]:
        """The person's custom status: its text and emoji (``":palm_tree:"``)."""
        ...


class Classifier(Protocol):
    """Tags a message with skill, priority, language and sentiment."""

    async def triage(self, message: InboundMessage) -> Triage: ...


@runtime_checkable
class Learner(Protocol):
    """A classifier that learns from the team (a lead's reassignment, an admin's example)."""

    async def learn(self, skill: str, text: str) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors (float32 bytes, L2-normalised), the triage encoder's."""

    async def embed(self, texts: Sequence[str]) -> list[bytes]: ...
