"""Prompts of a chosen length, without a dataset.

* `RandomTokenPrompts`: random token ids of the model's vocabulary, decoded to text and re-encoded
  until the text is exactly N tokens (vLLM's random dataset does the same). Needs the tokenizer.
* `SyntheticPrompts`: random words from a built-in list, for endpoints whose tokenizer we don't
  have. Its tokens-per-word ratio is calibrated against the endpoint's `usage` (see serve.py), so
  prompt lengths are right to within a few tokens; uncalibrated it assumes 1.3 tokens a word.

Every call returns a fresh prompt: no two requests share a prefix, so an endpoint's prompt cache
cannot make a benchmark look faster than it is (the multi-turn scenario measures that on purpose).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from impetus.bench.tokens import Tokenizer

# Common English words: ordinary text for any tokenizer, no dataset download.
_WORD_TEXT = """the of and to in is was for on that with as by at from his her it an were are which
this be or has had have not but first one their its after new who they two he she been other
when there all during into school time may years more most only over city some world would where
later up such used many can state about national out known university united then made also
under name year between both these game team part series people under number called following
water system music high company season three small place album song film work house general
church group three government because several early well main could those city four life since
however until being long large left public area light power field second great family river
history region country south north east west old good best last end point line form case order
example design model data token speed cache memory batch prompt answer question reason result
value method process energy market story travel garden window mountain ocean forest bridge letter
"""
WORDS = sorted(set(_WORD_TEXT.split()))


class PromptSource(Protocol):
    name: str

    def make(self, n_tokens: int, rng: np.random.Generator) -> tuple[str, int | None]:
        """A prompt of about `n_tokens` tokens, and its exact length when known."""
        ...


class RandomTokenPrompts:
    name = "random"

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        special = set(tokenizer.all_special_ids or [])
        self.candidates = np.array([i for i in range(len(tokenizer)) if i not in special])
        if self.candidates.size == 0:
            raise ValueError("the tokenizer has no ordinary tokens")

    def make(self, n_tokens: int, rng: np.random.Generator) -> tuple[str, int | None]:
        ids = rng.choice(self.candidates, size=n_tokens).tolist()
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        # Decoding then encoding merges or splits tokens; trim or pad until the text is n tokens.
        for _ in range(10):
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == n_tokens:
                return text, n_tokens
            if len(ids) > n_tokens:
                ids = ids[:n_tokens]
            else:
                ids = ids + rng.choice(self.candidates, size=n_tokens - len(ids)).tolist()
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text, len(self.tokenizer.encode(text, add_special_tokens=False))


class SyntheticPrompts:
    name = "synthetic"

    def __init__(self, tokens_per_word: float = 1.3) -> None:
        self.tokens_per_word = tokens_per_word
        self.calibrated = False

    def words(self, n_words: int, rng: np.random.Generator) -> str:
        return " ".join(rng.choice(WORDS, size=max(1, n_words)).tolist())

    def make(self, n_tokens: int, rng: np.random.Generator) -> tuple[str, int | None]:
        return self.words(round(n_tokens / self.tokens_per_word), rng), None

    def calibrate(self, words_a: int, tokens_a: int, words_b: int, tokens_b: int) -> None:
        """Two prompts of different word counts and their `usage.prompt_tokens`: the slope is
        tokens per word, the chat template's fixed overhead cancels out."""
        if words_b != words_a and tokens_b > tokens_a:
            self.tokens_per_word = (tokens_b - tokens_a) / (words_b - words_a)
            self.calibrated = True
