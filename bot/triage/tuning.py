"""Fine-tuning the encoder on a team's skill examples, for a classifier that separates them better.

A frozen encoder puts "card not arrived" and "card delivery time" close together whatever the
team's skills are. ``tune_encoder`` trains the whole encoder for a few epochs with a temporary
softmax head over the skill labels (cross-entropy on the cosine between the pooled, normalised
embedding and one vector per label, scaled by ``LOGIT_SCALE``), then drops the head and saves the
encoder as a plain transformers folder. ``SentenceEncoder.load`` serves that folder like any other
model (int8 ONNX export included), and the logistic regression is trained on its embeddings as
before.

The head starts at each label's mean embedding under the untuned encoder and moves slowly ("linear
probe, then fine-tune"): a random head would send large, meaningless gradients into the encoder
in the first steps and undo part of what it knew, which costs most with ten examples per label.

The folder is named after a fingerprint of the base model, the examples and the settings, so a
restart with the same examples reuses it. Training is blocking and takes minutes on a CPU (an
epoch is one forward and backward pass over every example): run it in a worker thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot.triage.encoder import (
    _model_fingerprint,
    _quiet_transformers,
    default_model_path,
    mean_pool,
    model_cache_dir,
    text_prefix,
)
from bot.triage.examples import Example
from bot.triage.progress import Progress

log = logging.getLogger(__name__)

#: Cosine logits are in [-1, 1]; scaled up so softmax can become confident.
LOGIT_SCALE = 20.0
#: Messages are cut here while training: the start says what a message is about, and training
#: cost grows with the length.
TRAIN_TOKENS = 64
#: Part of the tuned folder's name: changes when the training itself changes.
_TUNING_FORMAT = "3"
#: The embedding matrix is frozen when it holds more than this share of the parameters.
FREEZE_SHARE = 2 / 3
#: A checkpoint of an unfinished tuning is written at least this often (seconds).
CHECKPOINT_SECONDS = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class TuningSettings:
    """How the encoder is fine-tuned (defaults chosen on a split of Banking77's training part)."""

    epochs: int = 5
    #: Fewer epochs for many examples: past this many batches the cost grows, not the accuracy.
    max_steps: int = 1000
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    batch_size: int = 16
    seed: int = 0
    #: Keep the vocabulary's embedding matrix as it is; None: when it is most of the model
    #: (``FREEZE_SHARE``), as in multilingual-e5-small (96 of 118 million parameters).
    freeze_embeddings: bool | None = None


def tuned_model_dir(model: str, examples: Sequence[Example], settings: TuningSettings) -> Path:
    """Where the encoder tuned on ``examples`` is (or will be) kept in the model cache."""
    digest = hashlib.sha256(_model_fingerprint(model).encode())
    digest.update(f"{_TUNING_FORMAT}\0".encode())
    digest.update(json.dumps(dataclasses.astuple(settings)).encode())
    for example in sorted(examples, key=lambda e: (e.label, e.text)):
        digest.update(f"{example.label}\0{example.text}\0".encode())
    name = Path(model.rstrip("/")).name
    return model_cache_dir() / "tuned" / f"{name}-{digest.hexdigest()[:16]}"


def tune_encoder(
    model: str,
    examples: Sequence[Example],
    settings: TuningSettings | None = None,
    *,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    on_step: Callable[[int], None] | None = None,
) -> Path:
    """The folder of ``model`` fine-tuned on ``examples`` (trained now unless cached; blocking).

    Progress is logged every few seconds with the time left. A checkpoint is written every
    ``checkpoint_seconds`` (0: after every step) and at the end of each epoch; an interrupted
    run with the same model, examples and settings resumes from it. ``on_step`` is called with
    the number of each finished step (after its checkpoint, if one was due).
    """
    settings = settings or TuningSettings()
    model = model or default_model_path()
    target = tuned_model_dir(model, examples, settings)
    if (target / "switchboard.json").is_file():
        return target
    if len({e.label for e in examples}) < 2:
        raise ValueError("fine-tuning needs examples of at least two labels")
    started = time.perf_counter()
    scratch = target.with_name(target.name + ".partial")
    checkpoint = target.with_name(target.name + ".checkpoint")
    shutil.rmtree(scratch, ignore_errors=True)
    _train(model, examples, settings, scratch, checkpoint, checkpoint_seconds, on_step)
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    shutil.rmtree(checkpoint, ignore_errors=True)
    log.info(
        "tuned %s on %d examples in %.0f s: %s",
        model,
        len(examples),
        time.perf_counter() - started,
        target,
    )
    return target


def _freezes_embeddings(encoder: Any, settings: TuningSettings) -> bool:
    """Whether the vocabulary's embedding matrix stays as it is (see ``freeze_embeddings``)."""
    if settings.freeze_embeddings is not None:
        return settings.freeze_embeddings
    vocabulary = encoder.get_input_embeddings().weight.numel()
    return bool(vocabulary > FREEZE_SHARE * sum(p.numel() for p in encoder.parameters()))


def _train(
    model: str,
    examples: Sequence[Example],
    settings: TuningSettings,
    out: Path,
    checkpoint: Path,
    checkpoint_seconds: float,
    on_step: Callable[[int], None] | None,
) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()
    prefix = text_prefix(model)
    labels = sorted({e.label for e in examples})
    index = {label: i for i, label in enumerate(labels)}
    data = [(prefix + (e.text.strip() or "."), index[e.label]) for e in examples]
    rng = random.Random(settings.seed)
    with torch.random.fork_rng():
        # Seeded so that the same examples give the same encoder, without touching the
        # process's own random state.
        torch.manual_seed(settings.seed)
        tokenizer: Any = AutoTokenizer.from_pretrained(model)
        encoder: Any = AutoModel.from_pretrained(model)
        if _freezes_embeddings(encoder, settings):
            # Ten examples per label touch a sliver of a 250,000-token vocabulary; the rest
            # of the matrix would only cost optimiser time and memory.
            encoder.get_input_embeddings().weight.requires_grad_(False)
        head = torch.nn.Linear(int(encoder.config.hidden_size), len(labels), bias=False)
        batches = math.ceil(len(data) / settings.batch_size)
        epochs = max(1, min(settings.epochs, settings.max_steps // batches))
        steps = batches * epochs
        trained = [p for p in encoder.parameters() if p.requires_grad]
        # A checkpoint holds what moves; the rest is the base model's.
        frozen = {name for name, p in encoder.named_parameters() if not p.requires_grad}
        optimiser = torch.optim.AdamW(
            [
                {"params": trained, "lr": settings.learning_rate},
                {"params": head.parameters(), "lr": settings.head_learning_rate},
            ]
        )
        warmup = max(1, steps // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: min((step + 1) / warmup, (steps - step) / (steps - warmup + 1))
        )
        saved = _load_checkpoint(checkpoint)
        if saved is None:
            with torch.no_grad():
                head.weight.copy_(_label_centres(encoder, tokenizer, data, len(labels)))
            step, order = 0, []
        else:
            encoder.load_state_dict(saved["encoder"], strict=False)
            head.load_state_dict(saved["head"])
            optimiser.load_state_dict(saved["optimiser"])
            schedule.load_state_dict(saved["schedule"])
            rng.setstate(saved["rng"])
            torch.set_rng_state(saved["torch_rng"])
            step, order = int(saved["step"]), list(saved["order"])
            log.info("fine-tuning resumes from its checkpoint at step %d of %d", step, steps)
        encoder.train()
        progress = Progress(f"fine-tuning on {len(data)} examples", steps, "steps", start=step)
        last_saved = time.monotonic()
        while step < steps:
            epoch, batch_number = divmod(step, batches)
            if batch_number == 0:
                order = list(range(len(data)))
                rng.shuffle(order)
            start = batch_number * settings.batch_size
            batch = [data[i] for i in order[start : start + settings.batch_size]]
            pooled = _pooled(encoder, tokenizer, [text for text, _ in batch])
            weights = torch.nn.functional.normalize(head.weight, dim=-1)
            logits = LOGIT_SCALE * pooled @ weights.T
            loss = torch.nn.functional.cross_entropy(
                logits, torch.tensor([label for _, label in batch])
            )
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            step += 1
            epoch_done = step % batches == 0
            if epoch_done or time.monotonic() - last_saved >= checkpoint_seconds:
                state = {
                    "encoder": {
                        name: value
                        for name, value in encoder.state_dict().items()
                        if name not in frozen
                    },
                    "head": head.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "rng": rng.getstate(),
                    "torch_rng": torch.get_rng_state(),
                    "step": step,
                    "order": order,
                }
                _save_checkpoint(checkpoint, state)
                last_saved = time.monotonic()
            if epoch_done:
                log.info("fine-tuning: epoch %d of %d done", epoch + 1, epochs)
            progress.advance()
            if on_step is not None:
                on_step(step)
    encoder.eval()
    out.mkdir(parents=True)
    encoder.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    # The tuned folder's name no longer says "e5": keep the prefix the base model needs.
    marker = {"query_prefix": prefix, "base_model": model, "labels": labels}
    (out / "switchboard.json").write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that a crash mid-write leaves the previous checkpoint intact."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "state.pt.partial"
    torch.save(state, partial)
    partial.replace(folder / "state.pt")


def _load_checkpoint(folder: Path) -> dict[str, Any] | None:
    import torch

    path = folder / "state.pt"
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(path, weights_only=False)
    except Exception:
        log.warning("the fine-tuning checkpoint %s is unreadable; starting over", path)
        return None
    return state


def _label_centres(
    encoder: Any, tokenizer: Any, data: Sequence[tuple[str, int]], labels: int
) -> Any:
    """One row per label: the normalised mean of its examples' embeddings (no gradients)."""
    import torch

    sums = torch.zeros(labels, int(encoder.config.hidden_size))
    encoder.eval()
    with torch.no_grad():
        for start in range(0, len(data), 64):
            batch = data[start : start + 64]
            pooled = _pooled(encoder, tokenizer, [text for text, _ in batch])
            sums.index_add_(0, torch.tensor([label for _, label in batch]), pooled)
    return torch.nn.functional.normalize(sums, dim=-1)


def _pooled(encoder: Any, tokenizer: Any, texts: list[str]) -> Any:
    """The pooled, normalised embeddings of ``texts``, cut at ``TRAIN_TOKENS`` (torch)."""
    tokens = tokenizer(
        texts, padding=True, truncation=True, max_length=TRAIN_TOKENS, return_tensors="pt"
    )
    return mean_pool(encoder(**tokens).last_hidden_state, tokens["attention_mask"])
