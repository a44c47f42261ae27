"""Prometheus metrics: messages in and out by channel, job outcomes, queue depth."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_IN = Counter(
    "switchboard_messages_in_total",
    "Inbound customer messages, by channel and outcome (accepted, duplicate).",
    ["channel", "outcome"],
)
MESSAGES_OUT = Counter(
    "switchboard_messages_out_total",
    "Agent replies, by channel and outcome (sent, failed).",
    ["channel", "outcome"],
)
JOB_OUTCOMES = Counter(
    "switchboard_job_outcomes_total",
    "Finished job runs, by kind and outcome (done, retried, parked, failed).",
    ["kind", "outcome"],
)
JOB_LEASES = Counter(
    "switchboard_job_leases_total",
    "Leases of running jobs, by outcome (renewed, lost: another worker may have taken the job).",
    ["outcome"],
)
JOB_QUEUE_DEPTH = Gauge(
    "switchboard_job_queue_depth", "Jobs due or running, as of the last scrape."
)
JOB_OLDEST_WAITING = Gauge(
    "switchboard_job_oldest_waiting_seconds",
    "Age in seconds of the oldest due unfinished job, by kind (0: none waits), as of the last "
    "scrape.",
    ["kind"],
)


def count_job(kind: str, outcome: str) -> None:
    """Count a job run's outcome (the job runner's ``on_outcome``)."""
    JOB_OUTCOMES.labels(kind, outcome).inc()


SUGGESTIONS = Counter(
    "switchboard_suggestions_total",
    "Suggested replies, by source (block, reply) and outcome (offered, used).",
    ["source", "outcome"],
)

#: Waiting times in seconds (working time of the team once [sla] has business hours).
_WAIT_BUCKETS = (
    60,
    300,
    900,
    1800,
    3600,
    2 * 3600,
    4 * 3600,
    8 * 3600,
    86400,
    3 * 86400,
    7 * 86400,
)
FIRST_RESPONSE_SECONDS = Histogram(
    "switchboard_first_response_seconds",
    "Time from a conversation's start to its first agent reply reaching the customer, by skill.",
    ["skill"],
    buckets=_WAIT_BUCKETS,
)
RESOLUTION_SECONDS = Histogram(
    "switchboard_resolution_seconds",
    "Time from a conversation's start to its closing, by skill.",
    ["skill"],
    buckets=(*_WAIT_BUCKETS, 14 * 86400, 30 * 86400),
)
