"""ir3de.fitting.counting with a real (toy) tokenizer: the counted ids and histograms are the obvious ones."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ir3de.fitting.counting import TextCounter, encode_for_counting
from ir3de.fitting.statistics import TEXT_ROW_MASS, ExpertCounts
from paper_oracle import text_level_rows


def plain_ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False).ids if text.strip() else []


def test_encode_for_counting_is_per_text_encode(toy_tokenizer, toy_corpus):
    texts = [t for ts in toy_corpus.values() for t in ts] + ["", "\n\t "]
    flat, lengths = encode_for_counting(toy_tokenizer, texts)
    per_text = [plain_ids(toy_tokenizer, t) for t in texts]
    assert flat.dtype == lengths.dtype == np.int64
    assert lengths.tolist() == [len(x) for x in per_text]
    assert flat.tolist() == [t for x in per_text for t in x]
    assert lengths[-2:].tolist() == [0, 0]


def test_encode_for_counting_adds_no_special_token(toy_tokenizer):
    from tokenizers.processors import TemplateProcessing

    tok = toy_tokenizer.__class__.from_str(toy_tokenizer.to_str())
    tok.post_processor = TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 2)])
    assert tok.encode("x plus x").ids[-1] == 2  # the template would append <eos> ...
    flat, _ = encode_for_counting(tok, ["x plus x"])
    assert 2 not in flat.tolist()  # ... but counting never adds special tokens


def test_text_counter_is_the_plain_histogram(toy_tokenizer, toy_corpus, vocab_size, excluded_ids):
    for texts in toy_corpus.values():
        c = TextCounter(toy_tokenizer, vocab_size, excluded_ids)
        c.add(texts)
        got = c.result()
        hist = Counter(
            t for text in texts for t in plain_ids(toy_tokenizer, text) if t not in set(excluded_ids.tolist())
        )
        assert dict(zip(got.token_ids.tolist(), got.counts.tolist())) == dict(hist)
        assert got.num_texts == c.num_texts == len(texts)  # whitespace-only texts still count as texts
        assert got.text_gram is None


@pytest.mark.parametrize("with_matrix", [False, True])
def test_batching_sharding_and_order_do_not_change_the_statistics(
    with_matrix, toy_tokenizer, toy_corpus, vocab_size, excluded_ids, toy_matrix
):
    texts = [t for ts in toy_corpus.values() for t in ts]
    matrix = toy_matrix if with_matrix else None

    def count(batches):
        c = TextCounter(toy_tokenizer, vocab_size, excluded_ids, matrix)
        for b in batches:
            c.add(b)
        return c.result()

    whole = count([texts])
    assert count([[t] for t in texts]) == whole  # batch size 1
    assert count([texts[:4], texts[4:9], texts[9:]]) == whole
    assert count([texts[5:], texts[:5]]) == whole
    assert count([texts]) + ExpertCounts.empty() == whole.without_text_gram()  # the Gram needs both sides
    assert count([texts[:5]]) + count([texts[5:]]) == whole  # additivity of shards
    rng = np.random.default_rng(0)
    assert count([[texts[i] for i in rng.permutation(len(texts))]]) == whole  # order independence
    assert (whole.text_gram is not None) == with_matrix


def test_text_gram_matches_the_plain_text_level_rows(
    toy_tokenizer, toy_corpus, vocab_size, excluded_ids, toy_matrix
):
    texts = toy_corpus["math"] + ["<eos> <pad>"]  # a text with only special tokens has no row
    c = TextCounter(toy_tokenizer, vocab_size, excluded_ids, toy_matrix)
    c.add(texts)
    got = c.result()
    ids = [plain_ids(toy_tokenizer, t) for t in texts]
    x, _, w = text_level_rows([ids], toy_matrix, set(excluded_ids.tolist()), balance=False)
    # window sums accumulate in the embeddings' float32 (ir3de.fitting.statistics._segment_sums)
    np.testing.assert_allclose(got.text_gram, (x * w[:, None]).T @ x, rtol=1e-5, atol=1e-6)
    scored = sum(1 for t in ids if set(t) - set(excluded_ids.tolist()))
    assert got.num_scored_texts == scored == len(texts) - 2  # "   " and "<eos> <pad>" have no row
    assert got.text_gram[-1, -1] == pytest.approx(TEXT_ROW_MASS * scored)
    assert got.without_text_gram() == _counted(toy_tokenizer, vocab_size, excluded_ids, texts)


def _counted(tokenizer, vocab_size, excluded_ids, texts):
    c = TextCounter(tokenizer, vocab_size, excluded_ids)
    c.add(texts)
    return c.result()


def test_errors_name_the_mismatch(toy_tokenizer, vocab_size, toy_matrix):
    with pytest.raises(ValueError, match="rows but vocab_size"):
        TextCounter(toy_tokenizer, vocab_size + 1, None, toy_matrix)
    small = TextCounter(toy_tokenizer, 5)  # the tokenizer's ids go up to 22
    with pytest.raises(ValueError, match="does not match the embedding matrix"):
        small.add(["lambda"])
