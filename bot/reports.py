"""Reports a lead can read: what came in, how fast the team answered, what waits, how it felt.

Every figure comes from facts stored when they happened, never from counters that reset:

- a conversation's start (``created_at``), channel, skill and sentiment (the latest mood read);
- its first reply (``first_reply_at``, and ``first_reply_seconds`` the customer waited);
- its last close (``closed_at``, and ``resolution_seconds`` from the first message);
- each agent reply (``response_seconds``: how long the customer had waited for it);
- deadline breaches (audit entries ``sla breach``, bot/deadlines.py).

Waiting times are working time of the conversation's team (``[sla]`` business hours), or wall
time without them. ``Facts`` stores them as replies go out and conversations close; a report
reads them over a period with indexed range queries (bench/reports.py times a year of history).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

from tortoise.expressions import Q
from tortoise.queryset import ValuesListQuery

from bot.businesstime import format_working
from bot.conversations import customer_waiting_since
from bot.errors import ActionRefused
from bot.jobs import Clock, utcnow
from bot.metrics import FIRST_RESPONSE_SECONDS, RESOLUTION_SECONDS
from bot.settings import Settings
from bot.shapes import SENT_STATES
from models import AuditEntry, Conversation, ConversationStatus, Direction, Message, SurveyAnswer

#: Ages of the open backlog: (label, up to this many hours).
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 4 h", 4),
    ("4-24 h", 24),
    ("1-3 days", 72),
    ("> 3 days", math.inf),
)
#: Periods longer than this are shown by the week.
WEEKLY_AFTER_DAYS = 92
#: The longest period one report covers.
MAX_DAYS = 400
USAGE = (
    "`report [today | week | month | YYYY-MM-DD..YYYY-MM-DD] [skill]`, "
    "e.g. `report week billing` or `report 2026-11-01..2026-11-30`"
)
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\s*\.\.\s*(\d{4}-\d{2}-\d{2})$")
PERIOD_WORDS = ("today", "week", "month")


@dataclass(frozen=True, slots=True)
class Period:
    """From ``start`` (inclusive) to ``end`` (exclusive), UTC; ``label`` says it in words."""

    start: datetime
    end: datetime
    label: str
    timezone: str

    @property
    def hourly(self) -> bool:
        """Short periods are shown by the hour, longer ones by the day (or week)."""
        return self.end - self.start <= timedelta(days=2)

    @property
    def weekly(self) -> bool:
        """Periods over a quarter are shown by the week (from Monday)."""
        return self.end - self.start > timedelta(days=WEEKLY_AFTER_DAYS)


def is_period(text: str) -> bool:
    return text.lower() in PERIOD_WORDS or _RANGE.match(text) is not None


def parse_period(text: str, now: datetime, timezone: str = "UTC") -> Period:
    """``today``, ``week`` (since Monday), ``month`` or ``2026-11-01..2026-11-30``, local time.

    Raises ``ActionRefused`` with the usage for anything else.
    """
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    word = text.strip().lower() or "week"
    midnight = datetime.combine(local.date(), time(), tzinfo=zone)
    if word == "today":
        return Period(_utc(midnight), now, f"today ({local:%a %d %b})", timezone)
    if word == "week":
        monday = midnight - timedelta(days=local.weekday())
        label = f"this week (since Monday {monday:%d %b})"
        return Period(_utc(monday), now, label, timezone)
    if word == "month":
        first = midnight.replace(day=1)
        return Period(_utc(first), now, f"this month ({local:%B %Y})", timezone)
    match = _RANGE.match(word)
    if match is None:
        raise ActionRefused(f"`{text}` is not a period. Use {USAGE}.")
    try:
        first_day, last_day = (date.fromisoformat(part) for part in match.groups())
    except ValueError as exc:
        raise ActionRefused(f"`{text}`: {exc}. Use {USAGE}.") from exc
    if last_day < first_day:
        raise ActionRefused(f"`{text}` ends before it starts: the earlier date goes first.")
    if (last_day - first_day).days >= MAX_DAYS:
        raise ActionRefused(f"`{text}` is longer than {MAX_DAYS} days: ask for less at once.")
    start = datetime.combine(first_day, time(), tzinfo=zone)
    end = datetime.combine(last_day + timedelta(days=1), time(), tzinfo=zone)
    label = f"{first_day:%d %b %Y} to {last_day:%d %b %Y}"
    return Period(_utc(start), min(_utc(end), now), label, timezone)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Spread:
    """How long something took: how often, the median and the 90th percentile (seconds)."""

    count: int = 0
    p50: float | None = None
    p90: float | None = None

    @classmethod
    def of(cls, seconds: Iterable[int | float | None]) -> Spread:
        values = sorted(float(s) for s in seconds if s is not None)
        if not values:
            return cls()
        return cls(len(values), percentile(values, 50), percentile(values, 90))


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of sorted values, interpolated between the nearest two."""
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class AgentFigures:
    """One agent over the period: conversations answered, replies, median wait they ended."""

    user_id: str
    conversations: int
    replies: int
    median_response: float | None


