"""Per-expert token histograms: the sufficient statistics of an IR3DE router.

The token router has no context, so every occurrence of token ``v`` in expert ``d``'s corpus is the
same training row ``[E[v], 1]`` with label ``d``. The paper's ridge matrices therefore depend on the
corpus only through the counts ``N[v, d]`` (DESIGN §2)::

    A = Ẽᵀ diag(Σ_d w_d N[:, d]) Ẽ        B[:, d] = w_d Ẽᵀ N[:, d]        Ẽ = [E, 1]

with ``w_d = 1`` in the paper and ``w_d`` = "equal token mass per expert" under domain balancing.
Counts are integers, so they add exactly: adding, removing or merging experts (or corpus shards
counted on other machines) is exact.

Text level. The library's default router fits one training row per *text* instead of per token: the
text's mean token embedding ``x_t = [mean_{i∈t} E[i], 1]``, plus the means of its consecutive
8-token windows with a total weight of 0.25 per text (so short prompts are in the training
distribution too; :func:`text_rows`). Its statistics are one dense matrix per expert, the text Gram
``G_d = Σ_{rows r of d} w_r x_r x_rᵀ`` ((h+1)², float64; its last column is ``B[:, d]`` and its corner
1.25 × the number of texts). Text Grams add like counts (up to float64 rounding in the order of
summation), and routing stays a table lookup: ``x_pᵀ W`` of a prompt is the mean of its tokens'
table logits.

This module is pure: it takes arrays and returns arrays. Tokenization lives in the router.

Example:
    >>> import numpy as np
    >>> c = ExpertCounts.from_token_ids([np.array([3, 1, 3]), np.array([1])], vocab_size=5)
    >>> c.token_ids.tolist(), c.counts.tolist(), c.num_texts, c.num_tokens
    ([1, 3], [2, 2], 2, 4)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

#: Text statistics also see each text cut into windows of this many countable tokens, with a total
#: weight of WINDOW_WEIGHT per text (measured: routes 8-token prompts like long ones, docs/routing-quality.md).
TEXT_WINDOW = 8
WINDOW_WEIGHT = 0.25
#: Weight one scored text adds to its expert's text Gram corner (its mean + its windows).
TEXT_ROW_MASS = 1.0 + WINDOW_WEIGHT
_TEXT_GRAM_RTOL = 1e-9
#: Texts per block when a Gram is rebuilt from token ids (fixed: the same ids give the same Gram).
_TOKEN_TEXTS_PER_BLOCK = 512

__all__ = [
    "TRAFFIC_POLICIES",
    "ExpertCounts",
    "KeepTokenIds",
    "TextGramSum",
    "TextTokens",
    "TokenCounter",
    "TrafficSummary",
    "add_text_statistics",
    "balance_factors",
    "balance_weights",
    "combine_grams",
    "corpus_factors",
    "expert_gram",
    "merged_counts",
    "mirror_lower",
    "rows_gram",
    "text_factor",
    "text_factor_gram",
    "text_factor_rows",
    "text_gram",
    "text_means",
    "text_ridge_matrices",
    "text_rows",
    "traffic_weights",
    "weights_with_traffic",
]

#: Which experts keep their texts' token ids (``RouterConfig.keep_token_ids``, :meth:`TextTokens.kept_by`).
KeepTokenIds: TypeAlias = bool | Literal["auto"]

#: How the weight of learned traffic is set (:func:`traffic_weights`).
TRAFFIC_POLICIES = ("per_prompt", "share", "balanced")


@dataclass(frozen=True, eq=False)
class TextTokens:
    """The token ids of an expert's texts: the compact exact form of its text statistics.

    Every text-statistics row is a (weighted) mean of embedding rows of known token ids, so the rows
    (or the Gram) of an expert are a function of its texts' countable token ids and the embedding
    matrix: :meth:`statistics` rebuilds them with the same function counting uses (:func:`text_factor`,
    bit for bit). Kept only when asked (``RouterConfig.keep_token_ids``): these ids are the
    tokenized texts.

    Attributes:
        ids: the countable token ids of the texts with at least one, one text after the other (int32).
        offsets: (T + 1,) int64 CSR index of the texts in ``ids`` (every text has at least one id).
        dim: ``h + 1`` of the embedding matrix the statistics are rebuilt with.

    Example:
        >>> t = TextTokens(np.array([3, 1, 3, 1], np.int32), np.array([0, 3, 4]), dim=3)
        >>> t.num_texts, t.num_rows, t.lengths.tolist()
        (2, 2, [3, 1])
    """

    ids: np.ndarray
    offsets: np.ndarray
    dim: int

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.int32).max)):
            raise ValueError("text token ids must be a 1-D array of non-negative int32 ids")
        if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != ids.size:
            raise ValueError(f"text token offsets must run from 0 to {ids.size} (one more than the texts)")
        if np.any(np.diff(offsets) <= 0):
            raise ValueError(
                "every text of text token ids must hold at least one id (offsets strictly increase)"
            )
        if int(self.dim) < 2:
            raise ValueError(f"dim (h + 1) must be at least 2, got {self.dim!r}")
        ids = np.array(ids, np.int32)  # a private, read-only copy
        ids.flags.writeable = False
        offsets = offsets.copy()
        offsets.flags.writeable = False
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "dim", int(self.dim))

    @property
    def lengths(self) -> np.ndarray:
        """Countable tokens per text (int64, all > 0)."""
        lengths: np.ndarray = np.diff(self.offsets)
        return lengths

    @property
    def num_texts(self) -> int:
        """Texts with at least one countable token (the scored texts)."""
        return int(self.offsets.size - 1)

    @property
    def num_rows(self) -> int:
        """Rows of the factor :meth:`statistics` gives: one per :data:`TEXT_WINDOW`-token window."""
        return int(np.sum(-(-self.lengths // TEXT_WINDOW)))

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.offsets.nbytes)

    def kept_by(self, keep: KeepTokenIds) -> bool:
        """Whether a router with ``keep_token_ids=keep`` keeps these ids: ``"auto"`` while they give
        fewer rows than ``h + 1`` (the rows form, whose window rows give back these windows' tokens
        anyway), ``True`` while they are smaller than a float64 Gram, ``False`` never.

        Example:
            >>> t = TextTokens(np.array([3, 1, 3, 1], np.int32), np.array([0, 3, 4]), dim=3)
            >>> t.kept_by("auto"), t.kept_by(True), t.kept_by(False)  # 2 rows < h + 1 = 3
            (True, True, False)
        """
        if keep == "auto":
            return self.num_rows < self.dim
        return keep is True and self.nbytes <= self.dim**2 * 8

    def statistics(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """The text statistics of these texts with the embedding ``matrix`` ((V, h)), as
        :class:`ExpertCounts` keyword arguments: ``{"text_rows": Y}`` while there are fewer rows than
        ``h + 1`` (:func:`text_factor` of all the texts at once: bit for bit the rows counting gives,
        since each text's rows depend on its own ids only), else ``{"stored_gram": G}`` (the rows'
        Gram added in fixed blocks of texts, so the same ids always give the same Gram)."""
        if matrix.shape[1] + 1 != self.dim:
            raise ValueError(
                f"these token ids' statistics are {self.dim - 1}-dimensional but the matrix has "
                f"{matrix.shape[1]} columns: pass the embeddings they were counted with"
            )
        if self.ids.size and int(self.ids.max()) >= matrix.shape[0]:
            raise ValueError(
                f"token id {int(self.ids.max())} is outside the embedding matrix's {matrix.shape[0]} rows"
            )
        countable = np.ones(matrix.shape[0], bool)  # the ids kept are the countable ones
        ids, lengths = self.ids.astype(np.int64), self.lengths
        if self.num_rows < self.dim:
            return {"text_rows": text_factor(matrix, ids, lengths, countable)}
        gram = np.zeros((self.dim, self.dim), np.float64)
        for lo in range(0, lengths.size, _TOKEN_TEXTS_PER_BLOCK):
            hi = min(lengths.size, lo + _TOKEN_TEXTS_PER_BLOCK)
            span = ids[int(self.offsets[lo]) : int(self.offsets[hi])]
            add_text_statistics(gram, matrix, span, lengths[lo:hi], countable, lower=True)
        mirror_lower(gram)  # once: the same matrix as mirroring after every block
        return {"stored_gram": gram}

    def __add__(self, other: TextTokens) -> TextTokens:
        """The texts of both, ``self``'s first."""
        if self.dim != other.dim:
            raise ValueError(
                f"token ids of statistics of dimensions {self.dim} and {other.dim} cannot be added"
            )
        return TextTokens(
            np.concatenate([self.ids, other.ids]),
            np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]]),
            self.dim,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TextTokens):
            return NotImplemented
        return (
            self.dim == other.dim
            and np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.ids, other.ids)
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_texts(cls, ids: np.ndarray, lengths: np.ndarray, countable: np.ndarray, dim: int) -> TextTokens:
        """The countable ids of texts given as flat ``ids`` and per-text ``lengths`` (as counted):
        ids with ``countable[id]`` False are dropped, and texts left without one."""
        ids, lengths = _countable_tokens(ids, lengths, countable)
        lengths = lengths[lengths > 0]
        offsets = np.zeros(lengths.size + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(ids.astype(np.int32), offsets, dim)


@dataclass(frozen=True, eq=False)
class ExpertCounts:
    """Sparse token histogram of one expert's corpus, and its text-level statistics.

    The text statistics ``G = Σ_r w_r x_r x_rᵀ`` ((h+1)², see the module docstring) are kept in their
    smaller exact form: an expert with fewer training rows than ``h + 1`` keeps the rows of a factor
    ``Y`` with ``G = Yᵀ Y`` (``text_rows``, one row per text window: ``n × (h+1)`` float64), others
    the Gram itself (``stored_gram``). A thousand small experts then cost memory in proportion to
    their texts, not ``D × (h+1)²``. Both forms give the same ``G`` up to float64 rounding.

    A third, more compact exact form is the texts' token ids (``text_tokens``, :class:`TextTokens`:
    the rows or Gram are a function of them and the embedding matrix), kept only when asked
    (``RouterConfig.keep_token_ids``: they are the tokenized texts). Counts may hold the ids alone (as
    loaded: ``text_form == "tokens"``, rebuilt by :meth:`with_text_statistics` when needed) or the
    ids with the statistics they give.

    Attributes:
        token_ids: sorted unique vocabulary ids (int64) that occur at least once.
        counts: occurrences of each id (int64, all > 0), aligned with ``token_ids``.
        num_texts: how many texts were counted.
        stored_gram: the text Gram when it is stored as a matrix, else ``None``.
        text_rows: the factor ``Y`` when stored as rows, else ``None``.
            More than ``h`` rows are folded into a Gram on construction.
        text_tokens: the texts' token ids when kept, else ``None``.

    Use :attr:`text_gram` for the Gram in either form (computed from the rows on each access),
    :attr:`has_text_statistics` / :attr:`text_form` to test which form there is (without the product).

    Example:
        >>> c = ExpertCounts(np.array([1]), np.array([2]), 1, text_rows=np.array([[0.5, 1.0]]))
        >>> c.text_form, c.text_gram.tolist(), c.num_scored_texts
        ('rows', [[0.25, 0.5], [0.5, 1.0]], 1)
    """

    token_ids: np.ndarray
    counts: np.ndarray
    num_texts: int
    stored_gram: np.ndarray | None = None
    text_rows: np.ndarray | None = None
    text_tokens: TextTokens | None = None

    def __post_init__(self) -> None:
        ids = np.ascontiguousarray(self.token_ids, dtype=np.int64)
        counts = np.ascontiguousarray(self.counts, dtype=np.int64)
        if ids.ndim != 1 or ids.shape != counts.shape:
            raise ValueError(f"token_ids {ids.shape} and counts {counts.shape} must be 1-D and aligned")
        if ids.size and (np.any(np.diff(ids) <= 0) or ids[0] < 0):
            raise ValueError("token_ids must be sorted, unique and non-negative")
        if counts.size and counts.min() <= 0:
            raise ValueError("counts must be positive (store only the ids that occur)")
        object.__setattr__(self, "token_ids", ids)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "num_texts", int(self.num_texts))
        if self.stored_gram is not None and self.text_rows is not None:
            raise ValueError("give the text statistics either as a Gram or as rows, not both")
        tokens = self.text_tokens
        if tokens is not None:
            if not isinstance(tokens, TextTokens):
                raise ValueError(f"text_tokens must be TextTokens, got {type(tokens).__name__}")
            if tokens.num_texts > self.num_texts:
                raise ValueError(
                    f"text_tokens hold {tokens.num_texts} texts but num_texts is {self.num_texts}"
                )
            if self.text_rows is not None and np.shape(self.text_rows)[0] != tokens.num_rows:
                raise ValueError(
                    f"text_rows has {np.shape(self.text_rows)[0]} rows but the token ids give {tokens.num_rows}"
                )
        if self.text_rows is not None:
            rows = np.array(self.text_rows, dtype=np.float64)  # a private copy
            if rows.ndim != 2 or rows.shape[1] < 2:
                raise ValueError(f"text_rows must be an (n, h+1) matrix, got shape {rows.shape}")
            if rows.shape[0] >= rows.shape[1]:  # the Gram is the smaller form
                object.__setattr__(self, "stored_gram", rows_gram(rows))
                object.__setattr__(self, "text_rows", None)
            else:
                corner = float(rows[:, -1] @ rows[:, -1])
                self._check_text_statistics(rows, corner)
                rows.flags.writeable = False
                object.__setattr__(self, "text_rows", rows)
        if self.stored_gram is not None:
            gram = np.array(self.stored_gram, dtype=np.float64)  # a private, read-only copy
            if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] < 2:
                raise ValueError(f"text_gram must be a square (h+1) x (h+1) matrix, got shape {gram.shape}")
            self._check_text_statistics(gram, float(gram[-1, -1]))
            gram.flags.writeable = False
            object.__setattr__(self, "stored_gram", gram)
        values = self.stored_gram if self.stored_gram is not None else self.text_rows
        if tokens is not None and values is not None and values.shape[1] != tokens.dim:
            raise ValueError(
                f"text statistics of dimension {values.shape[1]} given with token ids of {tokens.dim}"
            )

    def _check_text_statistics(self, values: np.ndarray, corner: float) -> None:
        if not np.all(np.isfinite(values)) or corner < 0 or corner > TEXT_ROW_MASS * self.num_texts + 0.5:
            raise ValueError(
                "text_gram is not a valid text Gram (non-finite values, or its corner — "
                f"{TEXT_ROW_MASS:g} × the number of texts with a countable token — is outside "
                f"[0, {TEXT_ROW_MASS * self.num_texts:g}] for num_texts={self.num_texts})"
            )

    @property
    def text_form(self) -> str | None:
        """How the text statistics are held: ``"gram"``, ``"rows"``, ``"tokens"`` (token ids only, not
        rebuilt yet: :meth:`with_text_statistics`), or ``None`` (token counts only)."""
        if self.stored_gram is not None:
            return "gram"
        if self.text_rows is not None:
            return "rows"
        return "tokens" if self.text_tokens is not None else None

    @property
    def has_text_statistics(self) -> bool:
        """Whether these counts carry text-level statistics (in any form)."""
        return self.stored_gram is not None or self.text_rows is not None or self.text_tokens is not None

    @property
    def needs_rebuild(self) -> bool:
        """Whether the text statistics are token ids only: the Gram needs :meth:`with_text_statistics`."""
        return self.text_form == "tokens"

    @property
    def text_dim(self) -> int | None:
        """``h + 1`` of the text statistics (``None`` without them)."""
        values = self.stored_gram if self.stored_gram is not None else self.text_rows
        if values is None:
            return None if self.text_tokens is None else self.text_tokens.dim
        return int(values.shape[1])

    def _require_statistics(self) -> None:
        if self.needs_rebuild:
            raise ValueError(
                "these text statistics are stored as token ids (keep_token_ids); rebuild them with "
                "counts.with_text_statistics(embeddings.matrix) first"
            )

    @property
    def text_gram(self) -> np.ndarray | None:
        """The text Gram ``Σ_r w_r x_r x_rᵀ`` ((h+1)², float64) in either form; ``None`` when these
        counts were made without the embedding matrix (only ``level="token"`` routers use them).
        For the rows form it is computed on each access (``Yᵀ Y``). Token ids alone raise
        ``ValueError`` (rebuild them with :meth:`with_text_statistics`)."""
        self._require_statistics()
        if self.text_rows is not None:
            return rows_gram(self.text_rows)
        return self.stored_gram

    def text_column(self) -> np.ndarray:
        """The last column of the text Gram (``Σ_r w_r x_r``: this expert's column of ``B``), cheaply
        (computed once per counts object)."""
        cached: np.ndarray | None = self.__dict__.get("_column")
        if cached is not None:
            return np.array(cached)
        self._require_statistics()
        if self.text_rows is not None:
            column: np.ndarray = self.text_rows.T @ self.text_rows[:, -1]
        elif self.stored_gram is None:
            raise ValueError("these counts carry no text statistics")
        else:
            column = np.array(self.stored_gram[:, -1])
        object.__setattr__(self, "_column", column)
        return np.array(column)

    @property
    def num_scored_texts(self) -> int:
        """Texts that had at least one countable token (rows of the text-level fit); 0 without text statistics."""
        if self.text_tokens is not None:
            return self.text_tokens.num_texts
        if self.text_rows is not None:
            corner = float(self.text_rows[:, -1] @ self.text_rows[:, -1])
        elif self.stored_gram is not None:
            corner = float(self.stored_gram[-1, -1])
        else:
            return 0
        return round(corner / TEXT_ROW_MASS)

    @property
    def num_tokens(self) -> int:
        """Total number of counted token occurrences."""
        return int(self.counts.sum())

    def with_text_statistics(self, matrix: np.ndarray) -> ExpertCounts:
        """These counts with text statistics held as rows or a Gram: token ids alone are rebuilt with
        the embedding ``matrix`` (:meth:`TextTokens.statistics`, bit for bit what counting gave; the ids
        stay); any other counts are returned as they are.

        Example:
            >>> m = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
            >>> t = TextTokens(np.array([0, 1], np.int32), np.array([0, 2]), dim=3)
            >>> c = ExpertCounts(np.array([0, 1]), np.array([1, 1]), 1, text_tokens=t)
            >>> c.text_form, c.with_text_statistics(m).text_form
            ('tokens', 'rows')
        """
        if not self.needs_rebuild:
            return self
        assert self.text_tokens is not None
        return ExpertCounts(
            self.token_ids,
            self.counts,
            self.num_texts,
            text_tokens=self.text_tokens,
            **self.text_tokens.statistics(matrix),
        )

    def keeping_token_ids(self, keep: KeepTokenIds, matrix: np.ndarray | None = None) -> ExpertCounts:
        """These counts with only the token ids a router with ``keep_token_ids=keep`` keeps
        (:meth:`TextTokens.kept_by`). Ids it drops that are all there is are rebuilt into statistics
        first, with the embedding ``matrix`` (``ValueError`` without it).

        Example:
            >>> m = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
            >>> t = TextTokens(np.array([0, 1], np.int32), np.array([0, 2]), dim=3)
            >>> c = ExpertCounts(np.array([0, 1]), np.array([1, 1]), 1, text_tokens=t)
            >>> c.keeping_token_ids("auto") is c, c.keeping_token_ids(False, m).text_form
            (True, 'rows')
        """
        if self.text_tokens is None or self.text_tokens.kept_by(keep):
            return self
        if self.needs_rebuild:
            if matrix is None:
                raise ValueError(
                    "these text statistics are token ids alone: pass the embedding matrix to rebuild "
                    "them before the ids are dropped"
                )
            return self.with_text_statistics(matrix).without_text_tokens()
        return self.without_text_tokens()

    def without_text_tokens(self) -> ExpertCounts:
        """The same counts and text statistics without the token ids (rebuild first when they are all
        there is: :meth:`with_text_statistics`)."""
        if self.text_tokens is None:
            return self
        self._require_statistics()
        return ExpertCounts(self.token_ids, self.counts, self.num_texts, self.stored_gram, self.text_rows)

    @classmethod
    def empty(cls) -> ExpertCounts:
        """A histogram with no token."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), 0)

    @classmethod
    def from_dense(cls, dense: np.ndarray, num_texts: int) -> ExpertCounts:
        """Build from a dense length-V count vector."""
        dense = np.asarray(dense)
        ids = np.flatnonzero(dense)
        return cls(ids.astype(np.int64), dense[ids].astype(np.int64), num_texts)

    @classmethod
    def from_token_ids(
        cls,
        id_arrays: Iterable[np.ndarray],
        vocab_size: int,
        excluded_ids: np.ndarray | None = None,
    ) -> ExpertCounts:
        """Count the ids of several texts (one array per text), dropping ``excluded_ids``."""
        counter = TokenCounter(vocab_size, excluded_ids)
        counter.add_texts(id_arrays)
        return counter.result()

    def to_dense(self, vocab_size: int) -> np.ndarray:
        """Dense int64 count vector of length ``vocab_size``."""
        dense = np.zeros(vocab_size, np.int64)
        dense[self.token_ids] = self.counts
        return dense

    def __add__(self, other: ExpertCounts) -> ExpertCounts:
        """Sum of two histograms (e.g. two shards of one corpus): exact for counts; text statistics
        add in float64 (rows are stacked while they stay the smaller form) and are kept only when both
        sides have them. Token ids are kept when both sides have them (the texts of both, ``self``'s
        first); then the statistics are those of the joined ids: stacked rows, or — when the rows
        would outnumber ``h + 1`` — ids alone, to rebuild (:meth:`with_text_statistics`)."""
        ids = np.union1d(self.token_ids, other.token_ids)
        counts = np.zeros(ids.size, np.int64)
        counts[np.searchsorted(ids, self.token_ids)] += self.counts
        counts[np.searchsorted(ids, other.token_ids)] += other.counts
        num_texts = self.num_texts + other.num_texts
        if not (self.has_text_statistics and other.has_text_statistics):
            return ExpertCounts(ids, counts, num_texts)
        if self.text_dim != other.text_dim:
            raise ValueError(
                f"text statistics of dimensions {self.text_dim} and {other.text_dim} come from "
                "different embedding matrices and cannot be added"
            )
        if self.text_tokens is not None and other.text_tokens is not None:
            tokens = self.text_tokens + other.text_tokens
            if self.text_rows is not None and other.text_rows is not None and tokens.num_rows < tokens.dim:
                rows = np.concatenate([self.text_rows, other.text_rows])
                return ExpertCounts(ids, counts, num_texts, text_rows=rows, text_tokens=tokens)
            return ExpertCounts(ids, counts, num_texts, text_tokens=tokens)
        self._require_statistics()
        other._require_statistics()
        if self.text_rows is not None and other.text_rows is not None:
            return ExpertCounts(
                ids, counts, num_texts, text_rows=np.concatenate([self.text_rows, other.text_rows])
            )
        gram = self.text_gram
        other_gram = other.text_gram
        assert gram is not None and other_gram is not None
        return ExpertCounts(ids, counts, num_texts, gram + other_gram)

    def without_text_gram(self) -> ExpertCounts:
        """The same counts with the text-level statistics dropped."""
        return ExpertCounts(self.token_ids, self.counts, self.num_texts)

    def __eq__(self, other: object) -> bool:
        """Counts equal exactly; text statistics equal as Grams up to float64 rounding (their sums
        depend on the order in which texts were added, e.g. batching or sharding, and on the form),
        or as token ids exactly when both sides keep them (the statistics are a function of the ids).
        Token ids alone compared with statistics without ids raise ``ValueError`` (rebuild first)."""
        if not isinstance(other, ExpertCounts):
            return NotImplemented
        if not (
            self.num_texts == other.num_texts
            and np.array_equal(self.token_ids, other.token_ids)
            and np.array_equal(self.counts, other.counts)
            and self.has_text_statistics == other.has_text_statistics
        ):
            return False
        if not self.has_text_statistics:
            return True
        if self.text_tokens is not None and other.text_tokens is not None:
            return self.text_tokens == other.text_tokens
        mine, theirs = self.text_gram, other.text_gram
        assert mine is not None and theirs is not None
        return mine.shape == theirs.shape and bool(np.allclose(mine, theirs, rtol=_TEXT_GRAM_RTOL, atol=0.0))

    __hash__ = None  # type: ignore[assignment]


def merged_counts(
    a: ExpertCounts, b: ExpertCounts, keep: KeepTokenIds, matrix: np.ndarray | None = None
) -> ExpertCounts:
    """``a + b`` for a router with ``keep_token_ids=keep``: where it keeps the joined token ids, the
    sum keeps them; where it does not, the two sides' statistics are added as a router that keeps no
    ids adds them (ids that are all there is are rebuilt first, with ``matrix``), so ``"auto"`` and
    ``False`` give the same statistics bit for bit.

    Example:
        >>> t = TextTokens(np.array([0, 1], np.int32), np.array([0, 2]), dim=3)
        >>> m = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
        >>> c = ExpertCounts(np.array([0, 1]), np.array([1, 1]), 1, text_tokens=t).with_text_statistics(m)
        >>> two = merged_counts(c, c, "auto")  # 2 rows < h + 1 = 3: the ids are kept
        >>> two.text_form, two.text_tokens is None
        ('rows', False)
        >>> three = merged_counts(two, c, "auto")  # 3 rows: the Gram alone
        >>> three.text_form, three.text_tokens is None
        ('gram', True)
    """
    if (
        a.text_tokens is not None
        and b.text_tokens is not None
        and not (a.text_tokens + b.text_tokens).kept_by(keep)
    ):
        a, b = a.keeping_token_ids(False, matrix), b.keeping_token_ids(False, matrix)
    return (a + b).keeping_token_ids(keep, matrix)


def rows_gram(rows: np.ndarray) -> np.ndarray:
    """``Yᵀ Y`` of a float64 factor ``Y`` (n × (h+1)), in row blocks (the text Gram of rows-form statistics).

    Example:
        >>> rows_gram(np.array([[1.0, 1.0], [2.0, 1.0]])).tolist()
        [[5.0, 3.0], [3.0, 2.0]]
    """
    rows = np.asarray(rows, np.float64)
    gram = np.zeros((rows.shape[1], rows.shape[1]), np.float64)
    for lo in range(0, rows.shape[0], _GRAM_BLOCK_ROWS):
        _add_block_gram_lower(gram, rows[lo : lo + _GRAM_BLOCK_ROWS])
    mirror_lower(gram)
    return gram


def _add_block_gram_lower(gram: np.ndarray, block: np.ndarray) -> None:
    """Add ``blockᵀ block`` to the lower triangle of the symmetric float64 matrix ``gram``, in place.

    One BLAS ``dsyrk`` (a symmetric rank-k update: half the multiplications of ``block.T @ block``,
    no temporary, float64 throughout): ``gram``'s transpose is a Fortran-ordered view on which
    ``dsyrk`` updates the upper triangle. Only the lower triangle is current afterwards: every Gram
    built here is finished by :func:`mirror_lower`, so the kernel and its rounding are the same on
    every path that builds text Grams (their bit-for-bit equalities rest on that).
    """
    from scipy.linalg import blas

    block = np.ascontiguousarray(block, np.float64)
    if block.shape[0] == 0:
        return
    out = blas.dsyrk(1.0, block.T, beta=1.0, c=gram.T, trans=0, lower=0, overwrite_c=1)
    if not np.shares_memory(out, gram):  # gram was not C-contiguous float64: f2py worked on a copy
        gram[...] = out.T


def mirror_lower(gram: np.ndarray) -> None:
    """Copy the lower triangle of a square matrix onto its upper triangle, in place.

    Example:
        >>> g = np.array([[1.0, 0.0], [2.0, 3.0]]); mirror_lower(g); g.tolist()
        [[1.0, 2.0], [2.0, 3.0]]
    """
    np.copyto(gram, gram.T, where=_strict_upper(gram.shape[0]))


@functools.lru_cache(maxsize=4)
def _strict_upper(n: int) -> np.ndarray:
    """The (n, n) read-only mask of the entries above the diagonal."""
    mask = np.triu(np.ones((n, n), bool), 1)
    mask.flags.writeable = False
    return mask


class TokenCounter:
    """Accumulates a dense histogram batch by batch; ``result()`` returns the sparse form.

    Example:
        >>> import numpy as np
        >>> c = TokenCounter(vocab_size=4, excluded_ids=np.array([0]))
        >>> c.add_texts([np.array([0, 2, 2])]); c.result().counts.tolist()
        [2]
    """

    def __init__(self, vocab_size: int, excluded_ids: np.ndarray | None = None) -> None:
        self.vocab_size = int(vocab_size)
        self._dense = np.zeros(self.vocab_size, np.int64)
        self._excluded = (
            np.asarray(excluded_ids, np.int64) if excluded_ids is not None else np.zeros(0, np.int64)
        )
        if self._excluded.size and (self._excluded.min() < 0 or self._excluded.max() >= self.vocab_size):
            bad = self._excluded[(self._excluded < 0) | (self._excluded >= self.vocab_size)]
            raise ValueError(
                f"excluded token id {int(bad[0])} is outside the vocabulary [0, {self.vocab_size}): "
                "pass the special-token ids of the tokenizer that matches the embedding matrix"
            )
        self.num_texts = 0

    def add_texts(self, id_arrays: Iterable[np.ndarray]) -> None:
        arrays = [np.asarray(a, np.int64) for a in id_arrays]
        self.num_texts += len(arrays)
        if arrays:
            self.add_flat(np.concatenate(arrays) if len(arrays) > 1 else arrays[0], num_texts=0)

    def add_flat(self, ids: np.ndarray, num_texts: int) -> None:
        """Add a flat array of ids that belong to ``num_texts`` texts."""
        self.num_texts += int(num_texts)
        if ids.size == 0:
            return
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(
                f"token id out of range [0, {self.vocab_size}): the tokenizer does not match the "
                "embedding matrix"
            )
        self._dense += np.bincount(ids, minlength=self.vocab_size)

    def add_counts(self, token_ids: np.ndarray, counts: np.ndarray, num_texts: int) -> None:
        """Add a sparse histogram (e.g. one shard's counts from another process)."""
        ids = np.asarray(token_ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"token id out of range [0, {self.vocab_size}): counts come from another tokenizer"
            )
        np.add.at(self._dense, ids, np.asarray(counts, np.int64))
        self.num_texts += int(num_texts)

    def result(self) -> ExpertCounts:
        dense = self._dense.copy()
        if self._excluded.size:
            dense[self._excluded] = 0
        return ExpertCounts.from_dense(dense, self.num_texts)


def text_rows(
    matrix: np.ndarray,
    ids: np.ndarray,
    lengths: np.ndarray,
    countable: np.ndarray,
    window: int | None = TEXT_WINDOW,
    window_weight: float = WINDOW_WEIGHT,
) -> tuple[np.ndarray, np.ndarray]:
    """The text-level training rows of T texts (without bias) and their weights.

    Every text with a countable token gives its mean embedding (weight 1). With ``window``, each such
    text is also cut into consecutive windows of ``window`` countable tokens whose means are rows of
    weight ``window_weight / (number of windows of the text)``: every text adds the same mass whatever
    its length, and the fit also sees short spans like the short prompts it will route.

    Args:
        matrix: the (V, h) embedding matrix.
        ids: flat token ids of T texts, text after text.
        lengths: (T,) tokens per text.
        countable: (V,) bool, False for ids that never count (special tokens).
        window: window length in countable tokens (``None``: text means only).
        window_weight: total weight of one text's windows.

    Returns:
        ``(rows, weights)``: (T' + W', h) float64 means — the T' text means first, in order, then the
        W' window means — and their (T' + W',) weights. Texts without a countable token give no row.

    Example:
        >>> m = np.array([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], np.float32)
        >>> rows, w = text_rows(m, np.array([0, 1, 2, 0]), np.array([3, 1]), np.array([True, True, False]), 1, 0.5)
        >>> rows.tolist(), w.tolist()
        ([[0.5, 0.5], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [1.0, 1.0, 0.25, 0.25, 0.5])
    """
    parts = _text_parts(matrix, ids, lengths, countable, window)
    if parts is None:
        return np.zeros((0, matrix.shape[1]), np.float64), np.zeros(0, np.float64)
    text_sums, sizes, window_sums, window_sizes, per_text = parts
    means = text_sums / sizes[:, None]
    if not window:
        return means, np.ones(sizes.size)
    rows = np.concatenate([means, window_sums.astype(np.float64) / window_sizes[:, None]])
    weights = np.concatenate([np.ones(sizes.size), np.repeat(window_weight / per_text, per_text)])
    return rows, weights


def _countable_tokens(
    ids: np.ndarray, lengths: np.ndarray, countable: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flat ``ids`` and per-text ``lengths`` with the ids where ``countable[id]`` is False dropped
    (int64; a text left without an id keeps length 0)."""
    ids = np.asarray(ids, np.int64)
    lengths = np.asarray(lengths, np.int64)
    keep = countable[ids]
    if not keep.all():
        seg = np.repeat(np.arange(lengths.size), lengths)
        lengths = np.bincount(seg[keep], minlength=lengths.size)
        ids = ids[keep]
    return ids, lengths


def _text_parts(
    matrix: np.ndarray, ids: np.ndarray, lengths: np.ndarray, countable: np.ndarray, window: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Sums and sizes of the texts (with a countable token) and of their windows; ``None`` when no
    token counts. Returns ``(text_sums, sizes, window_sums, window_sizes, windows_per_text)``."""
    ids, lengths = _countable_tokens(ids, lengths, countable)
    if ids.size == 0:
        return None
    sizes = lengths[lengths > 0]
    # windows: consecutive spans of `window` countable tokens inside each text; without windows, the
    # same 8-token spans are only the float32 stage of the texts' float64 sums
    span = int(window) if window else TEXT_WINDOW
    per_text = -(-sizes // span)  # ceil
    window_sizes = np.full(int(per_text.sum()), span, np.int64)
    last_window = np.cumsum(per_text) - 1
    window_sizes[last_window] = sizes - (per_text - 1) * span
    window_sums = _segment_sums(matrix, ids, window_sizes)  # the matrix's dtype (float32)
    text_sums = _segment_sums(window_sums.astype(np.float64), np.arange(window_sums.shape[0]), per_text)
    return text_sums, sizes, window_sums, window_sizes, per_text


def _segment_sums(matrix: np.ndarray, ids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Sums of ``matrix[ids]`` over consecutive segments of ``sizes`` (all > 0), in the matrix's dtype.

    One sparse product ``S · matrix`` with ``S`` the (segments × vocabulary) 0/1 incidence matrix:
    no (tokens × h) copy is materialised, so a huge text costs no more memory than its ids. The sums
    are in the matrix's own precision: float32 for an embedding matrix, whose 8-token window sums this
    computes (their rounding is that of the stored embeddings themselves); callers add windows into
    texts in float64. Each segment is summed on its own, so its sum never depends on how texts were
    batched. Pure numpy/scipy: fitting on the CPU imports no torch.
    """
    import scipy.sparse

    if matrix.dtype not in (np.float32, np.float64):
        matrix = matrix.astype(np.float32)
    indptr = np.zeros(sizes.size + 1, np.int64)
    np.cumsum(sizes, out=indptr[1:])
    incidence = scipy.sparse.csr_matrix(
        (np.ones(ids.size, matrix.dtype), np.asarray(ids, np.int64), indptr),
        shape=(sizes.size, matrix.shape[0]),
    )
    return np.asarray(incidence @ matrix)


def text_means(matrix: np.ndarray, ids: np.ndarray, lengths: np.ndarray, countable: np.ndarray) -> np.ndarray:
    """Mean embedding of each text's countable tokens ((T', h) float64; texts without one are skipped).

    Example:
        >>> m = np.array([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], np.float32)
        >>> text_means(m, np.array([0, 1, 2, 2]), np.array([3, 1]), np.array([True, True, False])).tolist()
        [[0.5, 0.5]]
    """
    return text_rows(matrix, ids, lengths, countable, window=None)[0]


def text_gram(means: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``Σ_r w_r x_r x_rᵀ`` with ``x_r = [mean_r, 1]``: one expert's (or one batch's) text-level statistics.

    Example:
        >>> text_gram(np.array([[1.0, 2.0]])).tolist()
        [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    means = np.asarray(means, np.float64)
    n, hidden = means.shape
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    if np.any(w < 0):  # no square root: the plain product
        x = np.concatenate([means, np.ones((n, 1))], axis=1)
        product: np.ndarray = (x * w[:, None]).T @ x
        return product
    gram = np.zeros((hidden + 1, hidden + 1), np.float64)
    root = np.sqrt(w)
    _add_row_gram(gram, [(means, None, root)], root)
    return gram


#: Rows per Gram block: a (rows × (h+1)) float64 block of a few MB to tens of MB.
_GRAM_BLOCK_ROWS = 4096
#: Rows per block when factor rows are built and multiplied on the fly (:func:`_add_row_gram`): a
#: 512 × (h+1) float64 block (~2.4 MB at h = 576) is built in cache, about twice as fast as 4096 rows,
#: and the rank-k update costs the same per row.
_BUILD_BLOCK_ROWS = 512


def _add_row_gram(
    gram: np.ndarray,
    terms: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]],
    bias: np.ndarray,
    *,
    lower: bool = False,
) -> None:
    """``gram += Σ_r y_r y_rᵀ`` with ``y_r = [Σ_k f_k[r] · src_k[idx_k[r]], bias[r]]``, in row blocks.

    ``terms`` are ``(src, idx, f)`` (``idx=None``: row ``r`` of ``src``; ``f=None``: no factor). Each block is written once
    into a reused float64 buffer and multiplied by itself (``Bᵀ B``, a symmetric rank-k update in
    float64, :func:`_add_block_gram_lower`: products keep float64 rounding, as the exactness tests
    require). ``gram`` must be symmetric on entry; it is symmetric on return (``lower``: only its lower
    triangle is read and updated, see :func:`add_text_statistics`).
    """
    hidden = gram.shape[0] - 1
    n = bias.size
    if n == 0:
        return
    rows = min(n, _BUILD_BLOCK_ROWS)
    buf = np.empty((rows, hidden + 1), np.float64)
    scratch = np.empty((rows, hidden), np.float64) if len(terms) > 1 else None
    for lo in range(0, n, _BUILD_BLOCK_ROWS):
        hi = min(n, lo + _BUILD_BLOCK_ROWS)
        block = buf[: hi - lo]
        _write_rows(block, terms, bias, lo, hi, scratch)
        _add_block_gram_lower(gram, block)
    if not lower:
        mirror_lower(gram)


def _write_rows(
    block: np.ndarray,
    terms: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]],
    bias: np.ndarray,
    lo: int,
    hi: int,
    scratch: np.ndarray | None = None,
) -> None:
    """Write rows ``lo:hi`` of the factor ``y_r = [Σ_k f_k[r] · src_k[idx_k[r]], bias[r]]`` into ``block``.

    Each term is cast into float64 and scaled (``scratch``: a reused (rows, h) float64 buffer for the
    terms after the first), so no temporary is allocated per block; the values are those of
    ``float64(src) · f`` summed term after term, bit for bit.
    """
    hidden = block.shape[1] - 1
    left = block[:, :hidden]
    for k, (src, idx, f) in enumerate(terms):
        if k == 0:
            target = left
        else:
            if scratch is None:
                scratch = np.empty((hi - lo, hidden), np.float64)
            target = scratch[: hi - lo]
        if idx is None and f is not None:  # one pass: float64(src) · f, the value a copy then a product gives
            np.multiply(src[lo:hi], f[lo:hi, None], out=target)
        else:
            if idx is None:
                np.copyto(target, src[lo:hi])
            elif src.dtype == np.float64:
                np.take(src, idx[lo:hi], axis=0, out=target)
            else:
                np.copyto(target, src[idx[lo:hi]])
            if f is not None:
                np.multiply(target, f[lo:hi, None], out=target)
        if k:
            np.add(left, target, out=left)
    block[:, hidden] = bias[lo:hi]


def add_text_statistics(
    gram: np.ndarray,
    matrix: np.ndarray,
    ids: np.ndarray,
    lengths: np.ndarray,
    countable: np.ndarray,
    window: int | None = TEXT_WINDOW,
    window_weight: float = WINDOW_WEIGHT,
    *,
    lower: bool = False,
) -> None:
    """``gram += text_gram(*text_rows(matrix, ids, lengths, countable, window, window_weight))``, faster.

    The same statistics with one Gram row per window instead of one per window plus one per text.
    A text's mean ``m`` is a combination of its window means ``x_w`` (``m = Σ_w a_w x_w``,
    ``a_w = |w| / |t|``), so its rows' Gram ``Σ_w c_w x_w x_wᵀ + m mᵀ = Xᵀ (C + a aᵀ) X`` equals
    ``Yᵀ Y`` with ``y_w = √c_w x_w + β (a_w / √c_w) m``, ``β = 1 / (1 + √(1 + Σ_w a_w² / c_w))``
    (the square root of a diagonal plus rank-one matrix). Window sums come from one fused gather;
    nothing of size (tokens × h) is materialised.

    Example:
        >>> m = np.array([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], np.float32)
        >>> ids, lengths, countable = np.array([0, 1, 2, 0]), np.array([3, 1]), np.array([True, True, False])
        >>> g = np.zeros((3, 3)); add_text_statistics(g, m, ids, lengths, countable, 1, 0.5)
        >>> np.allclose(g, text_gram(*text_rows(m, ids, lengths, countable, 1, 0.5)))
        True

    With ``lower=True`` only the lower triangle of ``gram`` is read and updated (the upper one is left
    as it was): a caller that adds many batches makes it symmetric once at the end with
    :func:`mirror_lower`, and gets the same matrix bit for bit as adding them with ``lower=False``
    (the products only ever touch the lower triangle; the mirror only copies it).
    """
    found = _text_terms(matrix, ids, lengths, countable, window, window_weight)
    if found is not None:
        _add_row_gram(gram, *found, lower=lower)


def text_factor_rows(
    ids: np.ndarray,
    lengths: np.ndarray,
    countable: np.ndarray,
    window: int | None = TEXT_WINDOW,
    window_weight: float = WINDOW_WEIGHT,
) -> int:
    """How many rows :func:`text_factor` gives for these texts (one per window of ``window`` countable
    tokens; without windows, one per text with a countable token), without computing them.

    Example:
        >>> text_factor_rows(np.array([0, 1, 2, 0]), np.array([3, 1]), np.array([True, True, False]), 1)
        3
    """
    _, lengths = _countable_tokens(ids, lengths, countable)
    if not window or window_weight <= 0:
        return int(np.count_nonzero(lengths))
    return int(np.sum(-(-lengths // int(window))))


def text_factor_gram(
    head: Sequence[np.ndarray],
    matrix: np.ndarray,
    ids: np.ndarray,
    lengths: np.ndarray,
    countable: np.ndarray,
    window: int | None = TEXT_WINDOW,
    window_weight: float = WINDOW_WEIGHT,
) -> np.ndarray:
    """``rows_gram(np.concatenate([*head, text_factor(matrix, ids, lengths, countable, …)]))``, bit for
    bit, without the factor rows or the concatenation: each :data:`_GRAM_BLOCK_ROWS`-row block of the
    stacked rows is written into one reused buffer (the rows of ``head`` first, then the texts' rows,
    built as :func:`text_factor` builds them) and multiplied as :func:`rows_gram` multiplies it. What
    counting does when an expert's rows outgrow the rows form (:class:`~ir3de.fitting.counting.TextCounter`).

    Example:
        >>> m = np.array([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], np.float32)
        >>> ids, lengths, countable = np.array([0, 1, 2, 0]), np.array([3, 1]), np.array([True, True, False])
        >>> head = [np.array([[0.5, 0.5, 1.0]])]
        >>> y = np.concatenate([*head, text_factor(m, ids, lengths, countable)])
        >>> np.array_equal(text_factor_gram(head, m, ids, lengths, countable), rows_gram(y))
        True
    """
    dim = matrix.shape[1] + 1
    found = _text_terms(matrix, ids, lengths, countable, window, window_weight)
    terms, bias = found if found is not None else ([], np.zeros(0, np.float64))
    rows = [np.asarray(h, np.float64) for h in head]
    head_rows = np.concatenate(rows) if rows else np.zeros((0, dim), np.float64)  # few: the rows form's
    first = head_rows.shape[0]  # the texts' rows come after the head's
    total = first + bias.size
    gram = np.zeros((dim, dim), np.float64)
    if total == 0:
        return gram
    buf = np.empty((min(total, _GRAM_BLOCK_ROWS), dim), np.float64)
    scratch = np.empty((min(max(bias.size, 1), _BUILD_BLOCK_ROWS), dim - 1), np.float64)
    for lo in range(0, total, _GRAM_BLOCK_ROWS):
        hi = min(total, lo + _GRAM_BLOCK_ROWS)
        block = buf[: hi - lo]
        if lo < first:
            block[: min(hi, first) - lo] = head_rows[lo : min(hi, first)]
        for start in range(max(lo, first), hi, _BUILD_BLOCK_ROWS):  # the texts' rows, as text_factor
            stop = min(hi, start + _BUILD_BLOCK_ROWS)
            _write_rows(block[start - lo : stop - lo], terms, bias, start - first, stop - first, scratch)
        _add_block_gram_lower(gram, block)
    mirror_lower(gram)
    return gram


def text_factor(
    matrix: np.ndarray,
    ids: np.ndarray,
    lengths: np.ndarray,
    countable: np.ndarray,
    window: int | None = TEXT_WINDOW,
    window_weight: float = WINDOW_WEIGHT,
) -> np.ndarray:
    """The rows ``Y`` ((n, h+1) float64) whose ``Yᵀ Y`` is what :func:`add_text_statistics` adds: one
    row per window (per text without windows). The rows form of small experts' statistics.

    Example:
        >>> m = np.array([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], np.float32)
        >>> ids, lengths, countable = np.array([0, 1, 2, 0]), np.array([3, 1]), np.array([True, True, False])
        >>> y = text_factor(m, ids, lengths, countable, 1, 0.5)
        >>> np.allclose(y.T @ y, text_gram(*text_rows(m, ids, lengths, countable, 1, 0.5)))
        True
    """
    found = _text_terms(matrix, ids, lengths, countable, window, window_weight)
    if found is None:
        return np.zeros((0, matrix.shape[1] + 1), np.float64)
    terms, bias = found
    out = np.empty((bias.size, matrix.shape[1] + 1), np.float64)
    scratch = np.empty((min(bias.size, _BUILD_BLOCK_ROWS), matrix.shape[1]), np.float64)
    for lo in range(0, bias.size, _BUILD_BLOCK_ROWS):  # blocks that stay in cache, as _add_row_gram
        hi = min(bias.size, lo + _BUILD_BLOCK_ROWS)
        _write_rows(out[lo:hi], terms, bias, lo, hi, scratch)
    return out


def _text_terms(
    matrix: np.ndarray,
    ids: np.ndarray,
    lengths: np.ndarray,
    countable: np.ndarray,
    window: int | None,
    window_weight: float,
) -> tuple[list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]], np.ndarray] | None:
    """The ``(terms, bias)`` of the factor rows of :func:`add_text_statistics` (``None``: no token counts)."""
    windowed = bool(window) and window_weight > 0
    parts = _text_parts(matrix, ids, lengths, countable, window if windowed else None)
    if parts is None:
        return None
    text_sums, sizes, window_sums, window_sizes, per_text = parts
    if not windowed:
        return [(text_sums, None, 1.0 / sizes)], np.ones(sizes.size)
    text_of = np.repeat(np.arange(sizes.size), per_text)  # the text of each window
    c = window_weight / per_text[text_of]
    a = window_sizes / sizes[text_of]
    beta = 1.0 / (1.0 + np.sqrt(1.0 + np.bincount(text_of, weights=a * a / c, minlength=sizes.size)))
    alpha = np.sqrt(c)
    gamma = beta[text_of] * a / alpha
    # the text term of window r is text_sums[text_of[r]] · f2[r], and f2 takes at most two values per
    # text (its full windows share one, its last window may differ): those products are made once
    # per text, and each window row then only gathers its own (the same float64 products, fewer passes)
    f2 = gamma / sizes[text_of]
    last = np.cumsum(per_text) - 1  # the last window of each text
    first = last - per_text + 1
    many = per_text > 1  # texts with a full window before their last one
    full = int(many.sum())
    scaled = np.empty(
        (full + sizes.size, text_sums.shape[1]), np.float64
    )  # written in place: no concatenation
    np.multiply(text_sums[many], f2[first[many], None], out=scaled[:full])
    np.multiply(text_sums, f2[last, None], out=scaled[full:])
    slot = np.cumsum(many) - 1  # each text's row among the full-window products
    which = slot[text_of]
    which[last] = full + np.arange(sizes.size)
    terms = [(window_sums, None, alpha / window_sizes), (scaled, which, None)]
    return terms, alpha + gamma


def balance_weights(token_masses: Sequence[int] | np.ndarray, balance: bool) -> np.ndarray:
    """Per-expert row weights.

    Without balancing every token occurrence weighs 1 (the paper). With balancing each expert's
    tokens are scaled so that every expert carries the same total mass, the mean of the experts'
    masses, so the overall scale (and thus the meaning of λ) stays that of the unweighted data.

    Example:
        >>> balance_weights([100, 300], balance=True).tolist()
        [2.0, 0.6666666666666666]
    """
    masses = np.asarray(token_masses, np.float64)
    if not balance:
        return np.ones_like(masses)
    if np.any(masses <= 0):
        raise ValueError("every expert needs at least one counted token to be balanced")
    weights: np.ndarray = masses.mean() / masses
    return weights


def balance_factors(token_masses: Sequence[int] | np.ndarray, balance: bool) -> tuple[float, np.ndarray]:
    """:func:`balance_weights` as a common factor ``s`` times per-expert factors ``v_d`` that depend on
    expert ``d`` alone (``w_d = s v_d`` up to rounding): with balancing ``s`` is the mean mass and
    ``v_d = 1 / m_d``, without it ``1`` and ``1``. A sum ``Σ_d v_d G_d`` then stays valid when an
    expert is added (only ``s`` changes), so it can be extended instead of recomputed.

    Example:
        >>> s, v = balance_factors([100, 300], balance=True)
        >>> s, np.round(s * v, 4).tolist()
        (200.0, [2.0, 0.6667])
    """
    masses = np.asarray(token_masses, np.float64)
    if not balance:
        return 1.0, np.ones_like(masses)
    if np.any(masses <= 0):
        raise ValueError("every expert needs at least one counted token to be balanced")
    return float(masses.mean()), 1.0 / masses


#: A numpy array or a torch tensor (on any device): expert_gram returns the kind it is given.
ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, "torch.Tensor")


def expert_gram(embedding_rows: ArrayOrTensor, counts: ArrayOrTensor) -> ArrayOrTensor:
    """One expert's unweighted Gram matrix ``Ẽ_dᵀ diag(c) Ẽ_d`` over its occurring tokens.

    Args:
        embedding_rows: ``E[token_ids]`` for the expert's occurring ids, shape (n, h), float64
            (a torch tensor on any device or a numpy array).
        counts: the ids' occurrence counts, shape (n,).

    Returns:
        The (h+1) × (h+1) matrix with the bias folded in as the last coordinate. Its last column is
        this expert's column of ``B`` (``Ẽᵀ c``), so the statistics of an expert are this one matrix.

    The same function serves numpy and torch inputs (it only uses ``@``, ``*`` and ``sum``).
    """
    x = embedding_rows
    c = counts
    scaled = x * c[:, None]
    gram = x.T @ scaled
    col = scaled.sum(0)
    total = c.sum()
    h = gram.shape[0]
    if isinstance(embedding_rows, np.ndarray):
        out = np.empty((h + 1, h + 1), np.float64)
    else:  # torch
        import torch

        out = torch.empty((h + 1, h + 1), dtype=torch.float64, device=gram.device)
    out[:h, :h] = gram
    out[:h, h] = col
    out[h, :h] = col
    out[h, h] = total
    return out


def combine_grams(grams: Sequence[np.ndarray], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Combine per-expert Gram matrices into the ridge matrices ``A`` and ``B``.

    ``A = Σ_d w_d G_d`` and ``B[:, d] = w_d G_d[:, -1]`` (the last column of ``G_d`` is ``Ẽᵀ N[:, d]``).
    Works for numpy arrays and torch tensors alike.
    """
    a = grams[0] * float(weights[0])
    for g, w in zip(grams[1:], weights[1:]):
        a = a + g * float(w)
    cols = [g[:, -1] * float(w) for g, w in zip(grams, weights)]
    if isinstance(a, np.ndarray):
        b = np.stack(cols, axis=1)
    else:
        import torch

        b = torch.stack(cols, dim=1)
    return a, b


def text_ridge_matrices(
    blocks: Sequence[ExpertCounts | None],
    weights: Sequence[float] | np.ndarray,
    *,
    scale: float = 1.0,
    running: TextGramSum | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``A = s Σ_d w_d G_d`` and ``B[:, d] = s w_d G_d[:, -1]`` (``s = scale``) of text statistics in
    either form.

    Gram-form experts add their matrix; rows-form experts add ``(√w_d Y_d)ᵀ (√w_d Y_d)``, stacked
    across experts into blocks of a few thousand rows, so a thousand small experts cost one pass over
    their rows (no (h+1)² matrix per expert). ``None`` blocks or zero weights add nothing (column 0).
    Equals :func:`ridge_statistics` of the Grams up to float64 rounding (tested).

    ``running``: a :class:`TextGramSum` that holds the sum of an earlier call; when that call's experts
    and weights are the first ones here (the same objects: e.g. before ``add_expert``), only the new
    experts are added — bit for bit the sum a fresh call gives — and ``running`` then holds this call's.

    Example:
        >>> a = ExpertCounts(np.array([0]), np.array([1]), 1, text_rows=np.array([[2.0, 1.0]]))
        >>> b = ExpertCounts(np.array([1]), np.array([1]), 1, np.array([[1.0, 1.0], [1.0, 1.0]]))
        >>> A, B = text_ridge_matrices([a, b], [1.0, 2.0])
        >>> A.tolist(), B.tolist()
        ([[6.0, 4.0], [4.0, 3.0]], [[2.0, 2.0], [1.0, 2.0]])
    """
    present = [b for b in blocks if b is not None and b.has_text_statistics]
    if not present:
        raise ValueError("no expert has text statistics")
    dim = present[0].text_dim
    assert dim is not None
    entries = [(block, float(weight)) for block, weight in zip(blocks, weights)]
    b = np.zeros((dim, len(blocks)), np.float64)
    for d, (block, w) in enumerate(entries):
        if block is None or not block.has_text_statistics or w == 0.0:
            continue
        if block.text_dim != dim:
            raise ValueError(f"text statistics of dimensions {block.text_dim} and {dim} cannot be added")
        if w < 0 or not np.isfinite(w):
            raise ValueError(f"row weights must be finite and >= 0, got {w!r}")
        b[:, d] = (scale * w) * block.text_column()
    total = running if running is not None else TextGramSum(dim)
    if total.dim != dim:
        total.reset(dim)
    total.extend(entries)
    a = total.total()
    if scale != 1.0:
        a *= scale
    return a, b


class TextGramSum:
    """The running sum ``Σ_d w_d G_d`` of experts' text statistics, in the order they were added.

    Rows-form experts are stacked (scaled by ``√w_d``) into blocks of at least a few thousand rows,
    each block added as one product; Gram-form experts add ``w_d G_d``. The sum after adding a
    sequence of experts is a function of that sequence only, so extending a sum by one expert equals,
    bit for bit, summing all of them afresh: :meth:`extend` reuses the longest matching prefix
    (same objects, same weights) of what it holds, which makes ``add_expert`` on a router of a
    thousand rows-form experts cost one expert, not a thousand.

    Example:
        >>> a = ExpertCounts(np.array([0]), np.array([1]), 1, text_rows=np.array([[2.0, 1.0]]))
        >>> s = TextGramSum(2); s.extend([(a, 1.0)]); s.total().tolist()
        [[4.0, 2.0], [2.0, 1.0]]
    """

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self._entries: list[tuple[ExpertCounts | None, float]] = []
        self._flushed = np.zeros((self.dim, self.dim), np.float64)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def reset(self, dim: int | None = None) -> None:
        """Hold nothing (the sum of no expert), of dimension ``dim`` when given."""
        self.dim = self.dim if dim is None else int(dim)
        self._entries, self._pending, self._pending_rows = [], [], 0
        self._flushed = np.zeros((self.dim, self.dim), np.float64)

    def extend(self, entries: Sequence[tuple[ExpertCounts | None, float]]) -> None:
        """Hold the sum of ``entries`` ((counts or ``None``, weight) per expert): from what is held when
        it is a prefix of ``entries``, else from zero."""
        held = self._entries
        prefix = len(held) <= len(entries) and all(
            a is b and wa == wb for (a, wa), (b, wb) in zip(held, entries)
        )
        if not prefix:
            self.reset()
        for block, w in entries[len(self._entries) :]:
            self._add(block, w)
            self._entries.append((block, w))

    def _add(self, block: ExpertCounts | None, w: float) -> None:
        if block is None or not block.has_text_statistics or w == 0.0:
            return
        block._require_statistics()
        if block.text_rows is not None:
            self._pending.append(block.text_rows * np.sqrt(w))
            self._pending_rows += block.text_rows.shape[0]
            if self._pending_rows >= _GRAM_BLOCK_ROWS:
                # only the lower triangle of the held sum is current: total() mirrors it, once
                _add_block_gram_lower(self._flushed, np.concatenate(self._pending))
                self._pending, self._pending_rows = [], 0
        else:
            assert block.stored_gram is not None
            self._flushed += block.stored_gram * w

    def total(self) -> np.ndarray:
        """The sum held (a new array; what is held is unchanged)."""
        out = np.array(self._flushed)
        if self._pending:
            _add_block_gram_lower(out, np.concatenate(self._pending))
        mirror_lower(out)
        return out


# ---------------------------------------------------------------------------------------------- traffic


def traffic_weights(
    corpus_masses: Sequence[float] | np.ndarray,
    corpus_weights: Sequence[float] | np.ndarray,
    traffic_masses: Sequence[float] | np.ndarray,
    *,
    weight: float,
    policy: str,
) -> np.ndarray:
    """Per-expert row weights ``u_d`` of learned traffic (labelled served prompts).

    Traffic is its own additive block per expert (a text Gram / token histogram like the corpus's,
    counted the same way); it enters the ridge matrices as ``A += u_d T_d`` and
    ``B[:, d] += u_d T_d[:, -1]``, next to the corpus's ``w_d G_d``. Masses are in the level's units
    (scored texts at text level, tokens at token level); ``corpus_weights`` are the corpus's ``w_d``
    (:func:`balance_weights`), so traffic follows the corpus's balancing.

    Policies:
        ``"per_prompt"``: one traffic row weighs ``weight`` corpus rows of its expert:
            ``u_d = weight · w_d``. The traffic's pull grows with the number of prompts learned.
        ``"share"``: an expert's whole traffic weighs ``weight`` × its (weighted) corpus mass,
            however many prompts it holds: ``u_d = weight · w_d · m_d / t_d``.

    Experts without traffic (``t_d = 0``) get ``u_d = 0``; ``weight = 0`` ignores all traffic.
    (``"balanced"`` also changes the corpus weights: see :func:`weights_with_traffic`; here it is
    ``"per_prompt"``.)

    Example:
        >>> traffic_weights([100, 300], [2.0, 2 / 3], [10, 0], weight=30.0, policy="per_prompt").tolist()
        [60.0, 0.0]
        >>> traffic_weights([100, 300], [2.0, 2 / 3], [10, 0], weight=0.5, policy="share").tolist()
        [10.0, 0.0]
    """
    if policy not in TRAFFIC_POLICIES:
        raise ValueError(f"unknown traffic policy {policy!r}; choose one of {TRAFFIC_POLICIES}")
    weight = float(weight)
    if not np.isfinite(weight) or weight < 0:
        raise ValueError(f"traffic weight must be a finite number >= 0, got {weight!r}")
    masses = np.asarray(corpus_masses, np.float64)
    w = np.asarray(corpus_weights, np.float64)
    t = np.asarray(traffic_masses, np.float64)
    if not masses.shape == w.shape == t.shape:
        raise ValueError(f"masses {masses.shape}, weights {w.shape} and traffic {t.shape} must align")
    has = t > 0
    out = np.zeros_like(t)
    if policy in ("per_prompt", "balanced"):
        out[has] = weight * w[has]
    else:
        out[has] = weight * w[has] * masses[has] / t[has]
    return out


def weights_with_traffic(
    corpus_masses: Sequence[float] | np.ndarray,
    traffic_masses: Sequence[float] | np.ndarray,
    *,
    balance: bool,
    weight: float,
    policy: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Row weights of the corpus (``w_d``) and of the traffic (``u_d``) of every expert.

    ``"per_prompt"`` and ``"share"`` leave the corpus weights as :func:`balance_weights` sets them
    and weigh traffic on top (:func:`traffic_weights`). ``"balanced"`` weighs each prompt as
    ``weight`` corpus rows and balances the *sum*: with ``balance``, every expert's corpus + traffic
    carries the same mass, ``w_d = mean_e(m_e + weight·t_e) / (m_d + weight·t_d)`` and
    ``u_d = weight · w_d`` (what adding the prompts as ``weight`` copies of corpus texts and then
    balancing gives); without ``balance`` it is ``"per_prompt"``.

    Example:
        >>> w, u = weights_with_traffic([100, 300], [10, 0], balance=True, weight=10.0, policy="balanced")
        >>> w.tolist(), u.tolist()
        ([1.25, 0.8333333333333334], [12.5, 0.0])
    """
    masses = np.asarray(corpus_masses, np.float64)
    traffic = np.asarray(traffic_masses, np.float64)
    w = balance_weights(_balanced_masses(masses, traffic, balance, weight, policy), balance)
    return w, traffic_weights(masses, w, traffic, weight=weight, policy=policy)


def _balanced_masses(
    masses: np.ndarray, traffic: np.ndarray, balance: bool, weight: float, policy: str
) -> np.ndarray:
    """The masses balancing evens out: the corpus's, plus ``weight`` × the traffic's under ``"balanced"``."""
    if policy == "balanced" and balance:
        if not np.isfinite(float(weight)) or float(weight) < 0:
            raise ValueError(f"traffic weight must be a finite number >= 0, got {weight!r}")
        return masses + float(weight) * traffic
    return masses


def corpus_factors(
    corpus_masses: Sequence[float] | np.ndarray,
    traffic_masses: Sequence[float] | np.ndarray,
    *,
    balance: bool,
    weight: float,
    policy: str,
) -> tuple[float, np.ndarray]:
    """The corpus weights of :func:`weights_with_traffic` as :func:`balance_factors`: a common factor and
    per-expert factors (equal, up to rounding, to ``weights_with_traffic(...)[0]`` as their product).
    Without traffic (or with ``weight`` 0) they are exactly ``balance_factors(corpus_masses, balance)``.

    Example:
        >>> s, v = corpus_factors([100, 300], [10, 0], balance=True, weight=10.0, policy="balanced")
        >>> np.round(s * v, 4).tolist()
        [1.25, 0.8333]
    """
    masses = np.asarray(corpus_masses, np.float64)
    traffic = np.asarray(traffic_masses, np.float64)
    return balance_factors(_balanced_masses(masses, traffic, balance, weight, policy), balance)


@dataclass(frozen=True)
class TrafficSummary:
    """What one expert has learned from traffic, and how much it weighs.

    Attributes:
        num_prompts: prompts learned (including ones with no countable token).
        num_tokens: their countable tokens.
        row_weight: the weight ``u_d`` each traffic row gets in the fit (:func:`traffic_weights`;
            a corpus row of the same expert weighs ``corpus_row_weight``).
        corpus_row_weight: the corpus's row weight ``w_d`` (balancing).
        share: the traffic's weighted mass as a share of the corpus's weighted mass (``u_d t_d / w_d m_d``).

    Example:
        >>> TrafficSummary(10, 120, 60.0, 2.0, 3.0).to_dict()["share"]
        3.0
    """

    num_prompts: int
    num_tokens: int
    row_weight: float
    corpus_row_weight: float
    share: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "num_prompts": self.num_prompts,
            "num_tokens": self.num_tokens,
            "row_weight": self.row_weight,
            "corpus_row_weight": self.corpus_row_weight,
            "share": self.share,
        }
