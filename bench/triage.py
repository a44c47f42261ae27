"""Triage throughput: the service's path against the same encoder called plainly, in one run.

- service: ``TriageEngine.triage`` for every test message, ``--concurrency`` in flight at once
  (micro-batched, length-sorted, ONNX Runtime int8), including language, sentiment and priority.
- plain: the same all-MiniLM-L6-v2 called directly with transformers + torch in float32, batches
  of 32 in arrival order padded to their longest text, mean pooling, the same classifier.

Each path runs in a child process of its own, one after the other, so each peak RSS is that
path's alone. Data: Banking77's train.csv (../shared/data/banking77, CC BY 4.0), split per label
with a seed; both paths train on the same ``--shots`` examples per label and score the same
held-out messages. Prints JSON:

    python -m bench.triage [--data PATH] [--shots 10] [--limit 2000] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "train.csv"


def _split(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    from bot.triage.evaluation import read_examples, sample_shots, split_holdout

    train, test = split_holdout(read_examples(Path(args.data)), 0.2, args.seed)
    test = random.Random(args.seed).sample(test, min(args.limit, len(test)))
    return sample_shots(train, args.shots, args.seed), test


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_service(args: argparse.Namespace) -> dict[str, Any]:
    """The service's path: TriageEngine with the model it loads by default."""
    from bot.settings import SkillSettings, TriageSettings
    from bot.shapes import ChannelKind, InboundMessage
    from bot.triage import TriageEngine

    train, test = _split(args)
    labels = sorted({e.label for e in train})
    skills = [
        SkillSettings(label, label, examples=tuple(e.text for e in train if e.label == label))
        for label in labels
    ]
    now = datetime.now(UTC)
    messages = [
        InboundMessage(
            channel=ChannelKind.EMAIL,
            external_id=str(n),
            sender_address="customer@example.com",
            sender_name="",
            subject="",
            text=e.text,
            full_text=e.text,
            received_at=now,
        )
        for n, e in enumerate(test)
    ]

    async def measure() -> dict[str, Any]:
        started = time.perf_counter()
        engine = await TriageEngine.load(TriageSettings(min_confidence=0.0), skills)
        loaded = time.perf_counter() - started
        gate = asyncio.Semaphore(args.concurrency)

        async def one(message: InboundMessage) -> str:
            async with gate:
                return (await engine.triage(message)).skill

        async with engine:
            await asyncio.gather(*(one(m) for m in messages[:64]))  # warm-up
            started = time.perf_counter()
            skills_found = await asyncio.gather(*(one(m) for m in messages))
            seconds = time.perf_counter() - started
            stats = engine.stats
        correct = sum(s == e.label for s, e in zip(skills_found, test, strict=True))
        return {
            "backend": engine.encoder.info.backend,
            "messages_per_second": round(len(messages) / seconds, 1),
            "accuracy": round(correct / len(test), 4),
            "test_messages": len(test),
            "load_seconds": round(loaded, 2),
            "batches": stats.batches,
            "largest_batch": stats.largest_batch,
        }

    result = asyncio.run(measure())
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def run_plain(args: argparse.Namespace) -> dict[str, Any]:
    """The same encoder called directly with transformers + torch, as a script would."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bot.triage.classifier import EmbeddingClassifier
    from bot.triage.encoder import default_model_path

    train, test = _split(args)
    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    def embed(texts: list[str]) -> Any:
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), 32):
                batch = tokenizer(
                    texts[start : start + 32],
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(rows)

    classifier = EmbeddingClassifier.fit(embed([e.text for e in train]), [e.label for e in train])
    embed([e.text for e in test[:64]])  # warm-up
    started = time.perf_counter()
    predictions = classifier.predict(embed([e.text for e in test]))
    seconds = time.perf_counter() - started
    correct = sum(p.label == e.label for p, e in zip(predictions, test, strict=True))
    return {
        "backend": "torch-float32",
        "messages_per_second": round(len(test) / seconds, 1),
        "accuracy": round(correct / len(test), 4),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _child(path: str, argv: list[str]) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "bench.triage", "--path", path, *argv],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a text,category CSV")
    parser.add_argument("--shots", type=int, default=10, help="training examples per label")
    parser.add_argument("--limit", type=int, default=2000, help="test messages at most")
    parser.add_argument("--concurrency", type=int, default=256, help="messages in flight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--path", choices=("service", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.path == "service":
        print(json.dumps(run_service(args)))
        return
    if args.path == "plain":
        print(json.dumps(run_plain(args)))
        return
    argv = [
        f"--data={args.data}",
        f"--shots={args.shots}",
        f"--limit={args.limit}",
        f"--concurrency={args.concurrency}",
        f"--seed={args.seed}",
    ]
    plain = _child("plain", argv)
    service = _child("service", argv)
    report = {
        "data": Path(args.data).name,
        "shots": args.shots,
        "test_messages": service["test_messages"],
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "service": service,
        "plain": plain,
        "speedup": round(service["messages_per_second"] / plain["messages_per_second"], 2),
        "accuracy_gap_points": round((service["accuracy"] - plain["accuracy"]) * 100, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
