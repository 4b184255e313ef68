"""A tiny random Llama with a real byte-level BPE tokenizer and a ChatML template.

Small enough to build in a second and to run anything on two CPU cores; real enough that mlx-lm
loads it like any hub model (config.json, model.safetensors, tokenizer.json, chat template).
"""

from __future__ import annotations

import json
from pathlib import Path

# ChatML with Hermes-style tool calls, so mlx-lm infers its `json_tools` parser for this model.
CHATML = (
    "{%- if tools %}<|im_start|>system\nYou can call these tools:\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "Answer with <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n{% endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    "{% for tool_call in message.tool_calls %}<tool_call>\n"
    "{\"name\": \"{{ tool_call.name }}\", \"arguments\": {{ tool_call.arguments | tojson }}}\n</tool_call>"
    "{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A reasoning model's template (Qwen3's shape): the generation prompt opens the think block,
# unless the caller turns thinking off (`enable_thinking`, which mlx-lm passes to templates).
THINK_CHATML = (
    "{%- for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)
THINK_SPECIALS = ["<think>", "</think>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? Paris is the capital of France.",
    "Hello, world! How are you today? I am fine, thank you.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 1000. Symbols: { } [ ] ( ) \" : , ; - _ + = * / \\",
    "Unicode: café, naïve, über, 東京, 😀, ñ, ß, é.",
    "def main():\n    print('hello')\n    return 0\n",
    '{"name": "impetus", "value": 3, "items": [true, false, null]}',
] * 4

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def write_tokenizer_config(dest: Path, model_max_length: int, template: str = CHATML) -> None:
    """ChatML template, <|im_end|> as EOS: what mlx-lm and transformers read beside tokenizer.json."""
    (dest / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "unk_token": None,
                "pad_token": "<|endoftext|>",
                "chat_template": template,
                "model_max_length": model_max_length,
                "add_bos_token": False,
            }
        )
    )
    (dest / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))


def build_tokenizer(dest: Path, vocab_size: int = 384, thinking: bool = False) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS + (THINK_SPECIALS if thinking else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.save(str(dest / "tokenizer.json"))
    write_tokenizer_config(dest, model_max_length=512, template=THINK_CHATML if thinking else CHATML)
    return tok.get_vocab_size()


def build_tiny_llama(
    dest: Path, *, seed: int = 0, context: int = 512, hidden: int = 64, layers: int = 2, thinking: bool = False
) -> Path:
    """`thinking`: a reasoning model, with <think> / </think> tokens and a template that opens
    the think block (mlx-lm recognises the markers from the vocabulary)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    dest.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(dest, thinking=thinking)
    config = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": hidden * 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "max_position_embeddings": context,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    # Larger-than-default projections: the default init decodes one token forever, this one gives
    # varied text, so that sampling parameters visibly change the output.
    params = {k: v * 3.0 if k.endswith("proj.weight") else v for k, v in tree_flatten(model.parameters())}
    mx.save_safetensors(str(dest / "model.safetensors"), params, metadata={"format": "mlx"})
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest


def build_tiny_gpt2(dest: Path, *, seed: int = 0) -> Path:
    """A tiny random GPT-2: an architecture mlx-lm has no tensor parallelism for (no `shard`)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import gpt2

    dest.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(dest)
    config = {
        "model_type": "gpt2",
        "n_ctx": 128,
        "n_embd": 32,
        "n_head": 2,
        "n_layer": 1,
        "n_positions": 128,
        "layer_norm_epsilon": 1e-5,
        "vocab_size": vocab,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }
    mx.random.seed(seed)
    model = gpt2.Model(gpt2.ModelArgs.from_dict(config))
    mx.save_safetensors(str(dest / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest
