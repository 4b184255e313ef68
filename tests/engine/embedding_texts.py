"""The fixed texts of the MiniLM reference (tests/engine/data/minilm_reference.npz)."""

LONG = " ".join(f"token{i} and some words" for i in range(300))  # far over 256 tokens

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Unicode: café, naïve, über, 東京, 😀, ñ, ß, é — ﬁ ligature, Ｆｕｌｌ width",
    LONG,
    "   leading and trailing spaces   ",
    "A man is eating food.",
    "def main():\n    print('hello')\n",
    *(f"sentence {i}: " + "lorem ipsum dolor " * (i % 9) for i in range(40)),
]
