"""Spike detection: a burst of one topic fires once; traffic rising for every topic does not.

Messages are stored with the times and vectors a test chooses: each topic is a direction in a
64-dimension space and its messages lie close to it, so "about the same thing" is exact here.
The checks run as the ``check_spike`` job runs them, through the real index.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from adapters.hnsw_index import HnswIndex
from bot.jobkinds import POST_SPIKE
from bot.settings import SpikeSettings, settings_from_toml
from bot.shapes import ChannelKind
from bot.similar import Similar
from bot.spikes import Spikes
from bot.vectors import MessageIndex, store_vector
from models import Conversation, Customer, Direction, Identity, Job, Message, Spike
from tests.test_settings import ENV, MINIMAL, problems_in

DIMENSIONS = 64
TOPICS = 30
#: A Saturday: two days of ordinary traffic, then Monday morning.
START = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
MONDAY_NINE = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@dataclass
class Traffic:
    """Customer messages of chosen topics at chosen times, each in a new conversation."""

    spikes: Spikes
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))
    centres: np.ndarray = field(init=False)
    customer: Customer | None = None
    identity: Identity | None = None
    numbers: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        centres = self.rng.normal(size=(TOPICS, DIMENSIONS))
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)

    def vector(self, topic: int) -> bytes:
        noisy = self.centres[topic] + self.rng.normal(scale=0.06, size=DIMENSIONS)
        return bytes((noisy / np.linalg.norm(noisy)).astype(np.float32).tobytes())

    async def arrive(
        self, topic: int, at: datetime, *, conversation: Conversation | None = None
    ) -> Message:
        """A customer's message about ``topic`` at ``at`` (a new conversation unless given)."""
        if self.customer is None or self.identity is None:
            self.customer = await Customer.create(name="Kunde")
            self.identity = await Identity.create(
                customer=self.customer, channel=ChannelKind.EMAIL, address="k@kunde.example"
            )
        if conversation is None:
            conversation = await Conversation.create(
                token=f"T{next(self.numbers):07d}",
                customer=self.customer,
                identity=self.identity,
                channel=ChannelKind.EMAIL,
                skill="billing" if topic % 2 else "technical",
            )
        message = await Message.create(
            conversation=conversation,
            direction=Direction.INBOUND,
            channel=ChannelKind.EMAIL,
            text=f"topic {topic}",
            created_at=at,
        )
        await store_vector(message.id, conversation.id, self.vector(topic), skill="billing")
        return message

    async def arrive_and_check(self, topic: int, at: datetime) -> Spike | None:
        message = await self.arrive(topic, at)
        return await self.spikes.check(message.id)


def ordinary_topic(rng: np.random.Generator) -> int:
    """Ordinary traffic: a few topics are common (topic 0 is over a quarter), most are rare."""
    weights = np.array([30.0, 10.0, 8.0, 6.0] + [2.0] * (TOPICS - 5) + [0.0])
    return int(rng.choice(TOPICS, p=weights / weights.sum()))


async def steady(
    traffic: Traffic, start: datetime, hours: float, per_hour: int, *, check: bool = True
) -> list[Spike]:
    """Ordinary traffic at ``per_hour``, each message checked unless not ``check``; the spikes
    it opened."""
    opened = []
    count = int(hours * per_hour)
    for n in range(count):
        at = start + timedelta(hours=hours) * n / count
        topic = ordinary_topic(traffic.rng)
        if not check:
            await traffic.arrive(topic, at)
        elif (spike := await traffic.arrive_and_check(topic, at)) is not None:
            opened.append(spike)
    return opened


@pytest.fixture
async def traffic(db: str) -> Traffic:
    index = MessageIndex(HnswIndex)
    await index.load()
    settings = SpikeSettings(enabled=True, channel="support-leads")
    return Traffic(Spikes(index, settings, Similar(index)))


async def test_ordinary_traffic_and_a_monday_peak_never_fire(traffic: Traffic) -> None:
    # Two quiet days at 10 messages an hour, then Monday from 9 to 11 at five times that.
    assert await steady(traffic, START, 57, 10) == []
    assert await steady(traffic, MONDAY_NINE, 2, 50) == []

    assert not await Spike.exists()
    # The common topic alone had more than the minimum in a Monday hour: a count would have
    # fired, its share of the traffic did not.
    hours = [MONDAY_NINE, MONDAY_NINE + timedelta(hours=1), MONDAY_NINE + timedelta(hours=2)]
    busiest = max(
        [
            await Message.filter(created_at__gte=start, created_at__lt=end, text="topic 0").count()
            for start, end in itertools.pairwise(hours)
        ]
    )
    assert busiest >= traffic.spikes.settings.min_messages


