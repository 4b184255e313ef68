"""Rebuilding a Hugging Face `tokenizers` tokenizer from GGUF metadata.

A GGUF file carries its vocabulary (`tokenizer.ggml.*`) but not the tokenizer.json that mlx-lm
(through transformers) loads. Two tokenizer models are rebuilt:

* `gpt2`: byte-level BPE from `tokens` + `merges`. The pre-tokenizer is named by
  `tokenizer.ggml.pre` (llama.cpp's table); only those whose split rules are known here are
  accepted, because a wrong split tokenizes silently wrong.
* `llama`: SentencePiece BPE with byte fallback. GGUF keeps the pieces and their scores but no
  merges; merges are derived from the scores the way transformers' GGUF converter does.

Token types: 3 (control) become special added tokens, 4 (user-defined) plain added tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from tokenizers import pre_tokenizers as pre

from impetus.models.errors import ModelError

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = (
    1,
    2,
    3,
    4,
    5,
    6,
)

# Llama 3's split regex (its tokenizer.json), used by llama.cpp for pre "llama-bpe".
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level_pre(name: str, add_prefix_space: bool) -> tuple[pre.PreTokenizer, bool]:
    """(pre-tokenizer, ignore_merges) for llama.cpp's pre-tokenizer `name`."""
    byte_level = pre.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
    if name in ("", "default", "gpt2", "gpt-2"):
        return byte_level, False
    if name == "smollm":
        # llama.cpp: "\p{N}" first (digits one by one), then the GPT-2 split
        return pre.Sequence([pre.Digits(individual_digits=True), byte_level]), False
    if name in ("llama3", "llama-v3", "llama-bpe"):
        split = pre.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False)
        no_regex = pre.ByteLevel(add_prefix_space=add_prefix_space, use_regex=False)
        return pre.Sequence([split, no_regex]), True
    raise ModelError(
        "model_load_failed",
        f"GGUF pre-tokenizer {name!r} is not supported "
        "(supported: default/gpt2, smollm, llama-bpe)",
    )


def _special_ids(meta: dict[str, Any]) -> dict[str, int]:
    out = {}
    for role in ("bos", "eos", "unknown", "padding", "eot", "eom"):
        v = meta.get(f"tokenizer.ggml.{role}_token_id")
        if v is not None:
            out[role] = int(v)
    return out


def _added_tokens(
    tokens: Sequence[str], types: Sequence[int], extra_special: set[int]
) -> list[AddedToken]:
    added = []
    for i, (tok, typ) in enumerate(zip(tokens, types, strict=False)):
        if typ == TOKEN_CONTROL or i in extra_special:
            added.append(AddedToken(tok, special=True, normalized=False))
        elif typ == TOKEN_USER_DEFINED:
            added.append(AddedToken(tok, special=False, normalized=False))
    return added


def _template(
    add_bos: bool, add_eos: bool, tokens: Sequence[str], ids: dict[str, int]
) -> processors.PostProcessor | None:
    """A TemplateProcessing that adds bos/eos, as llama.cpp does for `add_bos_token`/`add_eos_token`."""
    single, pair, specials = ["$A"], ["$A", "$B"], []
    if add_bos and "bos" in ids:
        bos = tokens[ids["bos"]]
        single, pair = [bos, *single], [bos, "$A", bos, "$B"]
        specials.append((bos, ids["bos"]))
    if add_eos and "eos" in ids:
        eos = tokens[ids["eos"]]
        single, pair = [*single, eos], [*pair, eos]
        specials.append((eos, ids["eos"]))
    if not specials:
        return None
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """The tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata."""
    kind = meta.get("tokenizer.ggml.model")
    tokens: list[str] = list(meta.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise ModelError(
            "model_load_failed", "the GGUF file has no tokenizer vocabulary (tokenizer.ggml.tokens)"
        )
    types: list[int] = list(meta.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens))
    ids = _special_ids(meta)
    if any(not 0 <= i < len(tokens) for i in ids.values()):
        raise ModelError(
            "model_load_failed", f"GGUF special token ids {ids} are outside the vocabulary"
        )
    # eos/eot must never be split into pieces even when the file marks them "normal"
    specials = {i for role, i in ids.items() if role in ("bos", "eos", "eot", "eom")}
    if kind == "gpt2":
        tok = _build_gpt2(meta, tokens)
        add_bos_default = False
    elif kind == "llama":
        tok = _build_spm(meta, tokens, types)
        add_bos_default = True
    else:
        raise ModelError(
            "model_load_failed",
            f"GGUF tokenizer model {kind!r} is not supported (supported: gpt2, llama)",
        )
    tok.add_tokens(_added_tokens(tokens, types, specials))
    template = _template(
        bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default)),
        bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        tokens,
        ids,
    )
    if kind == "gpt2":
        byte_post = processors.ByteLevel(trim_offsets=False)
        tok.post_processor = processors.Sequence([byte_post, template]) if template else byte_post
    elif template is not None:
        tok.post_processor = template
    return tok