@dataclass(frozen=True, slots=True)
class BacklogRow:
    """Open conversations of a skill now, by age (``AGE_BUCKETS``)."""

    skill: str
    ages: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.ages)


@dataclass(frozen=True, slots=True)
class DeadlineFigures:
    """Deadlines over the period: first replies and closings on time, breaches by target."""

    first_replies: int
    first_replies_late: int
    resolutions: int
    resolutions_late: int
    breaches: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Satisfaction:
    """Survey answers given in the period: how many, the mean, each rating's count, comments."""

    answers: int
    average: float | None
    ratings: dict[int, int]
    #: The latest comments with their rating, newest first.
    comments: tuple[tuple[int, str], ...]


@dataclass(frozen=True, slots=True)
class Report:
    """The figures of one period (and skill, "" for all)."""

    period: Period
    skill: str
    business_hours: bool
    #: The start of each time bucket (an hour or a day), UTC.
    buckets: tuple[datetime, ...]
    opened: int
    customer_messages: int
    #: Conversations opened per bucket, by channel and by skill.
    by_channel: dict[str, tuple[int, ...]]
    by_skill: dict[str, tuple[int, ...]]
    first_response: Spread
    #: The first replies' median per bucket (None: no first reply then).
    first_response_by_bucket: tuple[float | None, ...]
    resolution: Spread
    deadlines: DeadlineFigures | None
    backlog: tuple[BacklogRow, ...]
    agents: tuple[AgentFigures, ...]
    #: Conversations opened, by the mood triage last read with confidence: the opening
    #: message's, or a later follow-up's ("" when it was never sure).
    sentiment: dict[str, int]
    satisfaction: Satisfaction

    def bucket_label(self, start: datetime) -> str:
        local = start.astimezone(ZoneInfo(self.period.timezone))
        if self.period.hourly:
            return f"{local:%a %H:00}"
        return f"week of {local:%d %b}" if self.period.weekly else f"{local:%a %d %b}"

    def rows(self) -> list[tuple[str, str, str, str]]:
        """Every figure as (figure, group, when, value): one CSV row each."""
        rows: list[tuple[str, str, str, str]] = [
            ("period_start", "", "", self.period.start.isoformat()),
            ("period_end", "", "", self.period.end.isoformat()),
            ("skill", "", "", self.skill or "all"),
            ("business_hours", "", "", str(self.business_hours).lower()),
            ("conversations_opened", "", "", str(self.opened)),
            ("customer_messages", "", "", str(self.customer_messages)),
        ]
        for name, series in (
            ("opened_by_channel", self.by_channel),
            ("opened_by_skill", self.by_skill),
        ):
            for group, counts in sorted(series.items()):
                for start, count in zip(self.buckets, counts, strict=True):
                    rows.append((name, group, start.isoformat(), str(count)))
        for name, spread in (
            ("first_response", self.first_response),
            ("resolution", self.resolution),
        ):
            rows.append((f"{name}_count", "", "", str(spread.count)))
            rows.append((f"{name}_p50_seconds", "", "", _number(spread.p50)))
            rows.append((f"{name}_p90_seconds", "", "", _number(spread.p90)))
        for start, median in zip(self.buckets, self.first_response_by_bucket, strict=True):
            rows.append(("first_response_p50_seconds", "", start.isoformat(), _number(median)))
        if self.deadlines is not None:
            d = self.deadlines
            rows.append(("first_replies", "", "", str(d.first_replies)))
            rows.append(("first_replies_late", "", "", str(d.first_replies_late)))
            rows.append(("resolutions", "", "", str(d.resolutions)))
            rows.append(("resolutions_late", "", "", str(d.resolutions_late)))
            for target, count in sorted(d.breaches.items()):
                rows.append(("deadline_breaches", target, "", str(count)))
        for row in self.backlog:
            for (label, _), count in zip(AGE_BUCKETS, row.ages, strict=True):
                rows.append(("backlog", row.skill, label, str(count)))
        for agent in self.agents:
            rows.append(("agent_conversations", agent.user_id, "", str(agent.conversations)))
            rows.append(("agent_replies", agent.user_id, "", str(agent.replies)))
            rows.append(
                ("agent_median_response_seconds", agent.user_id, "", _number(agent.median_response))
            )
        for sentiment, count in sorted(self.sentiment.items()):
            rows.append(("sentiment", sentiment or "not sure", "", str(count)))
        rows.append(("satisfaction_answers", "", "", str(self.satisfaction.answers)))
        rows.append(("satisfaction_average", "", "", _number(self.satisfaction.average, 2)))
        for rating, count in sorted(self.satisfaction.ratings.items()):
            rows.append(("satisfaction_rating", str(rating), "", str(count)))
        return rows

    def as_json(self) -> dict[str, object]:
        return {
            "period": {
                "start": self.period.start.isoformat(),
                "end": self.period.end.isoformat(),
                "label": self.period.label,
                "timezone": self.period.timezone,
            },
            "skill": self.skill or None,
            "business_hours": self.business_hours,
            "conversations_opened": self.opened,
            "customer_messages": self.customer_messages,
            "buckets": [b.isoformat() for b in self.buckets],
            "opened_by_channel": {k: list(v) for k, v in sorted(self.by_channel.items())},
            "opened_by_skill": {k: list(v) for k, v in sorted(self.by_skill.items())},
            "first_response_seconds": _spread_json(self.first_response),
            "first_response_p50_by_bucket": list(self.first_response_by_bucket),
            "resolution_seconds": _spread_json(self.resolution),
            "deadlines": None
            if self.deadlines is None
            else {
                "first_replies": self.deadlines.first_replies,
                "first_replies_late": self.deadlines.first_replies_late,
                "resolutions": self.deadlines.resolutions,
                "resolutions_late": self.deadlines.resolutions_late,
                "breaches": dict(sorted(self.deadlines.breaches.items())),
            },
            "backlog": {
                row.skill: dict(zip([label for label, _ in AGE_BUCKETS], row.ages, strict=True))
                for row in self.backlog
            },
            "agents": [
                {
                    "user_id": a.user_id,
                    "conversations": a.conversations,
                    "replies": a.replies,
                    "median_response_seconds": a.median_response,
                }
                for a in self.agents
            ],
            "sentiment": {k or "not sure": v for k, v in sorted(self.sentiment.items())},
            "satisfaction": {
                "answers": self.satisfaction.answers,
                "average": self.satisfaction.average,
                "ratings": {str(k): v for k, v in sorted(self.satisfaction.ratings.items())},
                "comments": [
                    {"rating": rating, "comment": text}
                    for rating, text in self.satisfaction.comments
                ],
            },
        }


