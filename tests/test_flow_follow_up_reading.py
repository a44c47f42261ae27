"""Follow-ups are read as the first message is: a confident mood goes on the card with the
number of the message it was read from, and a pressing follow-up raises the priority."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from adapters.slack.render import ordinal
from bot.shapes import InboundMessage, Priority, Triage
from models import MessageVector
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import SettingsFactory, running
from tests.test_flow_commands import card_text, root_of, thread_texts
from tests.test_flow_priority_rules import write


def _vector(text: str) -> bytes:
    """A unit vector that differs per text, as an encoder's would."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:4]))
    vector = rng.standard_normal(8).astype(np.float32)
    return (vector / np.linalg.norm(vector)).tobytes()


class MoodTriage:
    """Reads "!!" as anger, "danke" as gratitude, and "is down" as urgent (an outage); nothing
    else with confidence. Counts what it encodes, for triage and for embeddings alike."""

    def __init__(self) -> None:
        self.encoded: list[str] = []

    async def triage(self, message: InboundMessage) -> Triage:
        text = message.text.lower()
        self.encoded.append(message.text)
        mood = "anger" if "!!" in text else "gratitude" if "danke" in text else ""
        urgent = "is down" in text
        return Triage(
            "general",
            1.0,
            Priority.URGENT if urgent else Priority.NORMAL,
            "urgent: outage" if urgent else "",
            language="de",
            sentiment=mood,
            vector=_vector(message.text),
        )

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        self.encoded.extend(texts)
        return [_vector(text) for text in texts]


async def test_an_angry_third_message_is_on_the_card_with_its_number(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay, classifier=MoodTriage()) as h:
        opened = await write(h, "Meine Rechnung ist doppelt abgebucht.", first=True)
        plain = await write(h, "Gibt es etwas Neues?")
        angry = await write(h, "Das ist jetzt das dritte Mal!! Unglaublich!!")
        angry_card = card_text(root_of(h, angry))
        unsure = await write(h, "Bitte melden Sie sich.")
        unsure_card = card_text(root_of(h, unsure))
        thanks = await write(h, "Danke, jetzt stimmt es.")
        thanks_card = card_text(root_of(h, thanks))

    # Nothing read with confidence yet: no mood on the card.
    assert (opened.sentiment, plain.sentiment) == ("", "")
    assert (angry.sentiment, angry.sentiment_message) == ("anger", 3)
    assert "de \\u00b7 anger, 3rd message" in angry_card
    # A follow-up read without confidence leaves the last reading, which names its message.
    assert (unsure.sentiment, unsure.sentiment_message) == ("anger", 3)
    assert "de \\u00b7 anger, 3rd message" in unsure_card
    assert (thanks.sentiment, thanks.sentiment_message) == ("gratitude", 5)
    assert "de \\u00b7 gratitude, 5th message" in thanks_card


async def test_a_follow_up_about_an_outage_raises_the_priority_and_says_why(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    async with running(make_settings, slack, relay, classifier=MoodTriage()) as h:
        await write(h, "Wie ändere ich meine Adresse?", first=True)
        raised = await write(h, "Update: the whole shop is down since this morning.")
        card = card_text(root_of(h, raised))
        texts = thread_texts(h, raised)

    assert raised.priority is Priority.URGENT
    assert raised.priority_reason == "urgent: outage in a follow-up"
    assert "urgent: outage in a follow-up" in card
    assert texts[-1] == "The priority rose from normal to urgent (outage in a follow-up)."


async def test_plain_and_automatic_follow_ups_raise_nothing_and_automatic_ones_are_not_read(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    classifier = MoodTriage()
    async with running(make_settings, slack, relay, classifier=classifier) as h:
        await write(h, "Wie ändere ich meine Adresse?", first=True)
        plain = await write(h, "Ich wohne jetzt in Köln.")
        auto = await write(h, "Out of office: the server is down!! Back Monday.", auto=True)

    assert plain.priority is auto.priority is Priority.NORMAL
    assert auto.sentiment == ""
    assert not any("out of office" in text.lower() for text in classifier.encoded)


async def test_a_follow_up_is_encoded_once_for_its_reading_and_its_vector(
    make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    classifier = MoodTriage()
    async with running(make_settings, slack, relay, classifier=classifier) as h:
        await write(h, "Meine Rechnung ist doppelt abgebucht.", first=True)
        conversation = await write(h, "Gibt es etwas Neues?")
        stored = await MessageVector.filter(conversation_id=conversation.id).order_by("message_id")

    (read,) = [text for text in classifier.encoded if "Gibt es etwas Neues?" in text]
    assert len(stored) == 2
    # The follow-up's vector is its reading's: it was not encoded a second time to store it.
    assert bytes(stored[1].vector) == _vector(read)


def test_message_numbers_read_as_english_ordinals() -> None:
    numbers = (2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112)
    assert [ordinal(n) for n in numbers] == [
        "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st", "111th",
        "112th",
    ]  # fmt: skip