async def test_a_burst_of_one_topic_fires_once_within_minutes(traffic: Traffic) -> None:
    await steady(traffic, START, 57, 10, check=False)
    burst_start = MONDAY_NINE
    opened: list[tuple[int, Spike]] = []
    # Fifteen complaints about a topic seen never before, one a minute, amid Monday's traffic.
    for minute in range(15):
        at = burst_start + timedelta(minutes=minute)
        spike = await traffic.arrive_and_check(TOPICS - 1, at)
        if spike is not None:
            opened.append((minute, spike))
        for extra in range(3):
            await traffic.arrive_and_check(
                ordinary_topic(traffic.rng), at + timedelta(seconds=15 * (extra + 1))
            )

    ((minute, spike),) = opened
    assert minute == traffic.spikes.settings.min_messages - 1  # the tenth complaint
    assert spike.count == traffic.spikes.settings.min_messages
    assert spike.usual < 1
    assert len(spike.example_ids) == 3
    await spike.refresh_from_db()
    assert len(spike.member_ids) == 15  # the later ones joined it without a new alert
    assert spike.ended_at is None
    assert await Job.filter(kind=POST_SPIKE.name).count() == 1


async def test_a_spike_over_for_a_window_alerts_again_when_the_topic_rises_again(
    traffic: Traffic,
) -> None:
    await steady(traffic, START, 57, 10, check=False)
    for minute in range(12):
        await traffic.arrive_and_check(TOPICS - 1, MONDAY_NINE + timedelta(minutes=minute))
    assert await Spike.filter(ended_at=None).count() == 1

    later = MONDAY_NINE + timedelta(hours=3)
    await steady(traffic, MONDAY_NINE + timedelta(minutes=15), 2.5, 10, check=False)
    for minute in range(12):
        await traffic.arrive_and_check(TOPICS - 1, later + timedelta(minutes=minute))

    assert await Spike.filter(ended_at__not_isnull=True).count() == 1
    assert await Spike.filter(ended_at=None).count() == 1
    assert await Job.filter(kind=POST_SPIKE.name).count() == 2


async def test_one_customer_writing_many_times_is_not_a_spike(traffic: Traffic) -> None:
    await steady(traffic, START, 57, 10, check=False)
    first = await traffic.arrive(TOPICS - 1, MONDAY_NINE)
    conversation = await Conversation.get(messages__id=first.id)
    for minute in range(1, 15):
        message = await traffic.arrive(
            TOPICS - 1, MONDAY_NINE + timedelta(minutes=minute), conversation=conversation
        )
        assert await traffic.spikes.check(message.id) is None
    assert not await Spike.exists()


def test_spike_alerts_are_on_when_a_leads_channel_is_set() -> None:
    assert not settings_from_toml(MINIMAL, ENV).spikes.enabled
    with_sla = settings_from_toml(MINIMAL + '[sla]\nleads_channel = "#support-leads"\n', ENV)
    assert with_sla.spikes.enabled
    assert with_sla.spikes.channel == "support-leads"
    own = settings_from_toml(MINIMAL + '[spikes]\nchannel = "hotspots"\nratio = 3\n', ENV)
    assert (own.spikes.enabled, own.spikes.channel, own.spikes.ratio) == (True, "hotspots", 3.0)
    off = settings_from_toml(MINIMAL + '[spikes]\nchannel = "hotspots"\nenabled = false\n', ENV)
    assert not off.spikes.enabled


@pytest.mark.parametrize(
    ("extra", "setting", "hint"),
    [
        ("[spikes]\nenabled = true\n", "spikes.enabled", "sla.leads_channel"),
        ('[spikes]\nchannel = "x"\nwindow_minutes = 2\n', "spikes.window_minutes", "5 to 1440"),
        ('[spikes]\nchannel = "x"\nhistory_days = 0\n', "spikes.history_days", "1 to 90"),
        ('[spikes]\nchannel = "x"\nmin_messages = 1\n', "spikes.min_messages", "2 or more"),
        ('[spikes]\nchannel = "x"\nratio = 0.5\n', "spikes.ratio", "more than 1"),
        ('[spikes]\nchannel = "x"\nsimilarity = 65\n', "spikes.similarity", "between 0 and 1"),
        ('[spikes]\nchannel = "x"\nneighbours = 5\n', "spikes.neighbours", "10 to 2000"),
        ('[spikes]\nchannel = "x"\nwindow = 60\n', "spikes.window", "window_minutes"),
    ],
)
def test_a_wrong_spike_setting_is_named_with_its_fix(extra: str, setting: str, hint: str) -> None:
    named, problem = problems_in(MINIMAL + extra)
    assert named == setting
    assert hint in problem
