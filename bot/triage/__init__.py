"""Triage: skill, priority, language and sentiment for each inbound message.

``TriageEngine`` (engine.py) is what the service uses; the pieces are the encoder (encoder.py,
transformers or ONNX Runtime), its optional fine-tuning on a team's examples (tuning.py), the
classifiers over its embeddings (classifier.py), the priority rules (priority.py), language
detection (language.py), the shipped example sets (examples.py) and the evaluation behind
``switchboard triage eval`` (evaluation.py).
"""

from bot.shapes import TRIAGE_SKILL
from bot.triage.engine import EngineStats, TriageEngine
from bot.triage.priority import PriorityRules, PrioritySignals, decide_priority

__all__ = [
    "TRIAGE_SKILL",
    "EngineStats",
    "PriorityRules",
    "PrioritySignals",
    "TriageEngine",
    "decide_priority",
]