def _build_gpt2(meta: dict[str, Any], tokens: list[str]) -> Tokenizer:
    merges_raw: list[str] = list(meta.get("tokenizer.ggml.merges") or [])
    merges: list[tuple[str, str]] = []
    for m in merges_raw:
        left, sep, right = m.partition(" ")
        if not sep:
            raise ModelError("model_load_failed", f"damaged GGUF merge rule {m!r}")
        merges.append((left, right))
    pre_tok, ignore_merges = _byte_level_pre(
        str(meta.get("tokenizer.ggml.pre", "default")),
        bool(meta.get("tokenizer.ggml.add_space_prefix", False)),
    )
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=ignore_merges,
        )
    )
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    return tok


def spm_merges(
    tokens: Sequence[str], scores: Sequence[float], mergeable: Sequence[bool]
) -> list[tuple[str, str]]:
    """BPE merges implied by SentencePiece scores: a merge ranks by the score of the piece it makes.

    Same ordering as transformers' `generate_merges`: by score of the merged piece (best first),
    then by the ids of the two halves. Only normal pieces are made by merges (control, byte and
    unused pieces never are).
    """
    vocab = {t: i for i, t in enumerate(tokens)}
    found: list[tuple[float, int, int, str, str]] = []
    for piece, score, ok in zip(tokens, scores, mergeable, strict=True):
        if not ok:
            continue
        local = []
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                local.append((-float(score), vocab[left], vocab[right], left, right))
        found.extend(local)
    found.sort(key=lambda f: f[:3])
    return [(f[3], f[4]) for f in found]


def _build_spm(meta: dict[str, Any], tokens: list[str], types: list[int]) -> Tokenizer:
    scores = meta.get("tokenizer.ggml.scores")
    if not scores or len(scores) != len(tokens):
        raise ModelError(
            "model_load_failed",
            "GGUF SentencePiece vocabulary has no scores (tokenizer.ggml.scores)",
        )
    merges = spm_merges(tokens, scores, [t == TOKEN_NORMAL for t in types])
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[int(unk_id)] if unk_id is not None else None
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    )
    norms: list[normalizers.Normalizer] = []
    if bool(meta.get("tokenizer.ggml.add_space_prefix", True)):
        norms.append(normalizers.Prepend("▁"))
    norms.append(normalizers.Replace(" ", "▁"))
    tok.normalizer = normalizers.Sequence(norms)
    decs: list[decoders.Decoder] = [
        decoders.Replace("▁", " "),
        decoders.ByteFallback(),
        decoders.Fuse(),
    ]
    if bool(meta.get("tokenizer.ggml.add_space_prefix", True)):
        decs.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(decs)
    return tok


def tokenizer_config(meta: dict[str, Any], context_length: int | None) -> dict[str, Any]:
    """tokenizer_config.json for transformers' AutoTokenizer (what mlx-lm loads)."""
    tokens: list[str] = list(meta.get("tokenizer.ggml.tokens") or [])
    ids = _special_ids(meta)
    cfg: dict[str, Any] = {
        # the plain fast tokenizer: it takes tokenizer.json as it is, where a model-specific class
        # could re-derive normalizers of its own
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
    }
    for role, key in (
        ("bos", "bos_token"),
        ("eos", "eos_token"),
        ("unknown", "unk_token"),
        ("padding", "pad_token"),
    ):
        if role in ids:
            cfg[key] = tokens[ids[role]]
    if context_length:
        cfg["model_max_length"] = int(context_length)
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str) and template:
        cfg["chat_template"] = template
    return cfg


def eos_token_ids(meta: dict[str, Any]) -> list[int]:
    """Ids that end a generation: eos, and eot/eom where the file names them (Llama 3 chat)."""
    ids = _special_ids(meta)
    out = [ids[r] for r in ("eos", "eot", "eom") if r in ids]
    return list(dict.fromkeys(out))
