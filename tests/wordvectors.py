"""A small stand-in for the triage encoder in flow tests: words hashed into a vector.

Messages that share most of their words get similar vectors, so the flows of similar
conversations and suggestions can be checked without loading the transformer.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.shapes import InboundMessage, Triage

DIMENSIONS = 64
_WORD = re.compile(r"\w+")
_GERMAN = {"ich", "ist", "meine", "mein", "nicht", "bitte", "wo", "und", "die", "der"}


def word_vector(text: str) -> bytes:
    vector = np.zeros(DIMENSIONS, dtype=np.float32)
    for word in _WORD.findall(text.lower()):
        vector[zlib.crc32(word.encode()) % DIMENSIONS] += 1.0
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm else vector).astype(np.float32).tobytes()


def language_of(text: str) -> str:
    return "de" if set(_WORD.findall(text.lower())) & _GERMAN else "en"


@dataclass
class WordVectorClassifier:
    """Tags every message with one skill, and embeds it like the real triage does."""

    skill: str

    async def triage(self, message: InboundMessage) -> Triage:
        text = f"{message.subject}\n{message.text}"
        return Triage(
            skill=self.skill, confidence=1.0, language=language_of(text), vector=word_vector(text)
        )

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        return [word_vector(text) for text in texts]
