"""Progress of long triage work (fine-tuning, evaluation) as log lines with the time left.

``Progress`` logs at most every ``every`` seconds, and always at the end, e.g.
"fine-tuning: 40 of 190 steps (21%) after 2 min 10 s, about 8 min 5 s left". The estimate is the
pace so far, counted from where this run started (a resumed run does not count the steps it
skipped).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bot.triage.encoder import Embeddings, SentenceEncoder

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """A duration a person reads at a glance: "45 s", "3 min 5 s", "1 h 2 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class Progress:
    """Counts ``done`` of ``total`` units and logs the pace and the time left."""

    def __init__(
        self,
        what: str,
        total: int,
        unit: str,
        *,
        start: int = 0,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.done = start
        self._start = start
        self._every = every
        self._clock = clock
        self._log = logger
        self._started = clock()
        self._last = self._started

    def advance(self, count: int = 1) -> None:
        """``count`` more units are done; logs if ``every`` seconds passed or all are done."""
        self.done += count
        now = self._clock()
        if now - self._last >= self._every or self.done >= self.total:
            self._last = now
            self._log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress as one line of text."""
        elapsed = (now if now is not None else self._clock()) - self._started
        share = self.done / self.total if self.total else 1.0
        text = (
            f"{self.what}: {self.done} of {self.total} {self.unit} ({share:.0%}) "
            f"after {duration(elapsed)}"
        )
        moved = self.done - self._start
        if self.done >= self.total:
            return text + ", done"
        if moved <= 0:
            return text
        left = elapsed / moved * (self.total - self.done)
        return f"{text}, about {duration(left)} left"


def encode_with_progress(
    encoder: SentenceEncoder, texts: Sequence[str], what: str, *, unit: str, chunk: int
) -> Embeddings:
    """``encoder.encode`` over ``texts``, ``chunk`` at a time, logging progress with the time
    left (evaluation, sentiment training: thousands of texts)."""
    progress = Progress(what, len(texts), unit)
    rows = []
    for start in range(0, len(texts), chunk):
        rows.append(encoder.encode(texts[start : start + chunk]))
        progress.advance(len(rows[-1]))
    if not rows:
        return encoder.encode([])
    return np.concatenate(rows).astype(np.float32)
