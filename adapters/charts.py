"""A report's charts as one PNG (matplotlib, drawn off-screen).

Six panels: conversations opened by channel and by skill over the period, the first replies'
median over the period, the open backlog by skill and age, conversations per agent, and the
sentiment mix. matplotlib is imported on the first report, not when the service starts.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from bot.reports import AGE_BUCKETS, Report

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Width and height in inches, at ``_DPI``: about 1400 × 1500 pixels, readable on a phone too.
_SIZE = (11.0, 12.0)
_DPI = 130


def report_png(report: Report, agent_name: dict[str, str] | None = None) -> bytes:
    """Draw ``report``; ``agent_name`` maps Slack user ids to the names shown."""
    import matplotlib

    matplotlib.use("Agg")  # no display: draw into memory
    from matplotlib.figure import Figure

    names = agent_name or {}
    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    where = f" · {report.skill}" if report.skill else ""
    figure.suptitle(f"Switchboard report: {report.period.label}{where}", fontsize=14)
    panels = figure.subplots(3, 2)
    labels = [report.bucket_label(b) for b in report.buckets]
    _stacked(panels[0][0], labels, report.by_channel, "Conversations opened, by channel")
    _stacked(panels[0][1], labels, report.by_skill, "Conversations opened, by skill")
    _first_replies(panels[1][0], labels, report)
    _backlog(panels[1][1], report)
    _agents(panels[2][0], report, names)
    _sentiment(panels[2][1], report)
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def _stacked(axes: Axes, labels: list[str], series: dict[str, tuple[int, ...]], title: str) -> None:
    axes.set_title(title)
    if not series:
        _empty(axes, "nothing opened")
        return
    bottom = [0] * len(labels)
    positions = list(range(len(labels)))
    for name, counts in sorted(series.items(), key=lambda kv: -sum(kv[1])):
        axes.bar(positions, counts, bottom=bottom, label=name)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    _ticks(axes, labels)
    axes.legend(fontsize=8)


def _first_replies(axes: Axes, labels: list[str], report: Report) -> None:
    kind = "business hours" if report.business_hours else "hours"
    axes.set_title(f"First reply, median ({kind})")
    points = [
        (i, seconds / 3600)
        for i, seconds in enumerate(report.first_response_by_bucket)
        if seconds is not None
    ]
    if not points:
        _empty(axes, "no first replies")
        return
    axes.plot([i for i, _ in points], [h for _, h in points], marker="o")
    if report.first_response.p90 is not None:
        axes.axhline(report.first_response.p90 / 3600, linestyle="--", color="grey")
        axes.text(0, report.first_response.p90 / 3600, " 90th percentile, whole period", fontsize=8)
    axes.set_ylim(bottom=0)
    _ticks(axes, labels)


def _backlog(axes: Axes, report: Report) -> None:
    axes.set_title("Open now, by age")
    if not report.backlog:
        _empty(axes, "nothing open")
        return
    skills = [row.skill or "triage" for row in report.backlog]
    left = [0] * len(skills)
    for index, (label, _) in enumerate(AGE_BUCKETS):
        counts = [row.ages[index] for row in report.backlog]
        axes.barh(skills, counts, left=left, label=label)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    axes.legend(fontsize=8)


def _agents(axes: Axes, report: Report, names: dict[str, str]) -> None:
    axes.set_title("Conversations answered, per agent")
    shown = report.agents[:12]
    if not shown:
        _empty(axes, "no replies")
        return
    people = [names.get(a.user_id, a.user_id) for a in shown]
    axes.barh(people, [a.conversations for a in shown])
    axes.invert_yaxis()


def _sentiment(axes: Axes, report: Report) -> None:
    axes.set_title("Sentiment of new conversations")
    if not report.sentiment:
        _empty(axes, "nothing opened")
        return
    ordered = sorted(report.sentiment.items(), key=lambda kv: -kv[1])
    axes.barh([name or "not sure" for name, _ in ordered], [count for _, count in ordered])
    axes.invert_yaxis()


def _ticks(axes: Axes, labels: list[str]) -> None:
    """At most a dozen readable labels under the bars."""
    step = max(1, len(labels) // 12)
    shown = list(range(0, len(labels), step))
    axes.set_xticks(shown, [labels[i] for i in shown], rotation=45, ha="right", fontsize=8)


def _empty(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])