def _number(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _spread_json(spread: Spread) -> dict[str, object]:
    return {"count": spread.count, "p50": spread.p50, "p90": spread.p90}


def duration_text(seconds: float | None) -> str:
    return "–" if seconds is None else format_working(timedelta(seconds=seconds))


def summary_lines(report: Report) -> list[str]:
    """The report in a few lines of plain text (Slack adds its own emphasis)."""
    where = f" · {report.skill}" if report.skill else ""
    kind = "business time" if report.business_hours else "wall time"
    lines = [f"Report for {report.period.label}{where}"]
    channels = ", ".join(
        f"{name} {sum(counts)}"
        for name, counts in sorted(report.by_channel.items(), key=lambda kv: -sum(kv[1]))
    )
    lines.append(
        f"Conversations opened: {report.opened}"
        + (f" ({channels})" if channels else "")
        + f" · customer messages: {report.customer_messages}"
    )
    for name, spread in (("First reply", report.first_response), ("Resolution", report.resolution)):
        if spread.count:
            lines.append(
                f"{name} ({kind}): median {duration_text(spread.p50)}, "
                f"90% within {duration_text(spread.p90)} ({spread.count})"
            )
        else:
            lines.append(f"{name}: none in this period")
    if report.deadlines is not None:
        d = report.deadlines
        first = _share(d.first_replies - d.first_replies_late, d.first_replies)
        resolution = _share(d.resolutions - d.resolutions_late, d.resolutions)
        lines.append(
            f"Deadlines met: first reply {first}, resolution {resolution}; "
            f"breaches: {sum(d.breaches.values())}"
        )
    open_now = sum(row.total for row in report.backlog)
    if open_now:
        oldest = next(
            (
                label
                for i, (label, _) in reversed(list(enumerate(AGE_BUCKETS)))
                if any(row.ages[i] for row in report.backlog)
            ),
            "",
        )
        busiest = max(report.backlog, key=lambda row: row.total)
        lines.append(
            f"Open now: {open_now} (most in {busiest.skill or 'triage'}: {busiest.total}; "
            f"oldest {oldest})"
        )
    else:
        lines.append("Open now: nothing waits")
    if report.sentiment:
        total = sum(report.sentiment.values())
        mix = ", ".join(
            f"{name or 'not sure'} {100 * count / total:.0f}%"
            for name, count in sorted(report.sentiment.items(), key=lambda kv: -kv[1])
        )
        lines.append(f"Sentiment: {mix}")
    happy = report.satisfaction
    if happy.answers and happy.average is not None:
        lines.append(
            f"Satisfaction: {happy.average:.1f} of 5 from {happy.answers} answers ("
            + ", ".join(f"{r}★ {happy.ratings.get(r, 0)}" for r in range(5, 0, -1))
            + ")"
        )
        lines += [f"  {rating}★ “{text[:200]}”" for rating, text in happy.comments]
    else:
        lines.append("Satisfaction: no survey answers in this period")
    return lines


def agent_lines(report: Report, mention: Callable[[str], str]) -> list[str]:
    """One line per agent, busiest first."""
    return [
        f"{mention(a.user_id)}: {a.conversations} conversations, {a.replies} replies, "
        f"median wait ended {duration_text(a.median_response)}"
        for a in report.agents
    ]


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({100 * part / whole:.0f}%)" if whole else "–"


class Reports:
    """Builds a report from the stored facts."""

    def __init__(self, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.clock = clock

    def period(self, text: str) -> Period:
        return parse_period(text, self.clock(), self.settings.sla.hours.timezone)

    async def report(self, period: Period, skill: str = "") -> Report:
        start, end = period.start, period.end
        buckets = time_buckets(period)
        of_skill = Q(skill=skill) if skill else Q()
        opened_rows = await _rows(
            Conversation.filter(of_skill, created_at__gte=start, created_at__lt=end).values_list(
                "created_at", "channel", "skill", "sentiment"
            )
        )
        by_channel: dict[str, list[int]] = {}
        by_skill: dict[str, list[int]] = {}
        sentiment: Counter[str] = Counter()
        for created_at, channel, skill_name, feeling in opened_rows:
            i = _bucket_of(buckets, _moment(created_at))
            by_channel.setdefault(str(channel), [0] * len(buckets))[i] += 1
            by_skill.setdefault(str(skill_name) or "triage", [0] * len(buckets))[i] += 1
            sentiment[str(feeling)] += 1
        in_skill = Q(conversation__skill=skill) if skill else Q()
        customer_messages = await Message.filter(
            in_skill,
            direction=Direction.INBOUND,
            is_automated=False,
            created_at__gte=start,
            created_at__lt=end,
        ).count()
        first_rows = await _rows(
            Conversation.filter(
                of_skill, first_reply_at__gte=start, first_reply_at__lt=end
            ).values_list("first_reply_at", "first_reply_seconds")
        )
        per_bucket: list[list[float]] = [[] for _ in buckets]
        for at, seconds in first_rows:
            if seconds is not None:
                per_bucket[_bucket_of(buckets, _moment(at))].append(float(seconds))
        resolved = [
            seconds
            for (seconds,) in await _rows(
                Conversation.filter(
                    of_skill,
                    status=ConversationStatus.CLOSED,
                    closed_at__gte=start,
                    closed_at__lt=end,
                ).values_list("resolution_seconds")
            )
        ]
        return Report(
            period=period,
            skill=skill,
            business_hours=self.settings.sla.enabled,
            buckets=buckets,
            opened=len(opened_rows),
            customer_messages=customer_messages,
            by_channel={k: tuple(v) for k, v in by_channel.items()},
            by_skill={k: tuple(v) for k, v in by_skill.items()},
            first_response=Spread.of(s for _, s in first_rows),
            first_response_by_bucket=tuple(
                percentile(sorted(values), 50) if values else None for values in per_bucket
            ),
            resolution=Spread.of(resolved),
            deadlines=await self._deadlines(period, skill, len(first_rows), len(resolved))
            if self.settings.sla.enabled
            else None,
            backlog=await self._backlog(skill),
            agents=await self._agents(period, skill),
            sentiment=dict(sentiment),
            satisfaction=await self._satisfaction(period, skill),
        )

    async def _satisfaction(self, period: Period, skill: str, comments: int = 3) -> Satisfaction:
        in_skill = Q(conversation__skill=skill) if skill else Q()
        # An answer counts in the period it was first given (a later change keeps its place).
        answers = (
            await SurveyAnswer.filter(
                in_skill, created_at__gte=period.start, created_at__lt=period.end
            )
            .order_by("-created_at")
            .values_list("rating", "comment")
        )
        ratings = Counter(int(rating) for rating, _ in answers)
        total = sum(ratings.values())
        return Satisfaction(
            answers=total,
            average=sum(r * n for r, n in ratings.items()) / total if total else None,
            ratings=dict(ratings),
            comments=tuple((int(r), str(c)) for r, c in answers if c)[:comments],
        )

    async def _deadlines(
        self, period: Period, skill: str, first_replies: int, resolutions: int
    ) -> DeadlineFigures:
        in_skill = Q(conversation__skill=skill) if skill else Q()
        start, end = period.start, period.end
        breaches: Counter[str] = Counter()
        for detail in await AuditEntry.filter(
            in_skill, action="sla breach", created_at__gte=start, created_at__lt=end
        ).values_list("detail", flat=True):
            breaches[str(_target(detail))] += 1
        late_first = {
            conversation_id
            for conversation_id, detail in await AuditEntry.filter(
                in_skill,
                action="sla breach",
                conversation__first_reply_at__gte=start,
                conversation__first_reply_at__lt=end,
            ).values_list("conversation_id", "detail")
            if _target(detail) == "first_response"
        }
        late_resolution = {
            conversation_id
            for conversation_id, detail in await AuditEntry.filter(
                in_skill,
                action="sla breach",
                conversation__status=ConversationStatus.CLOSED,
                conversation__closed_at__gte=start,
                conversation__closed_at__lt=end,
            ).values_list("conversation_id", "detail")
            if _target(detail) == "resolution"
        }
        return DeadlineFigures(
            first_replies, len(late_first), resolutions, len(late_resolution), dict(breaches)
        )

    async def _backlog(self, skill: str) -> tuple[BacklogRow, ...]:
        of_skill = Q(skill=skill) if skill else Q()
        now = self.clock()
        ages: dict[str, list[int]] = {}
        for skill_name, created_at in await Conversation.filter(
            of_skill, status=ConversationStatus.OPEN
        ).values_list("skill", "created_at"):
            hours = (now - created_at).total_seconds() / 3600
            i = next(i for i, (_, limit) in enumerate(AGE_BUCKETS) if hours < limit)
            ages.setdefault(str(skill_name), [0] * len(AGE_BUCKETS))[i] += 1
        return tuple(BacklogRow(name, tuple(counts)) for name, counts in sorted(ages.items()))

    async def _agents(self, period: Period, skill: str) -> tuple[AgentFigures, ...]:
        in_skill = Q(conversation__skill=skill) if skill else Q()
        replies: dict[str, list[int]] = {}
        waits: dict[str, list[float]] = {}
        conversations: dict[str, set[int]] = {}
        for author, conversation_id, seconds in await _rows(
            Message.filter(
                in_skill,
                direction=Direction.OUTBOUND,
                delivery_state__in=SENT_STATES,
                created_at__gte=period.start,
                created_at__lt=period.end,
            ).values_list("author_id", "conversation_id", "response_seconds")
        ):
            who = str(author)
            replies.setdefault(who, []).append(1)
            conversations.setdefault(who, set()).add(int(conversation_id))
            if seconds is not None:
                waits.setdefault(who, []).append(float(seconds))
        figures = [
            AgentFigures(
                who,
                len(conversations[who]),
                len(replies[who]),
                percentile(sorted(waits[who]), 50) if waits.get(who) else None,
            )
            for who in replies
            if who
        ]
        return tuple(sorted(figures, key=lambda a: (-a.conversations, a.user_id)))


async def _rows(query: ValuesListQuery[Literal[False]]) -> list[tuple[Any, ...]]:
    """The rows of ``query`` as the database driver returns them.

    The ORM's conversion of every value of every row is most of the time of a report over a
    year (bench.reports); these rows skip it. Times come back as datetimes (PostgreSQL) or as
    ISO text (SQLite): read them with ``_moment``; enums come back as their values.
    """
    query._choose_db_if_not_chosen()
    query._make_query()
    sql, values = query.query.get_parameterized_sql()
    _, rows = await query._db.execute_query(sql, values)
    return [tuple(row) for row in rows]


def _moment(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _target(detail: object) -> object:
    return detail.get("target") if isinstance(detail, dict) else None


def time_buckets(period: Period) -> tuple[datetime, ...]:
    """The starts of the period's hours, local days or weeks (from Monday), UTC."""
    zone = ZoneInfo(period.timezone)
    if period.hourly:
        first = period.start.replace(minute=0, second=0, microsecond=0)
        step = timedelta(hours=1)
        starts = []
        moment = first
        while moment < period.end:
            starts.append(moment)
            moment += step
        return tuple(starts) or (first,)
    day = period.start.astimezone(zone).date()
    last = (period.end - timedelta(microseconds=1)).astimezone(zone).date()
    step = timedelta(days=1)
    if period.weekly:
        day -= timedelta(days=day.weekday())
        step = timedelta(days=7)
    starts = []
    while day <= last:
        starts.append(datetime.combine(day, time(), tzinfo=zone).astimezone(UTC))
        day += step
    return tuple(starts) or (period.start,)


def _bucket_of(buckets: Sequence[datetime], moment: datetime) -> int:
    """The index of the bucket ``moment`` falls in (the first or last one at the edges)."""
    low, high = 0, len(buckets) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if buckets[middle] <= moment:
            low = middle
        else:
            high = middle - 1
    return low


class Facts:
    """Stores the facts reports read, as replies go out and conversations close."""

    def __init__(self, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.clock = clock

    async def reply_sent(self, conversation: Conversation, message: Message) -> None:
        """An agent's reply reached the customer: how long they waited, the first reply's time.

        Safe to repeat (a retried delivery): what is stored is kept.
        """
        now = self.clock()
        hours = self.settings.sla.hours_for(conversation.skill)
        waited: int | None = message.response_seconds
        if waited is None:
            since = await customer_waiting_since(conversation.id, before=message.id)
            if since is not None:
                waited = int(hours.working_time_between(since, now).total_seconds())
                await Message.filter(id=message.id, response_seconds__isnull=True).update(
                    response_seconds=waited
                )
                message.response_seconds = waited
        if conversation.first_reply_at is not None:
            return
        first = (
            waited
            if waited is not None
            else int(hours.working_time_between(conversation.created_at, now).total_seconds())
        )
        stored = await Conversation.filter(id=conversation.id, first_reply_at__isnull=True).update(
            first_reply_at=now, first_reply_seconds=first
        )
        conversation.first_reply_at, conversation.first_reply_seconds = now, first
        if stored:
            FIRST_RESPONSE_SECONDS.labels(conversation.skill or "triage").observe(first)

    async def closing(self, conversation: Conversation) -> tuple[str, ...]:
        """Set when ``conversation`` closes and how long after the customer's first message;
        returns the fields to save with the close."""
        now = self.clock()
        hours = self.settings.sla.hours_for(conversation.skill)
        first = (
            await Message.filter(conversation_id=conversation.id, direction=Direction.INBOUND)
            .order_by("id")
            .limit(1)
            .values_list("created_at", flat=True)
        )
        start = cast(datetime, first[0]) if first else conversation.created_at
        seconds = int(hours.working_time_between(start, now).total_seconds())
        conversation.closed_at = now
        conversation.resolution_seconds = seconds
        RESOLUTION_SECONDS.labels(conversation.skill or "triage").observe(seconds)
        return ("closed_at", "resolution_seconds")
