"""Toy fixtures for the unit tests of the math modules: a tiny real tokenizer and seeded random matrices.

No model, no data set: every test here runs in milliseconds. The tokenizer is a real
``tokenizers.Tokenizer`` (WordLevel over a small vocabulary, whitespace pre-tokenizer) with two
special tokens, so counting goes through the same ``encode_batch`` path as with a real LLM tokenizer.
"""

from __future__ import annotations

import numpy as np
import pytest

WORDS = [
    "solve",
    "equation",
    "x",
    "plus",
    "minus",
    "integral",
    "prime",  # math-ish
    "def",
    "return",
    "class",
    "import",
    "lambda",
    "loop",
    "bug",  # code-ish
    "the",
    "a",
    "of",
    "and",
    "is",
    "to",  # function words
]
SPECIALS = ["<unk>", "<pad>", "<eos>"]
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
UNK, PAD, EOS = 0, 1, 2
HIDDEN = 4


def make_tokenizer():
    """A WordLevel tokenizer over ``VOCAB`` splitting on whitespace; ``<pad>``/``<eos>`` are special."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<pad>", "<eos>"])
    return tok


@pytest.fixture(scope="session")
def toy_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def vocab_size() -> int:
    return len(VOCAB)


@pytest.fixture(scope="session")
def excluded_ids() -> np.ndarray:
    """The special tokens that never count (like the padding/EOS ids of a real tokenizer)."""
    return np.array([PAD, EOS], np.int64)


@pytest.fixture(scope="session")
def toy_matrix(vocab_size) -> np.ndarray:
    """A seeded (V, h) float32 embedding matrix, read-only like a real one."""
    m = np.random.default_rng(0).normal(size=(vocab_size, HIDDEN)).astype(np.float32)
    m.flags.writeable = False
    return m


@pytest.fixture(scope="session")
def toy_corpus() -> dict[str, list[str]]:
    """Three tiny 'experts' with a whitespace-only text, an out-of-vocabulary word and special tokens."""
    return {
        "math": [
            "solve the equation x plus x",
            "the integral of x is",
            "a prime is a prime <eos>",
            "   ",
            "minus x minus x minus x plus a equation solve integral prime the of",
        ],
        "code": [
            "def f return x",
            "import lambda and class",
            "the loop has a bug <pad> <pad>",
            "return return return",
        ],
        "chat": ["the and of a to is", "is it a bug to the", "hello world"],
    }


@pytest.fixture(scope="session")
def toy_ids(toy_tokenizer, toy_corpus) -> dict[str, list[list[int]]]:
    """Each text's ids as counting sees them (no special tokens added; whitespace-only -> no id)."""
    return {
        name: [toy_tokenizer.encode(t, add_special_tokens=False).ids if t.strip() else [] for t in texts]
        for name, texts in toy_corpus.items()
    }


def random_logits(rng: np.random.Generator, vocab: int, experts: int, *, ties: bool = False) -> np.ndarray:
    """float32 logits; with ``ties`` several rows are repeated exactly (equal entropies and votes)
    and some rows are constant (every expert tied, entropy = log D)."""
    logits = rng.normal(scale=2.0, size=(vocab, experts)).astype(np.float32)
    if ties:
        logits[1::3] = logits[0]
        logits[2::5] = 0.0
    return logits


@pytest.fixture(scope="session")
def make_logits():
    """``make_logits(seed, vocab, experts, ties=False)``: seeded random float32 logits."""
    return lambda seed, vocab, experts, ties=False: random_logits(
        np.random.default_rng(seed), vocab, experts, ties=ties
    )
